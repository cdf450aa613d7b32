//! End of life and process events: `close()`, the child side of `fork()`, and the
//! garbage collector's view of what the loop holds.

use std::collections::VecDeque;
use std::sync::atomic::Ordering;

use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::PyTraverseError;

use super::LoopCore;
use crate::errors::os_error;
use crate::ready::FdOwner;

impl LoopCore {
    /// Marks the loop closed, drops everything queued and closes the poller and waker
    /// fds (idempotent). A thread racing us in `call_soon_threadsafe` either saw `closed`
    /// already or finds the waker closed.
    pub(super) fn close_core(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.discard_queued();
        self.close_signal_pipe();
        self.driver.close_fds();
    }

    /// Empties every queue. What was queued is dropped only after the driver's locks are
    /// released (destructors may run Python code that calls the loop).
    pub(super) fn discard_queued(&self) {
        let discarded = self.driver.discard_all();
        let staged = Python::attach(|py| {
            for owner in &discarded.2 {
                owner.loop_closed(py);
            }
            self.staged.replace(py, VecDeque::new())
        });
        drop(discarded);
        drop(staged);
    }

    /// See `_after_fork_in_child`. Fds that did not survive the fork lose their callbacks.
    pub(super) fn after_fork_in_child(&self) -> PyResult<()> {
        if self.is_closed() {
            return Ok(());
        }
        // The parent's transports and children stay the parent's: the child's loop keeps
        // only `add_reader`/`add_writer` callbacks and `sock_*` waits (asyncio's are
        // readers and writers too), and the signal pipe, renewed below.
        let keep = |owner: &FdOwner| {
            matches!(owner, FdOwner::Callback(_) | FdOwner::Sock(_) | FdOwner::Signals)
        };
        // SAFETY: this runs in the child's at-fork hook (`os.register_at_fork`), before the
        // child starts threads; the parent's threads that used the driver do not exist here.
        let lost = unsafe { self.driver.reset_in_forked_child(keep) }.map_err(os_error)?;
        Python::attach(|py| {
            for owner in &lost {
                owner.cancel(py);
                owner.release_face(py);
            }
        });
        drop(lost);
        Ok(())
    }

    /// Reports the handles in the queues to the collector (never blocks: see the driver).
    pub(super) fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        // SAFETY: called from `__traverse__`.
        for entry in unsafe { self.staged.in_traverse() } {
            entry.traverse(visit)?;
        }
        self.driver.try_visit(
            |entry| entry.traverse(visit),
            |timer| timer.traverse(visit),
            |owner| owner.traverse(visit),
        )
    }
}
