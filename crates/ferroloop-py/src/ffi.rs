//! The only raw CPython calls of the binding.
//!
//! `contextvars` has no fast path in PyO3's safe API for "run this call inside that
//! Context", and going through `Context.run` costs a Python-level call per callback.
//! CPython's `PyContext_Enter`/`PyContext_Exit` are what `Context.run` does internally.

use pyo3::ffi;
use pyo3::prelude::*;

/// A copy of the calling thread's current `contextvars.Context` (asyncio's
/// `contextvars.copy_context()`; O(1), the underlying mapping is shared).
pub fn copy_current_context(py: Python<'_>) -> PyResult<Bound<'_, PyAny>> {
    // SAFETY: attached to the interpreter (we hold `py`); the function returns a new
    // reference or NULL with an exception set, which `from_owned_ptr_or_err` handles.
    unsafe { Bound::from_owned_ptr_or_err(py, ffi::PyContext_CopyCurrent()) }
}

/// Whether `obj` is a `contextvars.Context` (the type cannot be subclassed).
pub fn is_context(obj: &Bound<'_, PyAny>) -> bool {
    // SAFETY: `obj` is a live object; the check only reads its type pointer.
    unsafe { ffi::PyContext_CheckExact(obj.as_ptr()) != 0 }
}

/// Calls `f` with `context` entered as the current context, like `context.run(f)`.
///
/// Entering fails with `RuntimeError` if `context` is already entered somewhere (the same
/// error `Context.run` gives) and with `TypeError` if it is not a `Context`.
pub fn run_in_context<T>(
    py: Python<'_>,
    context: &Bound<'_, PyAny>,
    f: impl FnOnce() -> PyResult<T>,
) -> PyResult<T> {
    // SAFETY: `context` is a live object we hold a reference to; PyContext_Enter checks
    // its type itself and sets an exception on failure.
    if unsafe { ffi::PyContext_Enter(context.as_ptr()) } < 0 {
        return Err(PyErr::fetch(py));
    }
    let result = f();
    // SAFETY: we entered exactly this context above and `f` cannot leave it entered
    // differently: Python code can only enter/exit contexts in balanced pairs.
    if unsafe { ffi::PyContext_Exit(context.as_ptr()) } < 0 {
        let exit_err = PyErr::fetch(py);
        return match result {
            Ok(_) => Err(exit_err),
            Err(err) => Err(err),
        };
    }
    result
}

/// Makes sure the garbage collector tracks `obj`, a freshly created instance of a GC
/// pyclass.
///
/// PyO3's freelist hands out recycled objects without tracking them again (only a fresh
/// `tp_alloc` tracks). A handle the collector cannot see hides its references: a cycle
/// such as `obj -> handle -> obj.method` would never be collected. This restores the
/// invariant "every live handle is tracked" at the one place handles are created.
pub fn ensure_gc_tracked(obj: &Bound<'_, PyAny>) {
    // SAFETY: `obj` is a live, fully initialised instance of a type with Py_TPFLAGS_HAVE_GC
    // (pyclasses with `__traverse__`); tracking it once is what `tp_alloc` would have done,
    // and the IsTracked check guarantees we never track it twice.
    unsafe {
        if ffi::PyObject_GC_IsTracked(obj.as_ptr()) == 0 {
            ffi::PyObject_GC_Track(obj.as_ptr().cast());
        }
    }
}

/// `callable(*positional, **dict(zip(kwnames, keyword_values)))` through vectorcall, with
/// `args` = positional values followed by keyword values. Unlike `call(args, kwargs)` it
/// builds neither an argument tuple nor a keyword dict (the dict is a GC allocation,
/// which on hot paths such as `create_future` brings garbage collections forward).
pub fn vectorcall<'py, const N: usize>(
    callable: &Bound<'py, PyAny>,
    args: [&Bound<'py, PyAny>; N],
    kwnames: &Bound<'py, pyo3::types::PyTuple>,
) -> PyResult<Bound<'py, PyAny>> {
    let py = callable.py();
    let positional = N - kwnames.len();
    let pointers = args.map(|arg| arg.as_ptr());
    // SAFETY: `pointers` holds N borrowed references kept alive by `args` for the whole
    // call; `kwnames` is a tuple of `N - positional` strings naming the trailing ones, as
    // the vectorcall protocol requires; the result is a new reference or NULL with an
    // exception set, which `from_owned_ptr_or_err` turns into `Err`.
    unsafe {
        Bound::from_owned_ptr_or_err(
            py,
            ffi::PyObject_Vectorcall(
                callable.as_ptr(),
                pointers.as_ptr(),
                positional,
                kwnames.as_ptr(),
            ),
        )
    }
}
