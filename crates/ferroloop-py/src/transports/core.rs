//! What every native transport shares, whatever its kind: its identity ([`Common`]), the
//! state under its lock ([`State`]), and the steps asyncio's `_SelectorTransport` defines
//! once for all kinds — close, abort, fatal errors, `connection_lost`, flow control at the
//! water marks, pausing and resuming reads, the `asyncio.Transport` face. The kinds
//! (`stream`, `datagram`) add their reads and writes on top.
//!
//! Invariants, for every kind: `closing` never goes back to false; `lost` is set once, when
//! `connection_lost` is scheduled, which happens exactly once; the fd is registered for
//! reading only while `reading && !closing`, for writing only while writes are pending
//! and `!lost`; no Python code runs while the state lock is held (Python may re-enter the
//! transport).

use std::os::fd::RawFd;
use std::sync::atomic::AtomicUsize;

use ferroloop_core::Side;
use parking_lot::Mutex;
use pyo3::exceptions::{PyOSError, PyRuntimeError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::pyclass::boolean_struct::True;
use pyo3::types::PyDict;
use pyo3::{PyClass, PyTraverseError};

use super::flow::{FlowControl, Limit};
use super::NativeTransport;
use crate::event_loop::LoopCore;
use crate::py;

/// After this many writes to a lost connection, each further one logs a warning.
pub const LOG_THRESHOLD_FOR_LOST_WRITES: u32 = 5;

/// The parts of a transport fixed at creation (plus the face, bound once right after).
pub struct Common {
    pub fd: RawFd,
    pub event_loop: Py<LoopCore>,
    /// The Python socket object: it owns the fd and is closed after `connection_lost`.
    pub sock: Py<PyAny>,
    pub extra: Py<PyDict>,
    pub server: Option<Py<PyAny>>,
    /// `Server._attach`/`_detach` take the transport (Python 3.13+).
    pub server_wants_transport: bool,
    /// The `asyncio.Transport` instance users see (`ferroloop._transports`); protocols,
    /// servers and exception contexts get it instead of the core. Released after
    /// `connection_lost` and when the loop closes, so that the face (which holds the core
    /// through its bound methods) is freed by reference counting, and warns at once if it
    /// was never closed, as asyncio's transports do.
    pub face: Mutex<Option<Py<PyAny>>>,
    /// Bytes the last read returned (see `buffers::read_bytes`: large reads go straight
    /// into a new `bytes`). Only the loop thread reads or writes it.
    pub last_read: AtomicUsize,
}

impl Common {
    pub fn new(
        event_loop: Py<LoopCore>,
        sock: Py<PyAny>,
        fd: RawFd,
        extra: Py<PyDict>,
        server: Option<Py<PyAny>>,
        server_wants_transport: bool,
    ) -> Self {
        Common {
            fd,
            event_loop,
            sock,
            extra,
            server,
            server_wants_transport,
            face: Mutex::new(None),
            last_read: AtomicUsize::new(0),
        }
    }

    pub fn event_loop<'py>(&self, py: Python<'py>) -> &Bound<'py, LoopCore> {
        self.event_loop.bind(py)
    }

    pub fn get_extra_info(
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

    /// Drops the reference to the face (see `face`).
    pub fn release_face(&self) {
        let face = self.face.lock().take();
        drop(face);
    }

    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.event_loop)?;
        visit.call(&self.sock)?;
        visit.call(&self.extra)?;
        if let Some(server) = &self.server {
            visit.call(server)?;
        }
        if let Some(face) = self.face.try_lock() {
            if let Some(face) = face.as_ref() {
                visit.call(face)?;
            }
        }
        Ok(())
    }
}

/// The writes a transport kind holds back until its socket is writable.
pub trait Pending {
    /// What `get_write_buffer_size()` reports (compared with the water marks).
    fn size(&self) -> usize;
    /// Drops everything (abort, fatal errors).
    fn clear(&mut self);
}

