//! Signal handlers' wake-up pipe (see `ferroloop_core::signal`).
//!
//! `ferroloop._signals` keeps asyncio's bookkeeping (`_signal_handlers`, the checks and
//! messages, `signal.signal`, `signal.set_wakeup_fd`); the core owns the pipe whose write
//! end is the wake-up fd, watches its read end (as `FdOwner::Signals`) and, when signal
//! numbers arrive, calls `Loop._handle_signal(signum)` once per signal, in order, which
//! queues the handler as a loop callback.
//!
//! Invariants: the pipe exists from the first `add_signal_handler` until `close()`; its
//! read end is registered with the driver exactly while it exists; a forked child replaces
//! it with a pipe of its own (the inherited one is shared with the parent).

use std::os::fd::RawFd;

use ferroloop_core::signal::WakeupPipe;
use ferroloop_core::Side;
use pyo3::prelude::*;

use super::LoopCore;
use crate::errors::os_error;
use crate::ready::FdOwner;

impl LoopCore {
    /// The write end of the wake-up pipe, creating and registering the pipe first.
    pub(super) fn signal_wakeup_fd(&self) -> PyResult<RawFd> {
        self.check_closed()?;
        let mut slot = self.signal_pipe.lock();
        if let Some(pipe) = slot.as_ref() {
            return Ok(pipe.write_fd());
        }
        let pipe = WakeupPipe::new().map_err(os_error)?;
        let previous = self
            .driver
            .set_fd(pipe.read_fd(), Side::Read, FdOwner::Signals)
            .map_err(os_error)?;
        drop(previous);
        let fd = pipe.write_fd();
        *slot = Some(pipe);
        Ok(fd)
    }

    /// Signal numbers arrived: `_handle_signal(signum)` for each, in order.
    pub(super) fn on_signals(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let signals = match slf.get().signal_pipe.lock().as_ref() {
            Some(pipe) => pipe.drain().map_err(os_error)?,
            None => return Ok(()),
        };
        for signum in signals {
            if i32::from(signum) == libc::SIGCHLD {
                // A SIGCHLD handler of the program may have displaced the reaper's.
                ferroloop_core::reaper::kick();
            }
            slf.call_method1(intern!(py, "_handle_signal"), (i32::from(signum),))?;
        }
        Ok(())
    }

    /// `close()`: unregisters and closes the pipe (the driver dropped its owners already).
    pub(super) fn close_signal_pipe(&self) {
        let pipe = self.signal_pipe.lock().take();
        if let Some(pipe) = pipe {
            let removed = self.driver.remove_fd(pipe.read_fd(), Side::Read);
            drop(removed);
            drop(pipe);
        }
    }

    /// In a forked child: a pipe of its own instead of the one shared with the parent.
    /// Returns the old and new write ends, for `signal.set_wakeup_fd`.
    pub(super) fn renew_signal_pipe_in_child(&self) -> PyResult<Option<(RawFd, RawFd)>> {
        let old = match self.signal_pipe.lock().as_ref() {
            Some(pipe) => pipe.write_fd(),
            None => return Ok(None),
        };
        self.close_signal_pipe();
        let new = self.signal_wakeup_fd()?;
        Ok(Some((old, new)))
    }
}
