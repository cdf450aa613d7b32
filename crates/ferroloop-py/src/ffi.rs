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

/// Whether `context`, a `contextvars.Context`, holds no variables.
pub fn context_is_empty(context: &Bound<'_, PyAny>) -> bool {
    // SAFETY: `context` is a live Context and the GIL is held; its length is the size of
    // its immutable mapping, read without running Python code (never fails for a Context).
    unsafe { ffi::PyObject_Size(context.as_ptr()) == 0 }
}

/// Whether the calling thread holds the GIL (for `Drop`s, which get no token).
pub fn gil_held() -> bool {
    // SAFETY: callable from any thread, attached or not; it only reads thread state.
    unsafe { ffi::PyGILState_Check() != 0 }
}

extern "C" {
    // Not in pyo3-ffi; part of CPython's C API since 3.0 (`Objects/classobject.c`).
    fn PyInstanceMethod_New(func: *mut ffi::PyObject) -> *mut ffi::PyObject;
}

/// `func` wrapped so that, as a class attribute, it binds to instances as a Python
/// function does (`instance.name(x)` calls `func(instance, x)`); built-in functions
/// alone do not bind.
pub fn instance_method<'py>(func: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyAny>> {
    // SAFETY: `func` is a live callable; the call returns a new reference or NULL with
    // an exception set, which `from_owned_ptr_or_err` handles.
    unsafe { Bound::from_owned_ptr_or_err(func.py(), PyInstanceMethod_New(func.as_ptr())) }
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

/// Makes sure the garbage collector tracks `obj`, a fully initialised instance of a GC
/// type (a freshly created handle; a callback's context about to be shared).
///
/// PyO3's freelist hands out recycled objects without tracking them again (only a fresh
/// `tp_alloc` tracks). A handle the collector cannot see hides its references: a cycle
/// such as `obj -> handle -> obj.method` would never be collected. This restores the
/// invariant "every live handle is tracked" at the one place handles are created.
pub fn ensure_gc_tracked(obj: &Bound<'_, PyAny>) {
    // SAFETY: `obj` is a live, fully initialised instance of a type with Py_TPFLAGS_HAVE_GC
    // (pyclasses with `__traverse__`, `contextvars.Context`); tracking it once is what its
    // allocation did, and the IsTracked check guarantees we never track it twice.
    unsafe {
        if ffi::PyObject_GC_IsTracked(obj.as_ptr()) == 0 {
            ffi::PyObject_GC_Track(obj.as_ptr().cast());
        }
    }
}

/// Makes sure the garbage collector does not track `obj`, a freshly created instance of
/// a GC type (see `queued::Queued`: a handle only the loop's queues hold; and
/// `handles::RunContext`). A type whose dealloc untracks without checking (Context's
/// does, from 3.12) must be tracked again before its last reference goes.
pub fn ensure_gc_untracked(obj: &Bound<'_, PyAny>) {
    // SAFETY: `obj` is a live instance of a GC type and the GIL is held (we have a
    // `Bound`); untracking an object that nothing traverses yet is always allowed.
    unsafe {
        if ffi::PyObject_GC_IsTracked(obj.as_ptr()) != 0 {
            ffi::PyObject_GC_UnTrack(obj.as_ptr().cast());
        }
    }
}

/// Whether the garbage collector tracks `obj`. Call with the GIL held (the collector
/// holds it while it calls `__traverse__`, which gets no GIL token).
pub fn is_gc_tracked(obj: &Py<impl pyo3::PyClass>) -> bool {
    // SAFETY: `obj` is a live object and the GIL is held (see above); the call only
    // reads its GC header.
    unsafe { ffi::PyObject_GC_IsTracked(obj.as_ptr()) != 0 }
}

