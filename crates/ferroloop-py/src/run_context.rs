//! [`RunContext`]: the `contextvars.Context` a scheduled callback runs in, and what the
//! garbage collector sees of it.
//!
//! `call_soon(cb)` without `context=` runs `cb` in a copy of the caller's context, as
//! asyncio does: one new Context object per callback. The collector tracks every
//! Context, so a burst of queued callbacks (a `call_soon_threadsafe` producer queues tens
//! of thousands between two iterations) made every generation-0 and -1 collection walk
//! all their contexts: measured a third of the CPU of a threadsafe burst, a sixth of a
//! `call_soon` batch. A copy that holds **no variables** can hide from the collector
//! while it waits: its only reference is the empty mapping, so no cycle can pass through
//! it. Such a copy is created untracked and tracked again before anyone but this
//! `RunContext` can reach it.
//!
//! Invariants:
//! * untracked ⇒ the copy was made here, holds no variables, and this `RunContext`
//!   holds the only reference to it;
//! * it is tracked again before it is entered to run the callback, before it is handed
//!   out (`Handle.get_context()`), and before the last reference is dropped (from 3.12,
//!   Context's dealloc unlinks it from the collector's lists without checking that it
//!   is in one); a drop without the GIL, which cannot track, leaks the copy instead;
//! * a context the caller passed (`context=`) is never untracked.

use std::mem::ManuallyDrop;
use std::sync::atomic::{AtomicBool, Ordering};

use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::PyTraverseError;

use crate::ffi;

/// A callback's context (see the module docs).
pub struct RunContext {
    context: ManuallyDrop<Py<PyAny>>,
    /// Whether the collector does not track `context` (changed only with the GIL held).
    untracked: AtomicBool,
}

impl RunContext {
    /// `context`, given by the caller: stays as the collector has it.
    pub fn given(context: Bound<'_, PyAny>) -> Self {
        RunContext {
            context: ManuallyDrop::new(context.unbind()),
            untracked: AtomicBool::new(false),
        }
    }

    /// A copy of the calling thread's current context, untracked if it holds no
    /// variables.
    pub fn copy_current(py: Python<'_>) -> PyResult<Self> {
        let context = ffi::copy_current_context(py)?;
        let untracked = ffi::context_is_empty(&context);
        if untracked {
            ffi::ensure_gc_untracked(&context);
        }
        Ok(RunContext {
            context: ManuallyDrop::new(context.unbind()),
            untracked: AtomicBool::new(untracked),
        })
    }

    /// The context, tracked from now on: to enter it or to hand it out.
    pub fn shared<'py>(&self, py: Python<'py>) -> &Bound<'py, PyAny> {
        let context = self.context.bind(py);
        if self.untracked.swap(false, Ordering::Relaxed) {
            ffi::ensure_gc_tracked(context);
        }
        context
    }

    /// Reports the context to the collector (visiting an untracked object is a no-op
    /// for it).
    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&*self.context)
    }
}

impl Drop for RunContext {
    fn drop(&mut self) {
        if self.untracked.load(Ordering::Relaxed) {
            if !ffi::gil_held() {
                // Cannot track without the GIL, and an untracked Context must not be
                // deallocated: leak it (never seen: handles are freed with the GIL).
                return;
            }
            // SAFETY: the GIL is held (checked above), so a `Python` token is valid here.
            let py = unsafe { Python::assume_attached() };
            self.shared(py);
        }
        // SAFETY: `context` is dropped exactly once, here, and never used afterwards.
        unsafe { ManuallyDrop::drop(&mut self.context) };
    }
}
