//! `Handle` and `TimerHandle`: what `call_soon`/`call_later` return and what the ready
//! queue and the timer heap hold.
//!
//! Both are `frozen` pyclasses recycled through a lock-free free list of 8192 objects
//! ([`ffi::ObjectCache`]); the hot path allocates one per callback. The free list matters
//! less for malloc than for the garbage collector: a recycled handle does not count as a
//! new GC allocation, so batches of thousands of queued handles trigger far fewer
//! generation-0 collections (measured: `call_soon` throughput 4.0M/s without one,
//! 5.8M/s with PyO3's, which takes a mutex per allocation and per free).
//! Their shared state is [`Callback`] — the callable, its arguments, the
//! `contextvars.Context` it runs in and an atomic "cancelled" flag. As in asyncio,
//! `cancel()` lets go of the callable and its arguments at once (what they reference is
//! freed then, not when the loop drops the handle from its queues; in debug mode the
//! handle's repr is kept instead); the loop discards cancelled handles when it meets
//! them, and the timer heap is compacted when cancelled timers dominate it.
//!
//! Invariant: the callable and arguments live in a [`GilCell`], read and replaced only
//! with the GIL held and never borrowed across a call into Python (readers take new
//! references first), so a callback that cancels its own handle is safe.
//!
//! A `TimerHandle` also knows whether it is still queued (`scheduled`) and shares the
//! timer queue's cancel counter, which it bumps when cancelled while queued (see
//! `ferroloop_core::TimerQueue`).

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;

use pyo3::exceptions::PyTypeError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::pyclass::CompareOp;
use pyo3::types::{PyBool, PyFloat, PyTuple};
use pyo3::PyTraverseError;

use crate::ffi;
use crate::py;
use crate::py::GilCell;
use crate::queued::Queued;
use crate::run_context::RunContext;

/// What a handle would call: the callable and its arguments until `cancel()`.
enum Target {
    Live {
        callback: Py<PyAny>,
        args: Py<PyTuple>,
    },
    /// Cancelled: asyncio's `_callback`/`_args` are `None`; debug mode keeps the repr.
    Released { repr: Option<String> },
}

/// The callable, arguments and context of a scheduled callback.
pub struct Callback {
    target: GilCell<Target>,
    context: RunContext,
    cancelled: AtomicBool,
    /// Debug mode only: where the callback was scheduled (asyncio's `_source_traceback`,
    /// a `traceback.StackSummary` whose last entry is the scheduling line).
    source_traceback: Option<Py<PyAny>>,
}

impl Callback {
    /// A callback running in `context`, or in a copy of the current context if `None`
    /// (asyncio's rule). With `debug`, records the Python stack that scheduled it.
    pub fn new(
        py: Python<'_>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
        debug: bool,
    ) -> PyResult<Self> {
        let context = match context {
            Some(ctx) if !ctx.is_none() => {
                // asyncio accepts anything and fails only when the callback runs, inside
                // the loop; refusing it here names the caller.
                if !ffi::is_context(&ctx) {
                    return Err(PyTypeError::new_err(format!(
                        "context must be a contextvars.Context, not {}",
                        ctx.get_type().name()?
                    )));
                }
                RunContext::given(ctx)
            }
            _ => RunContext::copy_current(py)?,
        };
        let source_traceback = if debug {
            Some(py::extract_stack(py)?.unbind())
        } else {
            None
        };
        Ok(Callback {
            target: GilCell::new(Target::Live {
                callback: callback.unbind(),
                args: args.unbind(),
            }),
            context,
            cancelled: AtomicBool::new(false),
            source_traceback,
        })
    }