/// Mutable state of a transport; `kind` is what only one kind has (its write buffer, ...).
pub struct State<K> {
    pub protocol: Py<PyAny>,
    /// Reading is wanted (not paused by `pause_reading` or a kept-open EOF).
    pub reading: bool,
    pub closing: bool,
    /// `connection_lost` is scheduled (or ran).
    pub lost: bool,
    pub writes_after_lost: u32,
    pub flow: FlowControl,
    pub kind: K,
}

impl<K> State<K> {
    pub fn new(protocol: Py<PyAny>, kind: K) -> Self {
        State {
            protocol,
            reading: true,
            closing: false,
            lost: false,
            writes_after_lost: 0,
            flow: FlowControl::new(),
            kind,
        }
    }

    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.protocol)
    }
}

/// A native transport pyclass: gives the shared steps below access to its parts.
pub trait Transport: PyClass<Frozen = True> + Sync {
    type Kind: Pending + Send;
    fn common(&self) -> &Common;
    fn state(&self) -> &Mutex<State<Self::Kind>>;
    /// The fd owner the driver keeps for this transport.
    fn native(slf: &Bound<'_, Self>) -> NativeTransport;

    /// The repr (asyncio's socket transports' shape unless a kind overrides it).
    fn repr_text(&self) -> String
    where
        Self: Sized,
    {
        socket_repr(self)
    }

    /// What asyncio logs for writes to a lost connection, once more than
    /// `SILENT_LOST_WRITES` were dropped.
    const LOST_WRITE_WARNING: &'static str = "socket.send() raised exception.";

    /// Writes to a lost connection dropped without a warning (asyncio's sockets count
    /// the loss itself, so they warn from the fifth dropped write).
    const SILENT_LOST_WRITES: u32 = LOG_THRESHOLD_FOR_LOST_WRITES - 1;

    /// `set_protocol` (a kind may note something about the new protocol first).
    fn set_protocol_of(slf: &Bound<'_, Self>, protocol: Bound<'_, PyAny>) -> PyResult<()>
    where
        Self: Sized,
    {
        replace_protocol(slf.get(), protocol);
        Ok(())
    }

    /// `_call_connection_lost` (a kind may add a step after the shared ones).
    fn connection_lost_of(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()>
    where
        Self: Sized,
    {
        call_connection_lost(slf, exc)
    }

    /// Reports the references only this kind holds to the garbage collector.
    fn traverse_kind(
        &self,
        _kind: &Self::Kind,
        _visit: &PyVisit<'_>,
    ) -> Result<(), PyTraverseError> {
        Ok(())
    }

    /// Whether a fatal error is only logged in debug mode instead of being passed to the
    /// exception handler (asyncio's socket transports: any `OSError`).
    fn is_quiet_fatal_error(py: Python<'_>, exc: &PyErr) -> bool {
        exc.is_instance_of::<PyOSError>(py)
    }
}

/// The methods every kind's face gets in its instance dict (see [`bind_face`]).
const BASE_FACE_METHODS: [&str; 7] = [
    "close",
    "_force_close",
    "is_closing",
    "get_extra_info",
    "set_protocol",
    "get_protocol",
    "_start_reading",
];
/// The face methods of kinds that read (`asyncio.ReadTransport`).
pub const READ_FACE_METHODS: &[&str] = &["pause_reading", "resume_reading", "is_reading"];
/// The face methods of kinds that write with a buffer (`asyncio.WriteTransport`'s flow
/// control, and `abort`).
pub const WRITE_FACE_METHODS: &[&str] = &[
    "abort",
    "set_write_buffer_limits",
    "get_write_buffer_limits",
    "get_write_buffer_size",
];

/// The transport as Python code sees it: the bound face, or the core before binding.
pub fn face<'py, T: Transport>(slf: &Bound<'py, T>) -> Bound<'py, PyAny> {
    let face = slf
        .get()
        .common()
        .face
        .lock()
        .as_ref()
        .map(|f| f.clone_ref(slf.py()));
    match face {
        Some(face) => face.into_bound(slf.py()),
        None => slf.clone().into_any(),
    }
}

