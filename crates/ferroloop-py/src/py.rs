//! Python objects the binding looks up once per interpreter, the [`intern!`] macro, and
//! [`GilCell`], state guarded by the GIL instead of a lock.
//!
//! Invariant: nothing here waits for another thread. PyO3's `PyOnceLock` (and so its
//! `intern!`) releases the GIL while its `Once` is marked "running"; a thread that
//! `fork()`s in that window leaves the child a `Once` that stays "running" forever, and
//! the child's first use of that value hangs (seen: `create_future` in a child forked from
//! an executor thread while the loop thread was making its first future). [`Cached`]
//! computes the value with the GIL held and only then stores it (a racing thread's value
//! is dropped), so no `Once` is ever running while another Python thread can fork.

use std::cell::UnsafeCell;
use std::sync::OnceLock;

use pyo3::prelude::*;
use pyo3::types::{PyString, PyTuple};

/// A value that only code holding the GIL reads or changes (the module is declared
/// `gil_used`, so there is always a GIL): shared state with no lock.
pub struct GilCell<T>(UnsafeCell<T>);

// SAFETY: every access goes through `with`/`with_mut`/`replace`, which take a `Python`
// token (the GIL is held, so no two threads access it at once), or `in_traverse`, which
// the collector calls with the GIL held.
unsafe impl<T: Send> Sync for GilCell<T> {}

impl<T> GilCell<T> {
    pub const fn new(value: T) -> Self {
        GilCell(UnsafeCell::new(value))
    }

    /// `f` on the value; `f` must not call into Python (it could re-enter the cell).
    pub fn with<R>(&self, _py: Python<'_>, f: impl FnOnce(&T) -> R) -> R {
        // SAFETY: the GIL is held (we have a token) and `f` runs no Python code, so no
        // mutable access can run while the shared reference lives.
        f(unsafe { &*self.0.get() })
    }

    /// `f` on the value, mutably; `f` must not call into Python nor drop Python objects
    /// (that may run Python code, which could re-enter the cell).
    pub fn with_mut<R>(&self, _py: Python<'_>, f: impl FnOnce(&mut T) -> R) -> R {
        // SAFETY: as `with`: the GIL is held and `f` runs no Python code, so this is the
        // only reference while `f` runs.
        f(unsafe { &mut *self.0.get() })
    }

    /// Puts `value` in and returns the old value (drop it after this returns: dropping
    /// Python objects may run Python code).
    pub fn replace(&self, _py: Python<'_>, value: T) -> T {
        // SAFETY: the GIL is held and no reference from `with` outlives its closure, so
        // this is the only reference for the duration of the swap.
        unsafe { std::mem::replace(&mut *self.0.get(), value) }
    }

    /// The value, from a `__traverse__` (which gets no GIL token).
    ///
    /// # Safety
    /// Only from a `__traverse__`: the collector holds the GIL and runs no Python code
    /// while it traverses, so nothing changes the value meanwhile.
    pub unsafe fn in_traverse(&self) -> &T {
        // SAFETY: see the contract above.
        unsafe { &*self.0.get() }
    }
}

/// A value computed with the GIL held on first use and kept for the process's life.
pub struct Cached<T>(OnceLock<T>);

impl<T> Cached<T> {
    pub const fn new() -> Self {
        Cached(OnceLock::new())
    }

    /// The value, computing it with `init` first if needed (two threads may both compute
    /// it; the first stored wins).
    pub fn get_or_try_init<E>(
        &self,
        _py: Python<'_>,
        init: impl FnOnce() -> Result<T, E>,
    ) -> Result<&T, E> {
        if let Some(value) = self.0.get() {
            return Ok(value);
        }
        let value = init()?;
        // With the GIL held, this set is never in progress while another thread forks.
        let _ = self.0.set(value);
        Ok(self.0.get().expect("stored just above"))
    }
}

/// `text` as an interned Python `str`, made once per call site (PyO3's `intern!` without
/// its fork hazard, see the module doc).
macro_rules! intern {
    ($py:expr, $text:expr) => {{
        static INTERNED: $crate::py::Cached<pyo3::Py<pyo3::types::PyString>> =
            $crate::py::Cached::new();
        $crate::py::interned(&INTERNED, $py, $text)
    }};
}

/// The body of [`intern!`].
pub fn interned<'py>(
    cell: &'static Cached<Py<PyString>>,
    py: Python<'py>,
    text: &str,
) -> &'py Bound<'py, PyString> {
    let infallible: Result<_, std::convert::Infallible> =
        cell.get_or_try_init(py, || Ok(PyString::intern(py, text).unbind()));
    match infallible {
        Ok(value) => value.bind(py),
        Err(never) => match never {},
    }
}

static FORMAT_CALLBACK_SOURCE: Cached<Py<PyAny>> = Cached::new();
static EXTRACT_STACK: Cached<Py<PyAny>> = Cached::new();
static FUTURE_TYPE: Cached<Py<PyAny>> = Cached::new();
static TASK_TYPE: Cached<Py<PyAny>> = Cached::new();
static BUFFERED_PROTOCOL_TYPE: Cached<Py<PyAny>> = Cached::new();
static TLS_PROTOCOL_TYPE: Cached<Py<PyAny>> = Cached::new();
static ASYNCIO_LOGGER: Cached<Py<PyAny>> = Cached::new();

/// `module.name`, imported on first use and kept in `cell`.
fn cached_attr<'py>(
    py: Python<'py>,
    cell: &'static Cached<Py<PyAny>>,
    module: &str,
    name: &str,
) -> PyResult<&'py Bound<'py, PyAny>> {
    cell.get_or_try_init(py, || {
        Ok::<_, PyErr>(py.import(module)?.getattr(name)?.unbind())
    })
    .map(|f| f.bind(py))
}

/// `asyncio.format_helpers._format_callback_source(callback, args)`, the text asyncio puts
/// in handle reprs and in "Exception in callback ..." messages. From Python 3.13 on,
/// asyncio shows the arguments only in debug mode (its `debug=` keyword).
pub fn format_callback_source<'py>(
    py: Python<'py>,
    callback: impl IntoPyObject<'py>,
    args: impl IntoPyObject<'py>,
    debug: bool,
) -> PyResult<String> {
    let format = cached_attr(
        py,
        &FORMAT_CALLBACK_SOURCE,
        "asyncio.format_helpers",
        "_format_callback_source",
    )?;
    let positional = (callback, args);
    if debug && py.version_info() >= (3, 13) {
        let kwargs = pyo3::types::PyDict::new(py);
        kwargs.set_item(intern!(py, "debug"), true)?;
        format.call(positional, Some(&kwargs))?.extract()
    } else {
        format.call1(positional)?.extract()
    }
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

/// `ferroloop._tls.TLS_PROTOCOL`, or `None` on Pythons without it (see `transports::tls`).
pub fn tls_protocol_type(py: Python<'_>) -> PyResult<&Bound<'_, PyAny>> {
    cached_attr(py, &TLS_PROTOCOL_TYPE, "ferroloop._tls", "TLS_PROTOCOL")
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

static KWNAMES: [Cached<Py<PyTuple>>; 4] = [
    Cached::new(),
    Cached::new(),
    Cached::new(),
    Cached::new(),
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