    /// The scheduling stack recorded in debug mode.
    pub fn source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        self.source_traceback.as_ref().map(|tb| tb.clone_ref(py))
    }

    /// New references to the callable and its arguments (`None` once cancelled).
    fn target<'py>(&self, py: Python<'py>) -> Option<(Bound<'py, PyAny>, Bound<'py, PyTuple>)> {
        self.target.with(py, |target| match target {
            Target::Live { callback, args } => {
                Some((callback.bind(py).clone(), args.bind(py).clone()))
            }
            Target::Released { .. } => None,
        })
    }

    /// The callable, until cancelled.
    pub(crate) fn callable<'py>(&self, py: Python<'py>) -> Option<Bound<'py, PyAny>> {
        self.target(py).map(|(callback, _)| callback)
    }

    /// The callable (`None` once cancelled), as asyncio's `_callback`.
    fn callback_or_none(&self, py: Python<'_>) -> Py<PyAny> {
        self.target(py).map_or_else(|| py.None(), |(callback, _)| callback.unbind())
    }

    /// The arguments (`None` once cancelled), as asyncio's `_args`.
    fn args_or_none(&self, py: Python<'_>) -> Py<PyAny> {
        self.target(py).map_or_else(|| py.None(), |(_, args)| args.into_any().unbind())
    }

    /// Calls the callable with its arguments inside its context (nothing once cancelled:
    /// a handle cancelled after the loop took it from the queue does not run).
    pub fn run(&self, py: Python<'_>) -> PyResult<()> {
        let Some((callback, args)) = self.target(py) else {
            return Ok(());
        };
        ffi::run_in_context(py, self.context.shared(py), || {
            if args.is_empty() {
                callback.call0()?;
            } else {
                callback.call1(args)?;
            }
            Ok(())
        })
    }

    /// Marks cancelled and lets go of the callable and arguments (keeping the repr that
    /// `describe` gives now in debug mode); returns whether it was not cancelled before.
    fn cancel(&self, py: Python<'_>, describe: impl FnOnce() -> PyResult<String>) -> bool {
        if self.cancelled.swap(true, Ordering::AcqRel) {
            return false;
        }
        // asyncio keeps the repr in debug mode (for "Executing <Handle ...> took 2.5 s");
        // a repr that fails leaves it to be described as cancelled without its callable.
        let repr = match self.source_traceback {
            Some(_) => describe().ok(),
            None => None,
        };
        let old = self.target.replace(py, Target::Released { repr });
        drop(old); // may run Python code (finalizers): after the cell is consistent
        true
    }

    /// Whether `cancel()` was called.
    pub fn is_cancelled(&self) -> bool {
        self.cancelled.load(Ordering::Acquire)
    }

    /// asyncio's description of the callable and its arguments (`None()` once
    /// cancelled, as asyncio's).
    pub fn source(&self, py: Python<'_>) -> PyResult<String> {
        py::format_callback_source(
            py,
            self.callback_or_none(py),
            self.args_or_none(py),
            self.source_traceback.is_some(),
        )
    }

    /// asyncio's handle repr: `<Class [cancelled] [when=T] [source]>`, or the one kept
    /// at `cancel()` in debug mode.
    fn describe(&self, py: Python<'_>, class: &str, when: Option<f64>) -> PyResult<String> {
        let kept = self.target.with(py, |target| match target {
            Target::Released { repr } => repr.clone(),
            Target::Live { .. } => None,
        });
        if let Some(repr) = kept {
            return Ok(repr);
        }
        let mut parts = vec![class.to_owned()];
        let cancelled = self.is_cancelled();
        if cancelled {
            parts.push("cancelled".to_owned());
        }
        if let Some(when) = when {
            // Python's repr of the float, as asyncio's f-string prints it.
            parts.push(format!("when={}", PyFloat::new(py, when).repr()?));
        }
        // asyncio forgets the callable at cancel() (debug mode kept the repr, above).
        if let Some((callback, args)) = self.target(py) {
            let debug = self.source_traceback.is_some();
            parts.push(py::format_callback_source(py, callback, args, debug)?);
        }
        if let Some(tb) = &self.source_traceback {
            let tb = tb.bind(py);
            if tb.len()? > 0 {
                let frame = tb.get_item(-1)?;
                let (file, line) = (frame.get_item(0)?, frame.get_item(1)?);
                parts.push(format!("created at {file}:{line}"));
            }
        }
        Ok(format!("<{}>", parts.join(" ")))
    }

    pub(crate) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        // SAFETY: the collector calls tp_traverse with the GIL held and visiting runs no
        // Python code, so nothing replaces the target meanwhile (see `GilCell`).
        if let Target::Live { callback, args } = unsafe { self.target.in_traverse() } {
            visit.call(callback)?;
            visit.call(args)?;
        }
        self.context.traverse(visit)?;
        if let Some(tb) = &self.source_traceback {
            visit.call(tb)?;
        }
        Ok(())
    }
}