/// Makes `face` the transport users see: its instance dict gets the core's bound base
/// methods and the kind's groups of `methods` (so calls reach Rust with no Python frame), `_core`, `_sock` and `_sock_fd`,
/// and its `_loop` slot the loop. Once per transport.
pub fn bind_face<T: Transport>(
    slf: &Bound<'_, T>,
    face: &Bound<'_, PyAny>,
    methods: &[&[&str]],
) -> PyResult<()> {
    let py = slf.py();
    let common = slf.get().common();
    {
        let mut slot = common.face.lock();
        if slot.is_some() {
            return Err(PyRuntimeError::new_err("the transport already has a face"));
        }
        *slot = Some(face.clone().unbind());
    }
    let dict = face
        .getattr(intern!(py, "__dict__"))?
        .cast_into::<PyDict>()?;
    for name in BASE_FACE_METHODS
        .iter()
        .chain(methods.iter().copied().flatten())
    {
        dict.set_item(name, slf.as_any().getattr(name)?)?;
    }
    dict.set_item(intern!(py, "_core"), slf)?;
    dict.set_item(intern!(py, "_sock"), &common.sock)?;
    dict.set_item(intern!(py, "_sock_fd"), common.fd)?;
    face.setattr(intern!(py, "_loop"), &common.event_loop)?;
    Ok(())
}

pub fn protocol<T: Transport>(this: &T, py: Python<'_>) -> Py<PyAny> {
    this.state().lock().protocol.clone_ref(py)
}

pub fn watch<T: Transport>(slf: &Bound<'_, T>, side: Side) -> PyResult<()> {
    let common = slf.get().common();
    common
        .event_loop(slf.py())
        .get()
        .watch_transport(common.fd, side, T::native(slf))
}

pub fn unwatch<T: Transport>(this: &T, py: Python<'_>, side: Side) {
    let common = this.common();
    common
        .event_loop(py)
        .get()
        .unwatch_transport(common.fd, side);
}

/// Passes `exc` to the loop's exception handler with `message`, the transport (its face)
/// and the protocol, as asyncio's transports do.
pub fn report<T: Transport>(
    slf: &Bound<'_, T>,
    message: &str,
    exc: &Bound<'_, PyAny>,
) -> PyResult<()> {
    let py = slf.py();
    let context = PyDict::new(py);
    context.set_item("message", message)?;
    context.set_item("exception", exc)?;
    context.set_item("transport", face(slf))?;
    context.set_item("protocol", protocol(slf.get(), py))?;
    slf.get()
        .common()
        .event_loop(py)
        .call_method1(intern!(py, "call_exception_handler"), (context,))?;
    Ok(())
}

/// A protocol callback failed without making the transport unusable: the failure goes to
/// the exception handler (`SystemExit`/`KeyboardInterrupt` leave the loop).
pub fn report_callback_error<T: Transport>(
    slf: &Bound<'_, T>,
    err: PyErr,
    message: &str,
) -> PyResult<()> {
    if py::is_exit_exception(slf.py(), &err) {
        return Err(err);
    }
    report(slf, message, err.value(slf.py()))
}

/// `pause_writing`/`resume_writing` on the protocol; failures go to the handler.
fn call_flow_control<T: Transport>(slf: &Bound<'_, T>, method: &'static str) -> PyResult<()> {
    let py = slf.py();
    let protocol = protocol(slf.get(), py);
    match protocol.bind(py).call_method0(method) {
        Ok(_) => Ok(()),
        Err(err) => report_callback_error(slf, err, &format!("protocol.{method}() failed")),
    }
}

