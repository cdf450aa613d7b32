//! Python objects the binding looks up once per interpreter.

use pyo3::prelude::*;
use pyo3::sync::PyOnceLock;

static FORMAT_CALLBACK_SOURCE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();
static FUTURE_TYPE: PyOnceLock<Py<PyAny>> = PyOnceLock::new();

/// `asyncio.format_helpers._format_callback_source`, the text asyncio puts in handle reprs
/// and in "Exception in callback ..." messages.
pub fn format_callback_source(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    FORMAT_CALLBACK_SOURCE
        .get_or_try_init(py, || {
            Ok::<_, PyErr>(
                py.import("asyncio.format_helpers")?.getattr("_format_callback_source")?.unbind(),
            )
        })
        .map(|f| f.bind(py))
}

/// `asyncio.Future` (the C-accelerated class where available).
pub fn future_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    FUTURE_TYPE
        .get_or_try_init(py, || Ok::<_, PyErr>(py.import("asyncio")?.getattr("Future")?.unbind()))
        .map(|f| f.bind(py))
}
