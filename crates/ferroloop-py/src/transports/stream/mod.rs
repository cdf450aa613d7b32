//! `StreamTransport`: asyncio's socket transport (TCP, Unix streams), in Rust.
//!
//! Life of a transport (the same steps and order as asyncio's selector transport):
//! 1. `ferroloop._net` creates it for a connected non-blocking socket, binds its face and
//!    schedules `protocol.connection_made(face)`, then `_start_reading`, then the waiter.
//! 2. While reading, the loop calls [`StreamTransport::on_ready`] when the socket is
//!    readable: one `recv` per iteration into `data_received(bytes)` (or into the buffer
//!    of a `BufferedProtocol`); end of stream calls `eof_received()` and closes unless it
//!    returns true.
//! 3. `write` sends at once when nothing is buffered; the rest waits in the write buffer
//!    and is flushed when the socket is writable. Above the high-water mark the protocol
//!    gets `pause_writing()`, at or below the low-water mark `resume_writing()`.
//! 4. `close` stops reading and, once the buffer is flushed, schedules
//!    `connection_lost(None)`; `abort` and fatal errors drop the buffer and schedule
//!    `connection_lost(exc)` at once (the shared steps of `super::core`).
//!
//! Invariants: those of `super::core`; besides, once `eof_requested` the socket's write
//! side is shut down as soon as the buffer is empty, and `write` refuses while a sendfile
//! waits on `empty_waiter`.

use std::io;

use ferroloop_core::net::{self, WriteBuffer};
use ferroloop_core::Side;
use parking_lot::Mutex;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::prelude::*;

mod methods;

use super::buffers;
use super::core::{self, Common, Pending, State};
use super::tls;
use crate::errors::os_error;
use crate::py;

/// How the protocol takes what the transport reads.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Reader {
    /// `data_received(bytes)`.
    Bytes,
    /// An `asyncio.BufferedProtocol`: `get_buffer`/`buffer_updated`.
    Buffered,
    /// A `ferroloop._tls.TLS_PROTOCOL` (a `BufferedProtocol`): the records go to the
    /// pump's Rust path (`transports::tls`).
    Tls,
}

impl Reader {
    fn of(protocol: &Bound<'_, PyAny>) -> PyResult<Self> {
        let py = protocol.py();
        Ok(if tls::is_tls_protocol(protocol)? {
            Reader::Tls
        } else if protocol.is_instance(py::buffered_protocol_type(py)?)? {
            Reader::Buffered
        } else {
            Reader::Bytes
        })
    }
}

/// What only stream transports keep under the lock.
pub struct StreamKind {
    reader: Reader,
    eof_requested: bool,
    buffer: WriteBuffer,
    /// The future `loop.sendfile` waits on until the buffer is flushed (asyncio's
    /// `_empty_waiter`); while set, `write` refuses.
    empty_waiter: Option<Py<PyAny>>,
}

impl Pending for StreamKind {
    fn size(&self) -> usize {
        self.buffer.len()
    }

    fn clear(&mut self) {
        self.buffer.clear();
    }
}

/// A TCP or Unix stream socket transport.
#[pyclass(frozen, weakref, module = "ferroloop._ferroloop")]
pub struct StreamTransport {
    common: Common,
    state: Mutex<State<StreamKind>>,
}

/// Why a read or write step failed: an OS error, a Python exception, or a protocol
/// callback's exception with the message asyncio reports it under.
enum Failure {
    Os(io::Error),
    Py(PyErr),
    Protocol(PyErr, &'static str),
}

impl From<PyErr> for Failure {
    fn from(err: PyErr) -> Self {
        Failure::Py(err)
    }
}

impl StreamTransport {
    /// The face's methods besides the base ones (see `core::bind_face`): calling them calls
    /// Rust directly, with no Python frame.
    const FACE_METHODS: &'static [&'static [&'static str]] = &[
        core::READ_FACE_METHODS,
        core::WRITE_FACE_METHODS,
        &[
            "write",
            "writelines",
            "write_eof",
            "can_write_eof",
            "_make_empty_waiter",
            "_reset_empty_waiter",
        ],
    ];
}

impl StreamTransport {
    /// Handles readiness on `side` (called by the loop).
    pub fn on_ready(slf: &Bound<'_, Self>, side: Side) -> PyResult<()> {
        let outcome = match side {
            Side::Read => Self::read_ready(slf),
            Side::Write => Self::write_ready(slf),
        };
        let (err, message) = match outcome {
            Ok(()) => return Ok(()),
            Err(Failure::Os(err)) => {
                let message = match side {
                    Side::Read => "Fatal read error on socket transport",
                    Side::Write => "Fatal write error on socket transport",
                };
                (os_error(err), message)
            }
            Err(Failure::Protocol(err, message)) => (err, message),
            Err(Failure::Py(err)) => {
                let message = match side {
                    Side::Read if slf.get().state.lock().kind.reader != Reader::Bytes => {
                        "Fatal error: protocol.buffer_updated() call failed."
                    }
                    Side::Read => "Fatal error: protocol.data_received() call failed.",
                    Side::Write => "Fatal error on socket transport",
                };
                (err, message)
            }
        };
        if py::is_exit_exception(slf.py(), &err) {
            return Err(err);
        }
        core::fatal_error(slf, err, message)
    }