/// Allocates a handle pyclass, tracked by the collector or not (see `crate::queued`:
/// handles only the loop's queues hold are not).
fn new_handle<T>(py: Python<'_>, value: T, tracked: bool) -> PyResult<Py<T>>
where
    T: pyo3::PyClass + Into<pyo3::PyClassInitializer<T>>,
{
    let obj = Bound::new(py, value)?;
    if tracked {
        ffi::ensure_gc_tracked(obj.as_any());
    } else {
        ffi::ensure_gc_untracked(obj.as_any());
    }
    Ok(obj.unbind())
}

/// A callback scheduled with `call_soon`, `call_soon_threadsafe` or `add_reader`.
#[pyclass(frozen, weakref, module = "ferroloop._ferroloop")]
pub struct Handle {
    pub(crate) inner: Callback,
}

/// How many dead handles of each class are kept for reuse.
const CACHED_HANDLES: usize = 8192;
static HANDLE_CACHE: ffi::ObjectCache = ffi::ObjectCache::new(CACHED_HANDLES);
static TIMER_HANDLE_CACHE: ffi::ObjectCache = ffi::ObjectCache::new(CACHED_HANDLES);

impl ffi::CachedClass for Handle {
    fn cache() -> &'static ffi::ObjectCache {
        &HANDLE_CACHE
    }
}

impl ffi::CachedClass for TimerHandle {
    fn cache() -> &'static ffi::ObjectCache {
        &TIMER_HANDLE_CACHE
    }
}

/// Makes both handle classes allocate through their caches (module initialisation).
pub fn install_caches(py: Python<'_>) {
    ffi::install_object_cache::<Handle>(py);
    ffi::install_object_cache::<TimerHandle>(py);
}

impl Handle {
    /// A new, GC-tracked handle for `inner` (an fd callback).
    pub fn create(py: Python<'_>, inner: Callback) -> PyResult<Py<Handle>> {
        new_handle(py, Handle { inner }, true)
    }

    /// A new handle for `inner` about to be pushed into the ready queue: not tracked by
    /// the collector while it is queued (see `crate::queued`).
    pub fn create_queued(py: Python<'_>, inner: Callback) -> PyResult<Queued<Handle>> {
        new_handle(py, Handle { inner }, false).map(Queued::new)
    }
}

/// The `#[pymethods]` both handle classes share (they wrap the same [`Callback`]), plus
/// the class's own methods given in braces.
macro_rules! handle_pymethods {
    ($class:ident { $($own:tt)* }) => {
        #[pymethods]
        impl $class {
            fn cancelled(&self) -> bool {
                self.inner.is_cancelled()
            }

            fn get_context(&self, py: Python<'_>) -> Py<PyAny> {
                self.inner.context.shared(py).clone().unbind()
            }

            /// Runs the callback now, in its context (errors propagate to the caller).
            fn _run(&self, py: Python<'_>) -> PyResult<()> {
                self.inner.run(py)
            }

            #[getter]
            fn _callback(&self, py: Python<'_>) -> Py<PyAny> {
                self.inner.callback_or_none(py)
            }

            #[getter]
            fn _args(&self, py: Python<'_>) -> Py<PyAny> {
                self.inner.args_or_none(py)
            }

            #[getter]
            fn _source_traceback(&self, py: Python<'_>) -> Option<Py<PyAny>> {
                self.inner.source_traceback(py)
            }

            fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
                self.inner.traverse(&visit)
            }

            $($own)*
        }
    };
}

