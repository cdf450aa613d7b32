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

use ferroloop_core::net::{self, WriteBuffer};
use ferroloop_core::Side;
use parking_lot::Mutex;
use pyo3::buffer::PyBuffer;
use pyo3::exceptions::{PyRuntimeError, PyTypeError, PyValueError};
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView};
use pyo3::PyTraverseError;

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
    state: Mutex<StreamState>,
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
                return Err(Failure::Protocol(err, "Fatal read error on socket transport"));
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
                Self::fatal_error(slf, err, "Fatal error: protocol.eof_received() call failed.")?;
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
            if closing {
                Self::schedule_connection_lost(slf, None)?;
            } else if eof {
                net::shutdown_write(this.fd).map_err(Failure::Os)?;
            }
        }
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
            context.set_item("transport", slf)?;
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
            context.set_item("transport", slf)?;
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

/// The bytes of a `write()` argument (bytes, bytearray, memoryview), with asyncio's
/// `TypeError` for anything else.
fn with_bytes<R>(data: &Bound<'_, PyAny>, f: impl FnOnce(&[u8]) -> R) -> PyResult<R> {
    if let Ok(bytes) = data.cast::<PyBytes>() {
        return Ok(f(bytes.as_bytes()));
    }
    if data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>() {
        // `bytes(data)`: the raw bytes whatever the buffer's item format.
        let bytes = data.py().get_type::<PyBytes>().call1((data,))?;
        return Ok(f(bytes.cast::<PyBytes>()?.as_bytes()));
    }
    Err(PyTypeError::new_err(format!(
        "data argument must be a bytes-like object, not {}",
        data.get_type().name()?.repr()?
    )))
}

#[pymethods]
impl StreamTransport {
    /// Wraps the connected non-blocking socket `sock` (fd `fd`); `ferroloop._net` builds
    /// it and schedules `connection_made`.
    #[new]
    #[pyo3(signature = (event_loop, sock, fd, protocol, extra, buffered, server=None, server_wants_transport=false))]
    #[allow(clippy::too_many_arguments)]
    fn new(
        event_loop: Py<LoopCore>,
        sock: Py<PyAny>,
        fd: RawFd,
        protocol: Py<PyAny>,
        extra: Py<PyDict>,
        buffered: bool,
        server: Option<Py<PyAny>>,
        server_wants_transport: bool,
    ) -> Self {
        StreamTransport {
            fd,
            event_loop,
            sock,
            extra,
            server,
            server_wants_transport,
            state: Mutex::new(StreamState {
                protocol,
                buffered,
                reading: true,
                closing: false,
                lost: false,
                writes_after_lost: 0,
                eof_requested: false,
                buffer: WriteBuffer::new(),
                high_water: DEFAULT_HIGH_WATER,
                low_water: DEFAULT_HIGH_WATER / 4,
                protocol_paused: false,
            }),
        }
    }