    fn read_ready(slf: &Bound<'_, Self>) -> Result<(), Failure> {
        let py = slf.py();
        let this = slf.get();
        let (protocol, reader) = {
            let state = this.state.lock();
            if state.closing || !state.reading {
                return Ok(()); // stale readiness from before a pause or close
            }
            (state.protocol.clone_ref(py), state.kind.reader)
        };
        let protocol = protocol.bind(py);
        if reader == Reader::Buffered {
            return Self::read_into_protocol_buffer(slf, protocol);
        }
        match buffers::read_bytes(py, this.common.fd, net::recv_uninit, &this.common.last_read) {
            Ok(Some(bytes)) if reader == Reader::Tls => {
                tls::records_received(protocol, bytes)?;
                Ok(())
            }
            Ok(Some(bytes)) => {
                protocol.call_method1(intern!(py, "data_received"), (bytes,))?;
                Ok(())
            }
            Ok(None) => Self::eof(slf),
            Err(e) if net::would_block(&e) => Ok(()),
            Err(e) => Err(Failure::Os(e)),
        }
    }

    /// `BufferedProtocol`: `get_buffer(-1)`, one `recv` into it, `buffer_updated(n)`.
    fn read_into_protocol_buffer(
        slf: &Bound<'_, Self>,
        protocol: &Bound<'_, PyAny>,
    ) -> Result<(), Failure> {
        const GET_BUFFER_FAILED: &str = "Fatal error: protocol.get_buffer() call failed.";
        let py = slf.py();
        let failed = |err| Failure::Protocol(err, GET_BUFFER_FAILED);
        let target = protocol
            .call_method1(intern!(py, "get_buffer"), (-1,))
            .map_err(failed)?;
        let buffer = PyBuffer::<u8>::get(&target).map_err(failed)?;
        if buffer.len_bytes() == 0 {
            let err = PyRuntimeError::new_err("get_buffer() returned an empty buffer");
            return Err(failed(err));
        }
        if buffer.readonly() {
            let err = PyTypeError::new_err("recv_into() argument must be writable");
            return Err(Failure::Protocol(
                err,
                "Fatal read error on socket transport",
            ));
        }
        // SAFETY: the exporter keeps the memory alive and writable while `buffer` (a held
        // Py_buffer) lives; no Python code runs during the recv.
        let slice = unsafe {
            std::slice::from_raw_parts_mut(buffer.buf_ptr().cast::<u8>(), buffer.len_bytes())
        };
        let n = match net::recv(slf.get().common.fd, slice) {
            Ok(n) => n,
            Err(e) if net::would_block(&e) => return Ok(()),
            Err(e) => return Err(Failure::Os(e)),
        };
        drop(buffer);
        if n == 0 {
            return Self::eof(slf);
        }
        protocol.call_method1(intern!(py, "buffer_updated"), (n,))?;
        Ok(())
    }

    /// End of stream: `eof_received()`; close unless it asks to keep the transport open.
    fn eof(slf: &Bound<'_, Self>) -> Result<(), Failure> {
        let py = slf.py();
        let this = slf.get();
        let protocol = core::protocol(this, py);
        let keep_open = match protocol.bind(py).call_method0(intern!(py, "eof_received")) {
            Ok(v) => v.is_truthy()?,
            Err(err) => {
                return Err(Failure::Protocol(
                    err,
                    "Fatal error: protocol.eof_received() call failed.",
                ))
            }
        };
        if keep_open {
            // Nothing more will arrive: stop watching (as asyncio, without marking the
            // transport paused), but let the protocol write on.
            core::unwatch(this, py, Side::Read);
        } else {
            core::close(slf)?;
        }
        Ok(())
    }

    fn write_ready(slf: &Bound<'_, Self>) -> Result<(), Failure> {
        let py = slf.py();
        let this = slf.get();
        {
            let mut state = this.state.lock();
            if state.lost {
                return Ok(());
            }
            state
                .kind
                .buffer
                .flush_to(this.common.fd)
                .map_err(Failure::Os)?;
        }
        core::maybe_resume_protocol(slf)?;
        let (drained, closing, eof) = {
            let state = this.state.lock();
            let drained = state.kind.buffer.is_empty() && !state.lost;
            (drained, state.closing, state.kind.eof_requested)
        };
        if drained {
            core::unwatch(this, py, Side::Write);
            Self::resolve_empty_waiter(slf, None)?;
            if closing {
                core::schedule_connection_lost(slf, None)?;
            } else if eof {
                net::shutdown_write(this.common.fd).map_err(Failure::Os)?;
            }
        }
        Ok(())
    }

    /// Completes the sendfile waiter, if any: with `None` once the buffer is flushed, or
    /// with `exc` when the connection is lost.
    fn resolve_empty_waiter(slf: &Bound<'_, Self>, exc: Option<PyErr>) -> PyResult<()> {
        let py = slf.py();
        let waiter = slf
            .get()
            .state
            .lock()
            .kind
            .empty_waiter
            .as_ref()
            .map(|w| w.clone_ref(py));
        let Some(waiter) = waiter else {
            return Ok(());
        };
        let waiter = waiter.bind(py);
        if waiter.call_method0(intern!(py, "done"))?.is_truthy()? {
            return Ok(());
        }
        match exc {
            None => waiter.call_method1(intern!(py, "set_result"), (py.None(),))?,
            Some(exc) => waiter.call_method1(intern!(py, "set_exception"), (exc,))?,
        };
        Ok(())
    }
}
