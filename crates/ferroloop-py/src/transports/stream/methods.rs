//! The Python-facing methods of `StreamTransport` (asyncio's transport interface): thin
//! shims over the state machine in the parent module, plus `write()`'s argument check.

use std::io;
use std::os::fd::RawFd;
use std::sync::OnceLock;

use ferroloop_core::net::{self, WriteBuffer};
use ferroloop_core::Side;
use parking_lot::Mutex;
use pyo3::exceptions::{PyConnectionError, PyRuntimeError, PyTypeError, PyValueError};
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyDict, PyMemoryView};
use pyo3::PyTraverseError;

use super::{
    Failure, FACE_METHODS, StreamState, StreamTransport, DEFAULT_HIGH_WATER, LOG_THRESHOLD_FOR_LOST_WRITES,
};
use crate::errors::os_error;
use crate::event_loop::LoopCore;
use crate::py;

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
            face: OnceLock::new(),
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
                empty_waiter: None,
            }),
        }
    }

    /// Makes `face` (a `ferroloop._transports.SocketTransport`) the transport users see:
    /// its instance dict gets this core's bound transport methods, `_core`, `_sock` and
    /// `_sock_fd`, and its `_loop` slot the loop. Once per transport.
    fn _bind_face(slf: &Bound<'_, Self>, face: Bound<'_, PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        if this.face.set(face.clone().unbind()).is_err() {
            return Err(PyRuntimeError::new_err("the transport already has a face"));
        }
        let dict = face.getattr(intern!(py, "__dict__"))?.cast_into::<PyDict>()?;
        for name in FACE_METHODS {
            dict.set_item(name, slf.getattr(name)?)?;
        }
        dict.set_item(intern!(py, "_core"), slf)?;
        dict.set_item(intern!(py, "_sock"), &this.sock)?;
        dict.set_item(intern!(py, "_sock_fd"), this.fd)?;
        face.setattr(intern!(py, "_loop"), &this.event_loop)?;
        Ok(())
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
            if state.empty_waiter.is_some() {
                return Err(Failure::Py(PyRuntimeError::new_err(
                    "unable to write; sendfile is in progress",
                )));
            }
            if bytes.is_empty() {
                return Ok(false);
            }
            if state.lost {
                state.writes_after_lost += 1;
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
                server
                    .bind(py)
                    .call_method1(intern!(py, "_detach"), (Self::face(slf),))?;
            } else {
                server.bind(py).call_method0(intern!(py, "_detach"))?;
            }
        }
        let waiter_failed = Self::resolve_empty_waiter(
            slf,
            Some(PyConnectionError::new_err("Connection is closed by peer")),
        );
        result?;
        closed?;
        waiter_failed
    }

    /// A future done once the write buffer is empty, for `loop.sendfile` (asyncio's
    /// `_make_empty_waiter`); `write` refuses until `_reset_empty_waiter`.
    fn _make_empty_waiter(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        if this.state.lock().empty_waiter.is_some() {
            return Err(PyRuntimeError::new_err("Empty waiter is already set"));
        }
        let waiter = this
            .event_loop(py)
            .call_method0(intern!(py, "create_future"))?;
        let flushed = {
            let mut state = this.state.lock();
            state.empty_waiter = Some(waiter.clone().unbind());
            state.buffer.is_empty()
        };
        if flushed {
            waiter.call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
        Ok(waiter.unbind())
    }

    fn _reset_empty_waiter(&self) {
        self.state.lock().empty_waiter = None;
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
        if let Some(face) = self.face.get() {
            visit.call(face)?;
        }
        if let Some(state) = self.state.try_lock() {
            visit.call(&state.protocol)?;
            if let Some(waiter) = &state.empty_waiter {
                visit.call(waiter)?;
            }
        }
        Ok(())
    }
}