    /// Starts watching for data (scheduled right after `connection_made`).
    fn _start_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        let wanted = {
            let state = slf.get().state.lock();
            state.reading && !state.closing
        };
        if wanted {
            Self::watch(slf, Side::Read)?;
        }
        Ok(())
    }

    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let outcome = with_bytes(data, |bytes| -> Result<bool, Failure> {
            let mut state = this.state.lock();
            if state.eof_requested {
                return Err(Failure::Py(PyRuntimeError::new_err(
                    "Cannot call write() after write_eof()",
                )));
            }
            if state.lost {
                state.writes_after_lost += 1;
                return Ok(false);
            }
            if bytes.is_empty() {
                return Ok(false);
            }
            let mut rest = bytes;
            let was_empty = state.buffer.is_empty();
            if was_empty {
                match net::send_vectored(this.fd, &[io::IoSlice::new(bytes)]) {
                    Ok(n) => rest = &bytes[n..],
                    Err(e) if net::would_block(&e) => {}
                    Err(e) => return Err(Failure::Os(e)),
                }
            }
            state.buffer.push(rest);
            Ok(was_empty && !rest.is_empty())
        })?;
        match outcome {
            Ok(start_writing) => {
                if start_writing {
                    Self::watch(slf, Side::Write)?;
                }
                let lost_writes = this.state.lock().writes_after_lost;
                if lost_writes >= LOG_THRESHOLD_FOR_LOST_WRITES {
                    py::log_warning(py, "socket.send() raised exception.")?;
                }
                Self::maybe_pause_protocol(slf)
            }
            Err(Failure::Os(err)) => {
                Self::fatal_error(slf, os_error(err), "Fatal write error on socket transport")
            }
            Err(Failure::Py(err)) | Err(Failure::Protocol(err, _)) => Err(err),
        }
    }

    /// Writes every chunk of `list_of_data` (one vectored send when nothing is buffered).
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        let joined = PyBytes::new(slf.py(), b"").call_method1("join", (list_of_data,))?;
        Self::write(slf, &joined)
    }

    fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        let shutdown_now = {
            let mut state = this.state.lock();
            if state.closing || state.eof_requested {
                return Ok(());
            }
            state.eof_requested = true;
            state.buffer.is_empty()
        };
        if shutdown_now {
            net::shutdown_write(this.fd).map_err(os_error)?;
        }
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    fn close(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::close_transport(slf)
    }

    fn abort(slf: &Bound<'_, Self>) -> PyResult<()> {
        Self::force_close(slf, None)
    }

    fn is_closing(&self) -> bool {
        self.state.lock().closing
    }

    #[pyo3(signature = (name, default=None))]
    fn get_extra_info(
        &self,
        py: Python<'_>,
        name: &Bound<'_, PyAny>,
        default: Option<Py<PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        match self.extra.bind(py).get_item(name)? {
            Some(value) => Ok(value.unbind()),
            None => Ok(default.unwrap_or_else(|| py.None())),
        }
    }

    fn pause_reading(slf: &Bound<'_, Self>) {
        let this = slf.get();
        {
            let mut state = this.state.lock();
            if state.closing || !state.reading {
                return;
            }
            state.reading = false;
        }
        this.unwatch(slf.py(), Side::Read);
    }

    fn resume_reading(slf: &Bound<'_, Self>) -> PyResult<()> {
        {
            let mut state = slf.get().state.lock();
            if state.closing || state.reading {
                return Ok(());
            }
            state.reading = true;
        }
        Self::watch(slf, Side::Read)
    }

    fn is_reading(&self) -> bool {
        let state = self.state.lock();
        state.reading && !state.closing
    }

    #[pyo3(signature = (high=None, low=None))]
    fn set_write_buffer_limits(
        slf: &Bound<'_, Self>,
        high: Option<i64>,
        low: Option<i64>,
    ) -> PyResult<()> {
        let high = high.unwrap_or_else(|| match low {
            Some(low) => 4 * low,
            None => DEFAULT_HIGH_WATER as i64,
        });
        let low = low.unwrap_or(high.div_euclid(4));
        if !(high >= low && low >= 0) {
            return Err(PyValueError::new_err(format!(
                "high ({high}) must be >= low ({low}) must be >= 0"
            )));
        }
        {
            let mut state = slf.get().state.lock();
            state.high_water = high as usize;
            state.low_water = low as usize;
        }
        Self::maybe_pause_protocol(slf)
    }

    fn get_write_buffer_limits(&self) -> (usize, usize) {
        let state = self.state.lock();
        (state.low_water, state.high_water)
    }

    fn get_write_buffer_size(&self) -> usize {
        self.state.lock().buffer.len()
    }

    fn set_protocol(&self, py: Python<'_>, protocol: Bound<'_, PyAny>) -> PyResult<()> {
        let buffered = protocol.is_instance(py::buffered_protocol_type(py)?)?;
        let old = {
            let mut state = self.state.lock();
            state.buffered = buffered;
            std::mem::replace(&mut state.protocol, protocol.unbind())
        };
        drop(old);
        Ok(())
    }

    fn get_protocol(&self, py: Python<'_>) -> Py<PyAny> {
        self.protocol(py)
    }

    /// The loop (asyncio's transports keep it as `_loop`; the sendfile fallback reads it).
    #[getter]
    fn _loop(&self, py: Python<'_>) -> Py<LoopCore> {
        self.event_loop.clone_ref(py)
    }

    /// Whether the protocol was told to pause writing (read by the sendfile fallback).
    #[getter]
    fn _protocol_paused(&self) -> bool {
        self.state.lock().protocol_paused
    }

    /// The socket object (asyncio's transports keep it as `_sock`).
    #[getter]
    fn _sock(&self, py: Python<'_>) -> Py<PyAny> {
        self.sock.clone_ref(py)
    }

    /// Runs `protocol.connection_lost(exc)` once, then closes the socket and tells the
    /// server.
    fn _call_connection_lost(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let protocol = this.protocol(py);
        let result = protocol
            .bind(py)
            .call_method1(intern!(py, "connection_lost"), (exc,));
        let closed = this.sock.bind(py).call_method0(intern!(py, "close"));
        if let Some(server) = &this.server {
            if this.server_wants_transport {
                server.bind(py).call_method1(intern!(py, "_detach"), (slf,))?;
            } else {
                server.bind(py).call_method0(intern!(py, "_detach"))?;
            }
        }
        result?;
        closed?;
        Ok(())
    }

    fn __repr__(&self) -> String {
        let state = self.state.lock();
        let status = if state.lost {
            " closed"
        } else if state.closing {
            " closing"
        } else {
            ""
        };
        let read = if state.reading && !state.closing {
            "polling"
        } else {
            "idle"
        };
        let write = if state.buffer.is_empty() {
            "idle"
        } else {
            "polling"
        };
        format!(
            "<StreamTransport{status} fd={} read={read} write=<{write}, bufsize={}>>",
            self.fd,
            state.buffer.len()
        )
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        visit.call(&self.sock)?;
        visit.call(&self.extra)?;
        if let Some(server) = &self.server {
            visit.call(server)?;
        }
        if let Some(state) = self.state.try_lock() {
            visit.call(&state.protocol)?;
        }
        Ok(())
    }
}