handle_pymethods!(Handle {
    /// Prevents the callback from running if it has not run yet.
    pub(crate) fn cancel(&self, py: Python<'_>) {
        self.inner
            .cancel(py, || self.inner.describe(py, "Handle", None));
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        self.inner.describe(py, "Handle", None)
    }
});

/// A callback scheduled with `call_later` or `call_at`.
#[pyclass(frozen, weakref, module = "ferroloop._ferroloop")]
pub struct TimerHandle {
    pub(crate) inner: Callback,
    when: f64,
    pub(crate) scheduled: AtomicBool,
    cancel_counter: Arc<AtomicUsize>,
}

impl TimerHandle {
    /// A new timer about to be pushed into the queue owning `cancel_counter`: not
    /// tracked by the collector while it is queued (see `crate::queued`).
    pub fn create(
        py: Python<'_>,
        inner: Callback,
        when: f64,
        cancel_counter: Arc<AtomicUsize>,
    ) -> PyResult<Queued<TimerHandle>> {
        let scheduled = AtomicBool::new(true);
        let timer = TimerHandle {
            inner,
            when,
            scheduled,
            cancel_counter,
        };
        new_handle(py, timer, false).map(Queued::new)
    }
}

handle_pymethods!(TimerHandle {
    /// Prevents the callback from running; tells the timer queue if still queued.
    fn cancel(&self, py: Python<'_>) {
        let describe = || self.inner.describe(py, "TimerHandle", Some(self.when));
        if self.inner.cancel(py, describe) && self.scheduled.load(Ordering::Acquire) {
            self.cancel_counter.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// The absolute loop time the callback is scheduled for.
    fn when(&self) -> f64 {
        self.when
    }

    #[getter]
    fn _scheduled(&self) -> bool {
        self.scheduled.load(Ordering::Acquire)
    }

    fn __repr__(&self, py: Python<'_>) -> PyResult<String> {
        self.inner.describe(py, "TimerHandle", Some(self.when))
    }

    /// asyncio's timer order: by deadline; equal when deadline, callable, arguments and
    /// cancelled state are equal. Other types are not comparable (`NotImplemented`).
    fn __richcmp__(
        &self,
        py: Python<'_>,
        other: &Bound<'_, PyAny>,
        op: CompareOp,
    ) -> PyResult<Py<PyAny>> {
        let Ok(other) = other.cast::<TimerHandle>() else {
            return Ok(py.NotImplemented());
        };
        let other = other.get();
        let result = match op {
            CompareOp::Lt => self.when < other.when,
            CompareOp::Gt => self.when > other.when,
            CompareOp::Le => self.when < other.when || self.same_call(py, other)?,
            CompareOp::Ge => self.when > other.when || self.same_call(py, other)?,
            CompareOp::Eq => self.same_call(py, other)?,
            CompareOp::Ne => !self.same_call(py, other)?,
        };
        Ok(PyBool::new(py, result).to_owned().into_any().unbind())
    }

    /// `hash(when)`, as asyncio's.
    fn __hash__(&self, py: Python<'_>) -> PyResult<isize> {
        PyFloat::new(py, self.when).hash()
    }
});

impl TimerHandle {
    /// asyncio's `TimerHandle.__eq__`: same deadline, callable, arguments and state.
    fn same_call(&self, py: Python<'_>, other: &TimerHandle) -> PyResult<bool> {
        if std::ptr::eq(self, other) {
            return Ok(true);
        }
        Ok(self.when == other.when
            && self
                .inner
                .callback_or_none(py)
                .bind(py)
                .eq(other.inner.callback_or_none(py))?
            && self
                .inner
                .args_or_none(py)
                .bind(py)
                .eq(other.inner.args_or_none(py))?
            && self.inner.is_cancelled() == other.inner.is_cancelled())
    }
}