/// Pauses the protocol if the pending writes went above the high-water mark.
pub fn maybe_pause_protocol<T: Transport>(slf: &Bound<'_, T>) -> PyResult<()> {
    let due = {
        let mut state = slf.get().state().lock();
        let size = state.kind.size();
        state.flow.pause_due(size)
    };
    if due {
        call_flow_control(slf, "pause_writing")?;
    }
    Ok(())
}

/// Resumes the protocol if the pending writes fell to the low-water mark.
pub fn maybe_resume_protocol<T: Transport>(slf: &Bound<'_, T>) -> PyResult<()> {
    let due = {
        let mut state = slf.get().state().lock();
        let size = state.kind.size();
        state.flow.resume_due(size)
    };
    if due {
        call_flow_control(slf, "resume_writing")?;
    }
    Ok(())
}

pub fn set_write_buffer_limits<T: Transport>(
    slf: &Bound<'_, T>,
    high: Option<Limit>,
    low: Option<Limit>,
) -> PyResult<()> {
    let (high, low) = FlowControl::checked_limits(slf.py(), high, low)?;
    {
        let mut state = slf.get().state().lock();
        state.flow.high = high;
        state.flow.low = low;
    }
    maybe_pause_protocol(slf)
}

pub fn get_write_buffer_limits<T: Transport>(this: &T) -> (Limit, Limit) {
    let state = this.state().lock();
    (state.flow.low, state.flow.high)
}

pub fn is_reading<T: Transport>(this: &T) -> bool {
    let state = this.state().lock();
    state.reading && !state.closing
}

pub fn pause_reading<T: Transport>(slf: &Bound<'_, T>) {
    let this = slf.get();
    {
        let mut state = this.state().lock();
        if state.closing || !state.reading {
            return;
        }
        state.reading = false;
    }
    unwatch(this, slf.py(), Side::Read);
}

pub fn resume_reading<T: Transport>(slf: &Bound<'_, T>) -> PyResult<()> {
    {
        let mut state = slf.get().state().lock();
        if state.closing || state.reading {
            return Ok(());
        }
        state.reading = true;
    }
    watch(slf, Side::Read)
}

/// Starts watching for data (scheduled right after `connection_made`).
pub fn start_reading<T: Transport>(slf: &Bound<'_, T>) -> PyResult<()> {
    if is_reading(slf.get()) {
        watch(slf, Side::Read)?;
    }
    Ok(())
}

/// A fatal error: reported (unless it is an `OSError`, which only debug mode logs, as in
/// asyncio), then the transport is closed at once with `exc`.
pub fn fatal_error<T: Transport>(slf: &Bound<'_, T>, exc: PyErr, message: &str) -> PyResult<()> {
    let py = slf.py();
    if !T::is_quiet_fatal_error(py, &exc) {
        report(slf, message, exc.value(py))?;
    }
    force_close(slf, Some(exc.into_value(py).into_any()))
}

/// Drops pending writes, stops watching, schedules `connection_lost(exc)` (`abort`).
pub fn force_close<T: Transport>(slf: &Bound<'_, T>, exc: Option<Py<PyAny>>) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    {
        let mut state = this.state().lock();
        if state.lost {
            return Ok(());
        }
        state.kind.clear();
        state.closing = true;
    }
    unwatch(this, py, Side::Read);
    unwatch(this, py, Side::Write);
    schedule_connection_lost(slf, exc)
}

/// `close`: stop reading; `connection_lost(None)` once pending writes are flushed.
pub fn close<T: Transport>(slf: &Bound<'_, T>) -> PyResult<()> {
    let py = slf.py();
    let this = slf.get();
    let flushed = {
        let mut state = this.state().lock();
        if state.closing {
            return Ok(());
        }
        state.closing = true;
        state.kind.size() == 0
    };
    unwatch(this, py, Side::Read);
    if flushed {
        schedule_connection_lost(slf, None)?;
    }
    Ok(())
}