/// Before the caller drops its reference to `obj` (an instance of a GC pyclass): if
/// someone else still holds `obj` and the collector does not track it, track it now, so
/// that from now on the collector sees the references it holds.
///
/// Called from `Drop`, which has no GIL token: it checks that the GIL is held and does
/// nothing otherwise (the object then stays untracked: a cycle through it could not be
/// collected, but nothing breaks).
pub fn track_if_shared(obj: &Py<impl pyo3::PyClass>) {
    let ptr = obj.as_ptr();
    // SAFETY: the refcount of an object we hold a reference to is read first, without
    // asking for the GIL (a pointer-sized aligned read: at worst stale if a caller broke
    // the rule, and the GIL is checked before anything changes); with the GIL held,
    // reading the tracking state is sound, and an initialised GC object that is not
    // tracked may be tracked at any time.
    unsafe {
        if ffi::Py_REFCNT(ptr) > 1
            && ffi::PyGILState_Check() != 0
            && ffi::PyObject_GC_IsTracked(ptr) == 0
        {
            ffi::PyObject_GC_Track(ptr.cast());
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

/// A free list for one pyclass: `tp_free` keeps up to `capacity` dead objects' memory and
/// `tp_alloc` hands it out again, so a hot class (handles: one per callback) skips the
/// allocator and, more important, does not count as a new allocation for the garbage
/// collector's generation-0 threshold.
///
/// It replaces PyO3's `freelist = N`, which takes a mutex on every allocation and free.
/// This one needs no lock: CPython calls `tp_alloc` and `tp_free` with the GIL held, and
/// the module is declared `gil_used` (a free-threaded build re-enables the GIL for it).
/// Recycled objects come back untracked (PyO3's `tp_dealloc` untracks before freeing);
/// [`ensure_gc_tracked`] tracks them again once they are initialised.
pub struct ObjectCache {
    objects: std::cell::UnsafeCell<Vec<*mut ffi::PyObject>>,
    capacity: usize,
    class: std::sync::atomic::AtomicPtr<ffi::PyTypeObject>,
}

// SAFETY: `objects` is only touched by `cached_alloc`/`cached_free` (and `install`
// before any of them runs), which CPython calls with the GIL held: one thread at a time.
unsafe impl Sync for ObjectCache {}

impl ObjectCache {
    /// An empty cache for up to `capacity` objects.
    pub const fn new(capacity: usize) -> Self {
        ObjectCache {
            objects: std::cell::UnsafeCell::new(Vec::new()),
            capacity,
            class: std::sync::atomic::AtomicPtr::new(std::ptr::null_mut()),
        }
    }
}

/// A pyclass whose objects are recycled through an [`ObjectCache`].
pub trait CachedClass: pyo3::PyClass {
    /// The class's one cache.
    fn cache() -> &'static ObjectCache;
}

/// Makes `T`'s type allocate from and free into `T::cache()`. Called once, when the
/// module is initialised, before any `T` exists.
pub fn install_object_cache<T: CachedClass>(py: Python<'_>) {
    let class = T::type_object_raw(py);
    let cache = T::cache();
    cache.class.store(class, std::sync::atomic::Ordering::Relaxed);
    // SAFETY: the GIL is held and no object of `T` exists yet, so nothing reads the
    // cache or the slots meanwhile; `class` is `T`'s heap type object, whose slots are
    // writable, and `PyType_Modified` drops any cached lookups of them.
    unsafe {
        (*cache.objects.get()).reserve_exact(cache.capacity);
        (*class).tp_alloc = Some(cached_alloc::<T>);
        (*class).tp_free = Some(cached_free::<T>);
        ffi::PyType_Modified(class);
    }
}

/// `tp_alloc` of a cached class: a recycled object when one is there.
unsafe extern "C" fn cached_alloc<T: CachedClass>(
    subtype: *mut ffi::PyTypeObject,
    nitems: ffi::Py_ssize_t,
) -> *mut ffi::PyObject {
    let cache = T::cache();
    if nitems == 0 && subtype == cache.class.load(std::sync::atomic::Ordering::Relaxed) {
        // SAFETY: called by CPython with the GIL held (see `ObjectCache`); a cached
        // pointer is the memory of a dead object of exactly this type, which
        // `PyObject_Init` makes a new reference of that type again.
        unsafe {
            if let Some(obj) = (*cache.objects.get()).pop() {
                return ffi::PyObject_Init(obj, subtype);
            }
        }
    }
    // SAFETY: the default allocation, as if the slot had not been replaced.
    unsafe { ffi::PyType_GenericAlloc(subtype, nitems) }
}

/// `tp_free` of a cached class: keeps the memory while the cache has room.
unsafe extern "C" fn cached_free<T: CachedClass>(obj: *mut std::ffi::c_void) {
    let cache = T::cache();
    let obj = obj.cast::<ffi::PyObject>();
    // SAFETY: called by CPython (from PyO3's `tp_dealloc`) with the GIL held, for an
    // object whose contents are dropped and which the collector no longer tracks.
    unsafe {
        let objects = &mut *cache.objects.get();
        let class = cache.class.load(std::sync::atomic::Ordering::Relaxed);
        if objects.len() < cache.capacity && ffi::Py_TYPE(obj) == class {
            objects.push(obj);
        } else {
            ffi::PyObject_GC_Del(obj.cast());
        }
    }
}

/// A new `bytes` of at most `capacity` bytes, written in place by `fill`: it gets the
/// object's uninitialised buffer and returns how many bytes it initialised (or an error,
/// and the object is discarded). One allocation, no copy: CPython's `PyBytesWriter`
/// (pyo3's shim of it before 3.15: `PyBytes_FromStringAndSize(NULL, n)` + resize).
/// The outer `Err` is a failed allocation (`MemoryError`).
pub fn bytes_filled_in_place<'py>(
    py: Python<'py>,
    capacity: usize,
    fill: impl FnOnce(&mut [std::mem::MaybeUninit<u8>]) -> std::io::Result<usize>,
) -> PyResult<std::io::Result<Bound<'py, pyo3::types::PyBytes>>> {
    use pyo3::ffi::compat;
    // SAFETY: attached (we hold `py`); Create returns NULL with an exception set on
    // failure.
    let writer = unsafe { compat::PyBytesWriter_Create(capacity as ffi::Py_ssize_t) };
    if writer.is_null() {
        return Err(PyErr::fetch(py));
    }
    // SAFETY: a writer created with `capacity` owns a buffer of at least that many bytes,
    // valid and used by nothing else until Finish or Discard below.
    let buf = unsafe {
        std::slice::from_raw_parts_mut(
            compat::PyBytesWriter_GetData(writer).cast::<std::mem::MaybeUninit<u8>>(),
            capacity,
        )
    };
    match fill(buf) {
        Ok(n) => {
            let n = n.min(capacity);
            // SAFETY: `fill` initialised the first `n` bytes; FinishWithSize consumes the
            // writer and returns a new reference to a `bytes` (or NULL with an exception).
            let obj = unsafe { compat::PyBytesWriter_FinishWithSize(writer, n as ffi::Py_ssize_t) };
            // SAFETY: as above: an owned reference or NULL.
            let bytes = unsafe { Bound::from_owned_ptr_or_err(py, obj) }?;
            // SAFETY: FinishWithSize returns a `bytes` object.
            Ok(Ok(unsafe { bytes.cast_into_unchecked() }))
        }
        Err(err) => {
            // SAFETY: the writer is still ours (not finished); Discard frees it.
            unsafe { compat::PyBytesWriter_Discard(writer) };
            Ok(Err(err))
        }
    }
}
