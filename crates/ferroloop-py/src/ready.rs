//! What the driver queues for a Python loop: ready entries and fd owners.
//!
//! An fd is owned by a Python callback (`add_reader`/`add_writer`: a [`Handle`]), by a
//! native transport, which handles its own readiness in Rust and calls its protocol, by a
//! `sock_recv`/`sock_sendall` waiting for its socket, or by a child watch (a subprocess's
//! pidfd).
//! The driver never looks inside: `event_loop::run` turns owners into [`Ready`] entries
//! and runs them.

use ferroloop_core::Side;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::PyTraverseError;

use crate::handles::{Callback, Handle, TimerHandle};
use crate::process::ChildWatch;
use crate::queued::Queued;
use crate::sock::SockWait;
use crate::transports::NativeTransport;

/// The reader or writer of an fd.
pub enum FdOwner {
    /// `add_reader`/`add_writer`.
    Callback(Py<Handle>),
    /// A native transport's socket.
    Transport(NativeTransport),
    /// A child process's pidfd.
    Child(Py<ChildWatch>),
    /// A `sock_recv`/`sock_sendall` waiting for its socket.
    Sock(Py<SockWait>),
    /// The read end of the signal handlers' wake-up pipe.
    Signals,
}

impl FdOwner {
    /// The entry to run now that the fd is ready on `side`; `None` if the owner was
    /// cancelled (a cancelled `add_reader` handle unregisters itself, as in asyncio).
    pub fn ready_entry(&self, py: Python<'_>, side: Side) -> Option<Ready> {
        match self {
            FdOwner::Callback(handle) if handle.get().inner.is_cancelled() => None,
            FdOwner::Callback(handle) => Some(Ready::Handle(Queued::new(handle.clone_ref(py)))),
            FdOwner::Transport(transport) => Some(Ready::Transport(transport.clone_ref(py), side)),
            FdOwner::Child(watch) => Some(Ready::Child(watch.clone_ref(py))),
            FdOwner::Sock(wait) => Some(Ready::Sock(wait.clone_ref(py))),
            FdOwner::Signals => Some(Ready::Signals),
        }
    }

    /// Tells a callback owner it lost its fd (replaced, removed, gone after a fork).
    pub fn cancel(&self, py: Python<'_>) {
        if let FdOwner::Callback(handle) = self {
            handle.get().cancel(py);
        }
    }

    /// The loop will never call this owner again (the fd did not survive a fork, or it
    /// is the parent's): a transport lets go of its face (see
    /// `transports::core::Common::face`).
    pub fn release_face(&self, py: Python<'_>) {
        if let FdOwner::Transport(transport) = self {
            transport.release_face(py);
        }
    }

    /// The loop closed: transports let go of their face; a child still running is left
    /// to a reaping thread.
    pub fn loop_closed(&self, py: Python<'_>) {
        match self {
            FdOwner::Transport(transport) => transport.release_face(py),
            FdOwner::Child(watch) => watch.get().reap_in_background(),
            FdOwner::Callback(_) | FdOwner::Sock(_) | FdOwner::Signals => {}
        }
    }

    /// Reports the reference the owner holds to the garbage collector.
    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            FdOwner::Callback(h) => visit.call(h),
            FdOwner::Transport(t) => t.traverse(visit),
            FdOwner::Child(w) => visit.call(w),
            FdOwner::Sock(w) => visit.call(w),
            FdOwner::Signals => Ok(()),
        }
    }
}

/// An entry of the ready queue.
pub enum Ready {
    /// From `call_soon`, `call_soon_threadsafe` or an fd readiness callback.
    Handle(Queued<Handle>),
    /// A timer whose deadline passed.
    Timer(Queued<TimerHandle>),
    /// A native transport's socket is ready on this side.
    Transport(NativeTransport, Side),
    /// A child process exited (its pidfd turned readable).
    Child(Py<ChildWatch>),
    /// A waiting `sock_recv`/`sock_sendall`'s socket is ready.
    Sock(Py<SockWait>),
    /// Signals were caught (their numbers wait in the wake-up pipe).
    Signals,
}

impl Ready {
    /// The Python callback to run, for handles and timers.
    pub fn callback(&self) -> Option<&Callback> {
        match self {
            Ready::Handle(h) => Some(&h.get().inner),
            Ready::Timer(t) => Some(&t.get().inner),
            Ready::Transport(..) | Ready::Child(_) | Ready::Sock(_) | Ready::Signals => None,
        }
    }

    /// Whether the entry was cancelled (it is skipped).
    pub fn is_cancelled(&self) -> bool {
        self.callback().is_some_and(Callback::is_cancelled)
    }

    /// The object user code sees for this entry (exception contexts, logs, `_ready`).
    pub fn object(&self, py: Python<'_>) -> Py<PyAny> {
        match self {
            Ready::Handle(h) => h.object(py),
            Ready::Timer(t) => t.object(py),
            Ready::Transport(t, _) => t.object(py),
            Ready::Child(w) => w.clone_ref(py).into_any(),
            Ready::Sock(w) => w.get().object(py),
            Ready::Signals => py.None(),
        }
    }

    /// Reports the references the entry holds to the garbage collector.
    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            Ready::Handle(h) => h.traverse(visit),
            Ready::Timer(t) => t.traverse(visit),
            Ready::Transport(t, _) => t.traverse(visit),
            Ready::Child(w) => visit.call(w),
            Ready::Sock(w) => visit.call(w),
            Ready::Signals => Ok(()),
        }
    }
}