pub fn schedule_connection_lost<T: Transport>(
    slf: &Bound<'_, T>,
    exc: Option<Py<PyAny>>,
) -> PyResult<()> {
    let py = slf.py();
    {
        let mut state = slf.get().state().lock();
        if state.lost {
            return Ok(());
        }
        state.lost = true;
    }
    let callback = slf.as_any().getattr(intern!(py, "_call_connection_lost"))?;
    slf.get()
        .common()
        .event_loop(py)
        .call_method1(intern!(py, "call_soon"), (callback, exc))?;
    Ok(())
}

/// Runs `protocol.connection_lost(exc)`, then closes the socket and tells the server;
/// the first failure is raised after all three ran.
pub fn call_connection_lost<T: Transport>(
    slf: &Bound<'_, T>,
    exc: Option<Py<PyAny>>,
) -> PyResult<()> {
    let py = slf.py();
    let common = slf.get().common();
    let result = protocol(slf.get(), py)
        .bind(py)
        .call_method1(intern!(py, "connection_lost"), (exc,));
    let closed = common.sock.bind(py).call_method0(intern!(py, "close"));
    if let Some(server) = &common.server {
        if common.server_wants_transport {
            server
                .bind(py)
                .call_method1(intern!(py, "_detach"), (face(slf),))?;
        } else {
            server.bind(py).call_method0(intern!(py, "_detach"))?;
        }
    }
    common.release_face();
    result?;
    closed?;
    Ok(())
}

/// Counts a write to a lost connection; past the kind's silent ones, asyncio logs a
/// warning for each.
pub fn note_write_after_lost<T: Transport>(this: &T, py: Python<'_>) -> PyResult<()> {
    let count = {
        let mut state = this.state().lock();
        state.writes_after_lost += 1;
        state.writes_after_lost
    };
    if count > T::SILENT_LOST_WRITES {
        py::log_warning(py, T::LOST_WRITE_WARNING)?;
    }
    Ok(())
}

/// Reports every reference a transport holds to the garbage collector (never blocks).
pub fn traverse<T: Transport>(this: &T, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
    this.common().traverse(visit)?;
    if let Some(state) = this.state().try_lock() {
        state.traverse(visit)?;
        this.traverse_kind(&state.kind, visit)?;
    }
    Ok(())
}

/// Swaps the protocol (the old one is released after the lock).
pub fn replace_protocol<T: Transport>(this: &T, protocol: Bound<'_, PyAny>) {
    let old = std::mem::replace(&mut this.state().lock().protocol, protocol.unbind());
    drop(old);
}

/// asyncio's socket transport repr: `<Name[ closing|closed] fd=N read=... write=<...>>`.
pub fn socket_repr<T: Transport>(this: &T) -> String {
    let name = <T as PyClass>::NAME;
    let state = this.state().lock();
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
    let size = state.kind.size();
    let write = if size == 0 { "idle" } else { "polling" };
    format!(
        "<{name}{status} fd={} read={read} write=<{write}, bufsize={size}>>",
        this.common().fd
    )
}

/// asyncio's pipe transport repr: `<Name[ closed|closing] fd=N polling|idle|open>`, with
/// ` bufsize=N` for write pipes (`open`: the loop is closed).
pub fn pipe_repr<T: Transport>(this: &T, writes: bool) -> String {
    let mut info = vec![<T as PyClass>::NAME.to_owned()];
    let state = this.state().lock();
    if state.lost {
        info.push("closed".into());
    } else if state.closing {
        info.push("closing".into());
    }
    info.push(format!("fd={}", this.common().fd));
    let loop_closed = this.common().event_loop.get().closed_now();
    if state.lost {
        info.push("closed".into());
    } else if loop_closed {
        info.push("open".into());
    } else {
        let size = state.kind.size();
        let polling = if writes {
            size > 0
        } else {
            state.reading && !state.closing
        };
        info.push(if polling { "polling" } else { "idle" }.into());
        if writes {
            info.push(format!("bufsize={size}"));
        }
    }
    format!("<{}>", info.join(" "))
}
