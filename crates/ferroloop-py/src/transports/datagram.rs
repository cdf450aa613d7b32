//! `DatagramTransport`: asyncio's datagram transport (UDP over IPv4/IPv6, Unix datagram
//! sockets), in Rust.
//!
//! Same life as asyncio's selector datagram transport: `connection_made`, then one
//! datagram per readable event into `datagram_received(data, addr)`; `sendto` sends at
//! once when nothing is queued and queues the datagram (a `bytes` copy) when the socket
//! would block; queued datagrams go out in order when the socket is writable. An `OSError`
//! while sending or receiving goes to `protocol.error_received(exc)` and the transport
//! stays open (ICMP errors are normal for UDP); anything else is fatal. Flow control,
//! close and abort are the shared steps of `super::core`.
//!
//! The socket calls go through the Python socket object's C methods (`recvfrom`, `send`,
//! `sendto`), so addresses have exactly the form and the resolution rules of Python's
//! `socket` module for every family; no Python code of ours runs per datagram.
//!
//! Invariants: those of `super::core`; `size` is the sum over queued datagrams of their
//! length plus `header_size`.

use std::collections::VecDeque;

use ferroloop_core::Side;
use parking_lot::Mutex;
use pyo3::exceptions::{PyBlockingIOError, PyInterruptedError, PyOSError, PyValueError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use pyo3::PyTraverseError;

use super::buffers::as_bytes;
use super::core::{self, Common, Pending, State};
use super::macros::native_transport;
use crate::event_loop::LoopCore;
use crate::py;

/// Largest datagram read at once (asyncio's `max_size`, 256 KiB).
const MAX_DATAGRAM: usize = 256 * 1024;

/// Datagrams waiting for the socket to become writable, in order, with their address.
pub struct DatagramQueue {
    queue: VecDeque<(Py<PyBytes>, Py<PyAny>)>,
    size: usize,
    /// Added to each datagram's length in `size` (8 on Python 3.13+, as asyncio counts).
    header_size: usize,
}

impl Pending for DatagramQueue {
    fn size(&self) -> usize {
        self.size
    }

    fn clear(&mut self) {
        self.queue.clear();
        self.size = 0;
    }
}

/// How one socket call ended, in asyncio's terms.
enum SendOutcome {
    Sent,
    WouldBlock,
    /// An `OSError`: for `protocol.error_received`.
    OsError(PyErr),
    /// Anything else: fatal.
    Fatal(PyErr),
}

/// A UDP or Unix datagram transport.
#[pyclass(frozen, weakref, module = "ferroloop._ferroloop")]
pub struct DatagramTransport {
    common: Common,
    /// The remote address given to `create_datagram_endpoint(remote_addr=...)`, if any.
    address: Option<Py<PyAny>>,
    /// The socket is connected (it has a peer name): send with `send`, not `sendto`.
    connected: bool,
    /// Empty datagrams are sent (Python 3.13+), not dropped.
    send_empty: bool,
    state: Mutex<State<DatagramQueue>>,
}

native_transport! { DatagramTransport, DatagramQueue, Datagram, {
        fn traverse_kind(&self, kind: &DatagramQueue, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
            if let Some(address) = &self.address {
                visit.call(address)?;
            }
            for (data, addr) in &kind.queue {
                visit.call(data)?;
                visit.call(addr)?;
            }
            Ok(())
        }
    };
    /// Wraps the non-blocking datagram socket `sock` (fd `fd`); `ferroloop._net` builds
    /// it, binds its face and schedules `connection_made`.
    #[new]
    #[pyo3(signature = (event_loop, sock, fd, protocol, extra, address, connected, send_empty, header_size))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        event_loop: Py<LoopCore>,
        sock: Py<PyAny>,
        fd: std::os::fd::RawFd,
        protocol: Py<PyAny>,
        extra: Py<PyDict>,
        address: Option<Py<PyAny>>,
        connected: bool,
        send_empty: bool,
        header_size: usize,
    ) -> Self {
        let queue = DatagramQueue {
            queue: VecDeque::new(),
            size: 0,
            header_size,
        };
        DatagramTransport {
            common: Common::new(event_loop, sock, fd, extra, None, false),
            address,
            connected,
            send_empty,
            state: Mutex::new(State::new(protocol, queue)),
        }
    }

    #[pyo3(signature = (data, addr=None))]
    fn sendto(
        slf: &Bound<'_, Self>,
        data: &Bound<'_, PyAny>,
        addr: Option<Bound<'_, PyAny>>,
    ) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let data = as_bytes(data)?;
        if data.as_bytes().is_empty() && !this.send_empty {
            return Ok(());
        }
        let mut addr = addr.unwrap_or_else(|| py.None().into_bound(py));
        if let Some(address) = &this.address {
            let address = address.bind(py);
            if !addr.is_none() && addr.ne(address)? {
                return Err(PyValueError::new_err(format!(
                    "Invalid address: must be None or {}",
                    address.str()?
                )));
            }
            addr = address.clone();
        }
        let queue_empty = {
            let state = this.state.lock();
            if state.lost {
                None
            } else {
                Some(state.kind.queue.is_empty())
            }
        };
        match queue_empty {
            None => return core::note_write_after_lost(this, py),
            Some(false) => {}
            Some(true) => match this.send(py, &data, &addr) {
                SendOutcome::Sent => return Ok(()),
                SendOutcome::WouldBlock => core::watch(slf, Side::Write)?,
                SendOutcome::OsError(err) => {
                    // As in asyncio, a failing error_received() raises out of sendto().
                    let protocol = core::protocol(this, py);
                    protocol
                        .bind(py)
                        .call_method1(intern!(py, "error_received"), (err.into_value(py),))?;
                    return Ok(());
                }
                SendOutcome::Fatal(err) => {
                    if py::is_exit_exception(py, &err) {
                        return Err(err);
                    }
                    return core::fatal_error(slf, err, "Fatal write error on datagram transport");
                }
            },
        }
        {
            let mut state = this.state.lock();
            let queued = &mut state.kind;
            queued.size += data.as_bytes().len() + queued.header_size;
            queued.queue.push_back((data.unbind(), addr.unbind()));
        }
        core::maybe_pause_protocol(slf)
    }

}

