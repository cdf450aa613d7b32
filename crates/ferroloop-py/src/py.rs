//! Python objects the binding looks up once per interpreter.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;
use pyo3::types::{PyString, PyTuple};

static FORMAT_CALLBACK_SOURCE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static EXTRACT_STACK: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static FUTURE_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static TASK_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static BUFFERED_PROTOCOL_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static ASYNCIO_LOGGER: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `module.name`, imported on first use and kept in `cell`.
fn cached_attr<'py>(
    py: Python<'py>,
    cell: &'static PyOnceLock<Py<PyAny>>,
    module: &str,
    name: &str,
) -> PyResult<&'py Bound<'py, PyAny>> {
    cell.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import(module)?.getattr(name)?.unbind())
    })
    .map(|f| f.bind(py))
}

/// `asyncio.format_helpers._format_callback_source`, the text asyncio puts in handle reprs
/// and in "Exception in callback ..." messages.
pub fn format_callback_source(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    cached_attr(
        py,
        &FORMAT_CALLBACK_SOURCE,
        "asyncio.format_helpers",
        "_format_callback_source",
    )
}

/// `asyncio.Future` (the C-accelerated class where available).
pub fn future_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    cached_attr(py, &FUTURE_TYPE, "asyncio", "Future")
}

/// `asyncio.Task` (the C-accelerated class where available).
pub fn task_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    cached_attr(py, &TASK_TYPE, "asyncio", "Task")
}

/// `asyncio.BufferedProtocol`.
pub fn buffered_protocol_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    cached_attr(py, &BUFFERED_PROTOCOL_TYPE, "asyncio", "BufferedProtocol")
}

/// Logs `message` as a warning on asyncio's logger (`asyncio.log.logger`).
pub fn log_warning(py: Python<'_>, message: &str) -> PyResult<()> {
    cached_attr(py, &ASYNCIO_LOGGER, "asyncio.log", "logger")?
        .call_method1("warning", (message,))?;
    Ok(())
}

/// Whether `err` must leave the loop instead of going to the exception handler
/// (`SystemExit`, `KeyboardInterrupt`), as in asyncio.
pub fn is_exit_exception(py: Python<'_>, err: &PyErr) -> bool {
    err.is_instance_of::<pyo3::exceptions::PySystemExit>(py)
        || err.is_instance_of::<pyo3::exceptions::PyKeyboardInterrupt>(py)
}

/// The calling Python code's stack, as asyncio records it for handles in debug mode
/// (`asyncio.format_helpers.extract_stack`). Called from Rust, the innermost Python frame
/// is the code that called into the loop, so no frame needs trimming.
pub fn extract_stack(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    let extract = cached_attr(
        py,
        &EXTRACT_STACK,
        "asyncio.format_helpers",
        "extract_stack",
    )?;
    let frame = py.import("sys")?.call_method1("_getframe", (0,))?;
    extract.call1((frame,))
}

static KWNAMES: [PyOnceLock<Py<PyTuple>>; 4] = [
    PyOnceLock::new(),
    PyOnceLock::new(),
    PyOnceLock::new(),
    PyOnceLock::new(),
];

/// Keyword names of `asyncio.Task(coro, loop=..., [name=...], [context=...])` /
/// `asyncio.Future(loop=...)` calls, for [`crate::ffi::vectorcall`].
pub fn loop_kwnames(py: Python<'_>, name: bool, context: bool) -> PyResult<&Bound<'_, PyTuple>> {
    let (slot, names): (usize, &[&str]) = match (name, context) {
        (false, false) => (0, &["loop"]),
        (true, false) => (1, &["loop", "name"]),
        (false, true) => (2, &["loop", "context"]),
        (true, true) => (3, &["loop", "name", "context"]),
    };
    KWNAMES[slot]
        .get_or_try_init(py, || {
            let names = names.iter().map(|n| PyString::intern(py, n));
            Ok::<_, PyErr>(PyTuple::new(py, names)?.unbind())
        })
        .map(|names| names.bind(py))
}
