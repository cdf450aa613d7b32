//! The `sock_recv` and `sock_sendall` coroutines' system calls and waits, in Rust.
//!
//! `ferroloop._net` keeps the coroutines (asyncio's API: `await loop.sock_recv(...)`,
//! checks, `_ensure_fd_no_transport`) and calls down here twice at most:
//! 1. `try_recv` / `try_send_all`: the system call at once, with no Python exception when
//!    it would block (`None` / the number of bytes sent);
//! 2. only if it would block, `SockWait::start` registers a [`SockWait`] as the fd's
//!    reader (or writer) and returns the future the coroutine awaits. When the fd is
//!    ready, [`SockWait::on_ready`] retries the call in Rust, and once it completes (or
//!    fails) unregisters itself and resolves the future.
//!
//! Invariants: a `SockWait` is registered with the driver (as `FdOwner::Sock`) from
//! `start` until its future is resolved or the coroutine stops waiting (cancelled:
//! `SockWait::stop_waiting`), so no fd stays registered for a wait nobody awaits, and
//! readiness never runs the call for a future that is already done (a cancelled
//! `sock_recv` consumes no bytes). Unregistering removes only this wait's registration:
//! another owner the fd got meanwhile (`add_reader` replaced the wait, as in asyncio)
//! is left alone.

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

use ferroloop_core::net;
use ferroloop_core::Side;
use parking_lot::Mutex;
use pyo3::exceptions::PyValueError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::PyBytes;
use pyo3::PyTraverseError;

use crate::errors::os_error;
use crate::event_loop::LoopCore;
use crate::transports::buffers;

/// What a wait retries when its fd is ready.
enum Op {
    /// `sock_recv(sock, n)`: one `recv` of at most `n` bytes.
    Recv { n: usize },
    /// `sock_sendall(sock, data)`: `send` until all of `data` is taken (`sent` so far).
    SendAll { data: Py<PyBytes>, sent: Mutex<usize> },
}

/// A `sock_recv`/`sock_sendall` waiting for its socket (see the module docs).
#[pyclass(frozen, module = "ferroloop._ferroloop")]
pub struct SockWait {
    fd: RawFd,
    op: Op,
    future: Py<PyAny>,
}

/// The most a `sock_recv` reads at once: the loop thread's read buffer (asyncio's 256 KiB
/// read size). A stream may always return fewer bytes than asked; no datagram a Linux
/// socket buffer holds by default is larger.
fn recv_len(n: isize) -> PyResult<usize> {
    if n < 0 {
        return Err(PyValueError::new_err("negative buffersize in recv"));
    }
    Ok(n as usize)
}

/// One `recv` of at most `n` bytes from `fd`: the bytes (`b""` at end of stream), or
/// `None` if it would block.
pub fn try_recv(py: Python<'_>, fd: RawFd, n: isize) -> PyResult<Option<Py<PyBytes>>> {
    let n = recv_len(n)?;
    if n == 0 {
        return Ok(Some(PyBytes::new(py, b"").unbind()));
    }
    match buffers::read_up_to(py, fd, n, net::recv_uninit) {
        Ok(bytes) => Ok(Some(bytes.unbind())),
        Err(e) if net::would_block(&e) => Ok(None),
        Err(e) => Err(os_error(e)),
    }
}

/// Sends `data[sent..]` until all of it is taken or the kernel would block; the new
/// number of bytes sent.
fn send_from(fd: RawFd, data: &[u8], mut sent: usize) -> io::Result<usize> {
    while sent < data.len() {
        match net::send_vectored(fd, &[IoSlice::new(&data[sent..])]) {
            Ok(n) => sent += n,
            Err(e) if net::would_block(&e) => break,
            Err(e) => return Err(e),
        }
    }
    Ok(sent)
}

/// `sock_sendall`'s first attempt: the number of bytes of `data` the kernel took now.
pub fn try_send_all(fd: RawFd, data: &Bound<'_, PyBytes>) -> PyResult<usize> {
    send_from(fd, data.as_bytes(), 0).map_err(os_error)
}

