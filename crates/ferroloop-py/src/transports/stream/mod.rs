//! `StreamTransport`: asyncio's socket transport (TCP, Unix streams), in Rust.
//!
//! Life of a transport (the same steps and order as asyncio's selector transport):
//! 1. `ferroloop._net` creates it for a connected non-blocking socket and schedules
//!    `protocol.connection_made(transport)`, then `_start_reading`, then the waiter.
//! 2. While reading, the loop calls [`StreamTransport::on_ready`] when the socket is
//!    readable: one `recv` per iteration into `data_received(bytes)` (or into the buffer
//!    of a `BufferedProtocol`); end of stream calls `eof_received()` and closes unless it
//!    returns true.
//! 3. `write` sends at once when nothing is buffered; the rest waits in the write buffer
//!    and is flushed when the socket is writable. Above the high-water mark the protocol
//!    gets `pause_writing()`, at or below the low-water mark `resume_writing()`.
//! 4. `close` stops reading and, once the buffer is flushed, schedules
//!    `connection_lost(None)`; `abort` and fatal errors drop the buffer and schedule
//!    `connection_lost(exc)` at once. `connection_lost` runs exactly once, then the socket
//!    is closed and the server (if any) is told.
//!
//! Invariants: `closing` never goes back to false; `lost` (connection_lost scheduled) is
//! set once; the fd is registered for reading iff `reading && !closing`, for writing iff
//! the buffer is non-empty and `!lost`.

use std::cell::RefCell;
use std::io;
use std::os::fd::RawFd;
use std::sync::OnceLock;

use ferroloop_core::net::{self, WriteBuffer};
use ferroloop_core::Side;
use parking_lot::Mutex;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyRuntimeError, PyTypeError};
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

mod methods;

use crate::errors::os_error;
use crate::event_loop::LoopCore;
use crate::py;

/// Default high-water mark of the write buffer (asyncio's 64 KiB).
const DEFAULT_HIGH_WATER: usize = 64 * 1024;
/// Bytes read per `recv` for `data_received` (asyncio: 256 KiB).
const READ_SIZE: usize = 256 * 1024;
/// After this many writes to a lost connection, each further one logs a warning.
const LOG_THRESHOLD_FOR_LOST_WRITES: u32 = 5;

thread_local! {
    /// The `recv` buffer of the loop thread, shared by all its transports.
    static READ_BUF: RefCell<Vec<u8>> = RefCell::new(vec![0; READ_SIZE]);
}

struct StreamState {
    protocol: Py<PyAny>,
    /// The protocol is an `asyncio.BufferedProtocol`.
    buffered: bool,
    /// Reading is wanted (not paused by `pause_reading` or a kept-open EOF).
    reading: bool,
    closing: bool,
    /// `connection_lost` is scheduled (or ran).
    lost: bool,
    writes_after_lost: u32,
    eof_requested: bool,
    buffer: WriteBuffer,
    high_water: usize,
    low_water: usize,
    protocol_paused: bool,
    /// The future `loop.sendfile` waits on until the buffer is flushed (asyncio's
    /// `_empty_waiter`); while set, `write` refuses.
    empty_waiter: Option<Py<PyAny>>,
}

/// A TCP or Unix stream socket transport.
#[pyclass(frozen, weakref, module = "ferroloop._ferroloop")]
pub struct StreamTransport {
    fd: RawFd,
    event_loop: Py<LoopCore>,
    sock: Py<PyAny>,
    extra: Py<PyDict>,
    server: Option<Py<PyAny>>,
    /// `Server._attach`/`_detach` take the transport (Python 3.13+).
    server_wants_transport: bool,
    /// The `asyncio.Transport` instance users see (`ferroloop._transports`), bound once by
    /// `_bind_face`; protocols, servers and exception contexts get it instead of `self`.
    face: OnceLock<Py<PyAny>>,
    state: Mutex<StreamState>,
}