impl DatagramTransport {
    /// The face's methods besides the base ones (see `core::bind_face`).
    const FACE_METHODS: &'static [&'static [&'static str]] = &[
        core::READ_FACE_METHODS,
        core::WRITE_FACE_METHODS,
        &["sendto"],
    ];
}

impl DatagramTransport {
    /// Handles readiness on `side` (called by the loop).
    pub fn on_ready(slf: &Bound<'_, Self>, side: Side) -> PyResult<()> {
        match side {
            Side::Read => Self::read_ready(slf),
            Side::Write => Self::write_ready(slf),
        }
    }

    /// One datagram into `datagram_received(data, addr)`.
    fn read_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let protocol = {
            let state = this.state.lock();
            if state.closing || !state.reading {
                return Ok(()); // stale readiness from before a pause or close
            }
            state.protocol.clone_ref(py)
        };
        let received = this
            .common
            .sock
            .bind(py)
            .call_method1(intern!(py, "recvfrom"), (MAX_DATAGRAM,));
        match received {
            Ok(pair) => {
                let (data, addr): (Bound<'_, PyAny>, Bound<'_, PyAny>) = pair.extract()?;
                let called = protocol
                    .bind(py)
                    .call_method1(intern!(py, "datagram_received"), (data, addr));
                match called {
                    Ok(_) => Ok(()),
                    Err(err) => core::report_callback_error(
                        slf,
                        err,
                        "Exception in protocol.datagram_received()",
                    ),
                }
            }
            Err(err) if is_would_block(py, &err) => Ok(()),
            Err(err) if err.is_instance_of::<PyOSError>(py) => Self::error_received(slf, err),
            Err(err) if py::is_exit_exception(py, &err) => Err(err),
            Err(err) => core::fatal_error(slf, err, "Fatal read error on datagram transport"),
        }
    }

    /// Sends queued datagrams in order until the socket would block.
    fn write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        loop {
            let next = {
                let mut state = this.state.lock();
                if state.lost {
                    return Ok(());
                }
                let queued = &mut state.kind;
                let next = queued.queue.pop_front();
                if let Some((data, _)) = &next {
                    queued.size -= data.bind(py).as_bytes().len() + queued.header_size;
                }
                next
            };
            let Some((data, addr)) = next else { break };
            match this.send(py, data.bind(py), addr.bind(py)) {
                SendOutcome::Sent => {}
                SendOutcome::WouldBlock => {
                    let mut state = this.state.lock();
                    let queued = &mut state.kind;
                    queued.size += data.bind(py).as_bytes().len() + queued.header_size;
                    queued.queue.push_front((data, addr));
                    break;
                }
                SendOutcome::OsError(err) => return Self::error_received(slf, err),
                SendOutcome::Fatal(err) => {
                    if py::is_exit_exception(py, &err) {
                        return Err(err);
                    }
                    return core::fatal_error(slf, err, "Fatal write error on datagram transport");
                }
            }
        }
        core::maybe_resume_protocol(slf)?;
        let (drained, closing) = {
            let state = this.state.lock();
            (state.kind.queue.is_empty() && !state.lost, state.closing)
        };
        if drained {
            core::unwatch(this, py, Side::Write);
            if closing {
                core::schedule_connection_lost(slf, None)?;
            }
        }
        Ok(())
    }

    /// One `send` (connected socket) or `sendto(data, addr)`.
    fn send(
        &self,
        py: Python<'_>,
        data: &Bound<'_, PyBytes>,
        addr: &Bound<'_, PyAny>,
    ) -> SendOutcome {
        let sock = self.common.sock.bind(py);
        let result = if self.connected {
            sock.call_method1(intern!(py, "send"), (data,))
        } else {
            sock.call_method1(intern!(py, "sendto"), (data, addr))
        };
        match result {
            Ok(_) => SendOutcome::Sent,
            Err(err) if is_would_block(py, &err) => SendOutcome::WouldBlock,
            Err(err) if err.is_instance_of::<PyOSError>(py) => SendOutcome::OsError(err),
            Err(err) => SendOutcome::Fatal(err),
        }
    }

    /// `protocol.error_received(exc)`; its own failure goes to the exception handler.
    fn error_received(slf: &Bound<'_, Self>, err: PyErr) -> PyResult<()> {
        let py = slf.py();
        let protocol = core::protocol(slf.get(), py);
        match protocol
            .bind(py)
            .call_method1(intern!(py, "error_received"), (err.into_value(py),))
        {
            Ok(_) => Ok(()),
            Err(err) => {
                core::report_callback_error(slf, err, "Exception in protocol.error_received()")
            }
        }
    }
}

/// `BlockingIOError` or `InterruptedError`: try again on the next readiness.
fn is_would_block(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<PyBlockingIOError>(py) || err.is_instance_of::<PyInterruptedError>(py)
}