impl SockWait {
    /// Registers a wait for `sock_recv(fd, n)` (`data` None) or for the rest of
    /// `sock_sendall(fd, data)` after `sent` bytes; returns the future it resolves.
    pub fn start(
        event_loop: &Bound<'_, LoopCore>,
        fd: RawFd,
        n: isize,
        data: Option<Py<PyBytes>>,
        sent: usize,
    ) -> PyResult<Py<PyAny>> {
        let py = event_loop.py();
        let (op, side) = match data {
            None => (Op::Recv { n: recv_len(n)? }, Side::Read),
            Some(data) => (
                Op::SendAll {
                    data,
                    sent: Mutex::new(sent),
                },
                Side::Write,
            ),
        };
        let future = event_loop.call_method0(intern!(py, "create_future"))?.unbind();
        let wait = Py::new(
            py,
            SockWait {
                fd,
                op,
                future: future.clone_ref(py),
            },
        )?;
        event_loop.get().watch_sock(py, fd, side, wait)?;
        Ok(future)
    }

    fn side(&self) -> Side {
        match self.op {
            Op::Recv { .. } => Side::Read,
            Op::SendAll { .. } => Side::Write,
        }
    }

    /// The fd is ready: retry the call; once it completed or failed, unregister and
    /// resolve the future.
    pub fn on_ready(slf: &Bound<'_, Self>, event_loop: &Bound<'_, LoopCore>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let future = this.future.bind(py);
        if future.call_method0(intern!(py, "done"))?.is_truthy()? {
            // Cancelled while the readiness was queued: the coroutine unregisters us.
            Self::unwatch(slf, event_loop);
            return Ok(());
        }
        let outcome: Result<Py<PyAny>, io::Error> = match &this.op {
            Op::Recv { n } => buffers::read_up_to(py, this.fd, *n, net::recv_uninit)
                .map(|bytes| bytes.into_any().unbind()),
            Op::SendAll { data, sent } => {
                let mut sent = sent.lock();
                let data = data.bind(py).as_bytes();
                match send_from(this.fd, data, *sent) {
                    Ok(now) if now < data.len() => {
                        *sent = now;
                        return Ok(()); // the rest when the socket is writable again
                    }
                    Ok(_) => Ok(py.None()),
                    Err(e) => Err(e),
                }
            }
        };
        let resolved = match outcome {
            Err(e) if net::would_block(&e) => return Ok(()), // spurious readiness
            Ok(result) => {
                Self::unwatch(slf, event_loop);
                future.call_method1(intern!(py, "set_result"), (result,))
            }
            Err(e) => {
                Self::unwatch(slf, event_loop);
                future.call_method1(intern!(py, "set_exception"), (os_error(e),))
            }
        };
        match resolved {
            Ok(_) => Ok(()),
            Err(err) => LoopCore::report_error(
                event_loop,
                "Error while completing a sock_recv/sock_sendall",
                err,
            ),
        }
    }

    /// Unregisters this wait (if it is still the fd's owner on its side).
    fn unwatch(slf: &Bound<'_, Self>, event_loop: &Bound<'_, LoopCore>) {
        let this = slf.get();
        let ptr = slf.as_ptr();
        event_loop
            .get()
            .unwatch_sock_if(this.fd, this.side(), |wait| std::ptr::eq(wait.as_ptr(), ptr));
    }

    /// The coroutine stopped waiting for `future` (it was cancelled, or its task was):
    /// unregister its wait on `fd` if it is still registered.
    pub fn stop_waiting(
        event_loop: &Bound<'_, LoopCore>,
        fd: RawFd,
        writer: bool,
        future: &Bound<'_, PyAny>,
    ) {
        let side = if writer { Side::Write } else { Side::Read };
        event_loop
            .get()
            .unwatch_sock_if(fd, side, |wait| wait.get().future.is(future));
    }

    /// What user code sees for this wait (exception contexts, blocking reports): its
    /// future.
    pub fn object(&self, py: Python<'_>) -> Py<PyAny> {
        self.future.clone_ref(py)
    }

    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.future)?;
        if let Op::SendAll { data, .. } = &self.op {
            visit.call(data)?;
        }
        Ok(())
    }
}

#[pymethods]
impl SockWait {
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.traverse(&visit)
    }

    fn __repr__(&self) -> String {
        let what = match self.op {
            Op::Recv { n } => format!("sock_recv({n})"),
            Op::SendAll { .. } => "sock_sendall".to_owned(),
        };
        format!("<SockWait {what} on fd {}>", self.fd)
    }
}