/// The transport methods `_bind_face` puts in the face's instance dict: calling them
/// calls the Rust methods directly, with no Python frame in between.
const FACE_METHODS: [&str; 19] = [
    "write",
    "writelines",
    "write_eof",
    "can_write_eof",
    "close",
    "abort",
    "is_closing",
    "get_extra_info",
    "pause_reading",
    "resume_reading",
    "is_reading",
    "set_write_buffer_limits",
    "get_write_buffer_limits",
    "get_write_buffer_size",
    "set_protocol",
    "get_protocol",
    "_start_reading",
    "_make_empty_waiter",
    "_reset_empty_waiter",
];

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
    /// The transport as Python code sees it: the bound face, or the core before binding.
    fn face<'py>(slf: &Bound<'py, Self>) -> Bound<'py, PyAny> {
        match slf.get().face.get() {
            Some(face) => face.bind(slf.py()).clone(),
            None => slf.clone().into_any(),
        }
    }

    fn event_loop<'py>(&self, py: Python<'py>) -> &Bound<'py, LoopCore> {
        self.event_loop.bind(py)
    }

    fn watch(slf: &Bound<'_, Self>, side: Side) -> PyResult<()> {
        let this = slf.get();
        this.event_loop(slf.py())
            .get()
            .watch_stream(this.fd, side, slf.clone().unbind())
    }

    fn unwatch(&self, py: Python<'_>, side: Side) {
        self.event_loop(py).get().unwatch_stream(self.fd, side);
    }

    fn protocol(&self, py: Python<'_>) -> Py<PyAny> {
        self.state.lock().protocol.clone_ref(py)
    }

    /// Handles readiness on `side` (called by the loop).
    pub fn on_ready(slf: &Bound<'_, Self>, side: Side) -> PyResult<()> {
        let outcome = match side {
            Side::Read => Self::read_ready(slf),
            Side::Write => Self::write_ready(slf),
        };
        match outcome {
            Ok(()) => Ok(()),
            Err(Failure::Os(err)) => {
                let message = match side {
                    Side::Read => "Fatal read error on socket transport",
                    Side::Write => "Fatal write error on socket transport",
                };
                Self::fatal_error(slf, os_error(err), message)
            }
            Err(Failure::Protocol(err, message)) => {
                if py::is_exit_exception(slf.py(), &err) {
                    return Err(err);
                }
                Self::fatal_error(slf, err, message)
            }
            Err(Failure::Py(err)) => {
                let py = slf.py();
                if py::is_exit_exception(py, &err) {
                    return Err(err);
                }
                let message = match side {
                    Side::Read if slf.get().state.lock().buffered => {
                        "Fatal error: protocol.buffer_updated() call failed."
                    }
                    Side::Read => "Fatal error: protocol.data_received() call failed.",
                    Side::Write => "Fatal error on socket transport",
                };
                Self::fatal_error(slf, err, message)
            }
        }
    }

    fn read_ready(slf: &Bound<'_, Self>) -> Result<(), Failure> {
        let py = slf.py();
        let this = slf.get();
        let (protocol, buffered) = {
            let state = this.state.lock();
            if state.closing || !state.reading {
                return Ok(()); // stale readiness from before a pause or close
            }
            (state.protocol.clone_ref(py), state.buffered)
        };
        let protocol = protocol.bind(py);
        if buffered {
            const GET_BUFFER_FAILED: &str = "Fatal error: protocol.get_buffer() call failed.";
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
            // SAFETY: the exporter keeps the memory alive and writable while `buffer` (a
            // held Py_buffer) lives; no Python code runs during the recv.
            let slice = unsafe {
                std::slice::from_raw_parts_mut(buffer.buf_ptr().cast::<u8>(), buffer.len_bytes())
            };
            let n = match net::recv(this.fd, slice) {
                Ok(n) => n,
                Err(e) if net::would_block(&e) => return Ok(()),
                Err(e) => return Err(Failure::Os(e)),
            };
            drop(buffer);
            if n == 0 {
                return Self::eof(slf);
            }
            protocol.call_method1(intern!(py, "buffer_updated"), (n,))?;
            return Ok(());
        }
        let data = READ_BUF.with(|cell| {
            let mut buf = cell.borrow_mut();
            match net::recv(this.fd, &mut buf) {
                Ok(0) => Ok(None),
                Ok(n) => Ok(Some(PyBytes::new(py, &buf[..n]))),
                Err(e) => Err(e),
            }
        });
        match data {
            Ok(Some(bytes)) => {
                protocol.call_method1(intern!(py, "data_received"), (bytes,))?;
                Ok(())
            }
            Ok(None) => Self::eof(slf),
            Err(e) if net::would_block(&e) => Ok(()),
            Err(e) => Err(Failure::Os(e)),
        }
    }

    /// End of stream: `eof_received()`; close unless it asks to keep the transport open.
    fn eof(slf: &Bound<'_, Self>) -> Result<(), Failure> {
        let py = slf.py();
        let this = slf.get();
        let protocol = this.protocol(py);
        let keep_open = match protocol.bind(py).call_method0(intern!(py, "eof_received")) {
            Ok(v) => v.is_truthy()?,
            Err(err) => {
                if py::is_exit_exception(py, &err) {
                    return Err(Failure::Py(err));
                }
                Self::fatal_error(
                    slf,
                    err,
                    "Fatal error: protocol.eof_received() call failed.",
                )?;
                return Ok(());
            }
        };
        if keep_open {
            // Nothing more will arrive: stop watching (as asyncio, without marking the
            // transport paused), but let the protocol write on.
            this.unwatch(py, Side::Read);
        } else {
            Self::close_transport(slf)?;
        }
        Ok(())
    }

    fn write_ready(slf: &Bound<'_, Self>) -> Result<(), Failure> {
        let py = slf.py();
        let this = slf.get();
        let (drained, closing, eof, resume) = {
            let mut state = this.state.lock();
            if state.lost {
                return Ok(());
            }
            state.buffer.flush_to(this.fd).map_err(Failure::Os)?;
            let drained = state.buffer.is_empty();
            let resume = state.protocol_paused && state.buffer.len() <= state.low_water;
            if resume {
                state.protocol_paused = false;
            }
            (drained, state.closing, state.eof_requested, resume)
        };
        if resume {
            Self::call_flow_control(slf, "resume_writing")?;
        }
        if drained {
            this.unwatch(py, Side::Write);
            Self::resolve_empty_waiter(slf, None)?;
            if closing {
                Self::schedule_connection_lost(slf, None)?;
            } else if eof {
                net::shutdown_write(this.fd).map_err(Failure::Os)?;
            }
        }
        Ok(())
    }

    /// Completes the sendfile waiter, if any: with `None` once the buffer is flushed, or
    /// with `exc` when the connection is lost.
    fn resolve_empty_waiter(slf: &Bound<'_, Self>, exc: Option<PyErr>) -> PyResult<()> {
        let py = slf.py();
        let Some(waiter) = slf.get().state.lock().empty_waiter.as_ref().map(|w| w.clone_ref(py))
        else {
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

    /// `pause_writing`/`resume_writing` on the protocol; failures go to the handler.
    fn call_flow_control(slf: &Bound<'_, Self>, method: &'static str) -> PyResult<()> {
        let py = slf.py();
        let protocol = slf.get().protocol(py);
        if let Err(err) = protocol.bind(py).call_method0(method) {
            if py::is_exit_exception(py, &err) {
                return Err(err);
            }
            let context = PyDict::new(py);
            context.set_item("message", format!("protocol.{method}() failed"))?;
            context.set_item("exception", err.into_value(py))?;
            context.set_item("transport", Self::face(slf))?;
            context.set_item("protocol", protocol)?;
            slf.get()
                .event_loop(py)
                .call_method1(intern!(py, "call_exception_handler"), (context,))?;
        }
        Ok(())
    }

    /// Pauses the protocol if the buffer went above the high-water mark.
    fn maybe_pause_protocol(slf: &Bound<'_, Self>) -> PyResult<()> {
        let pause = {
            let mut state = slf.get().state.lock();
            let pause = !state.protocol_paused && state.buffer.len() > state.high_water;
            state.protocol_paused |= pause;
            pause
        };
        if pause {
            Self::call_flow_control(slf, "pause_writing")?;
        }
        Ok(())
    }

    /// A fatal error: reported (unless it is an `OSError`, which only debug mode logs,
    /// as in asyncio), then the transport is closed at once with `exc`.
    fn fatal_error(slf: &Bound<'_, Self>, exc: PyErr, message: &str) -> PyResult<()> {
        let py = slf.py();
        let event_loop = slf.get().event_loop(py);
        if !exc.is_instance_of::<pyo3::exceptions::PyOSError>(py) {
            let context = PyDict::new(py);
            context.set_item("message", message)?;
            context.set_item("exception", exc.value(py))?;
            context.set_item("transport", Self::face(slf))?;
            context.set_item("protocol", slf.get().protocol(py))?;
            event_loop.call_method1(intern!(py, "call_exception_handler"), (context,))?;
        }
        Self::force_close(slf, Some(exc.into_value(py).into_any()))
    }

    /// Drops buffered data, stops watching, schedules `connection_lost(exc)`.
    fn force_close(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        {
            let mut state = this.state.lock();
            if state.lost {
                return Ok(());
            }
            state.buffer.clear();
            state.closing = true;
        }
        this.unwatch(py, Side::Read);
        this.unwatch(py, Side::Write);
        Self::schedule_connection_lost(slf, exc)
    }

    fn close_transport(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let flushed = {
            let mut state = this.state.lock();
            if state.closing {
                return Ok(());
            }
            state.closing = true;
            state.buffer.is_empty()
        };
        this.unwatch(py, Side::Read);
        if flushed {
            Self::schedule_connection_lost(slf, None)?;
        }
        Ok(())
    }

    fn schedule_connection_lost(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        {
            let mut state = slf.get().state.lock();
            if state.lost {
                return Ok(());
            }
            state.lost = true;
        }
        let callback = slf.getattr(intern!(py, "_call_connection_lost"))?;
        slf.get()
            .event_loop(py)
            .call_method1(intern!(py, "call_soon"), (callback, exc))?;
        Ok(())
    }
}
