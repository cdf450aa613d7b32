//! Scheduling: `call_soon`, `call_soon_threadsafe`, `call_later`/`call_at` and the fd
//! callbacks of `add_reader`/`add_writer` become handles in the driver's queues.
//!
//! A handle is created (which may run Python code: a GC pass) *before* any driver lock is
//! taken, and the closed flag is checked again afterwards, so a loop closed meanwhile by
//! another thread never receives work.

use std::os::fd::RawFd;
use std::sync::Arc;

use ferroloop_core::{clock, Side};
use pyo3::exceptions::{PyOverflowError, PyTypeError, PyValueError};
use pyo3::prelude::*;
use pyo3::types::PyTuple;

use super::LoopCore;
use crate::errors::os_error;
use crate::handles::{Callback, Handle, TimerHandle};
use crate::process::{ChildWatch, CHILD_SIDE};
use crate::ready::{FdOwner, Ready};
use crate::sock::SockWait;
use crate::transports::NativeTransport;

/// The driver side of a reader (`writer=False`) or writer.
pub(super) fn side(writer: bool) -> Side {
    if writer {
        Side::Write
    } else {
        Side::Read
    }
}

/// A delay or deadline argument as float seconds; `None` gets asyncio's `TypeError`.
pub(super) fn seconds(value: &Bound<'_, PyAny>, none_message: &'static str) -> PyResult<f64> {
    if value.is_none() {
        return Err(PyTypeError::new_err(none_message));
    }
    value.extract()
}

/// An fd number as the kernel takes it; beyond a C `int`, CPython's own `OverflowError`.
pub(super) fn fd_number(fd: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    fd.extract::<RawFd>()
        .map_err(|_| PyOverflowError::new_err("Python int too large to convert to C int"))
}

impl LoopCore {
    /// The debug-mode checks asyncio makes before scheduling.
    fn debug_checks(
        slf: &Bound<'_, Self>,
        callback: &Bound<'_, PyAny>,
        method: &str,
        check_thread: bool,
    ) -> PyResult<()> {
        let py = slf.py();
        if check_thread {
            slf.call_method0(intern!(py, "_check_thread"))?;
        }
        slf.call_method1(intern!(py, "_check_callback"), (callback, method))?;
        Ok(())
    }

    /// Queues `callback(*args)` for the next iteration; `method` names the public method
    /// in debug-mode errors (only `call_soon` is bound to the loop's thread).
    pub(super) fn schedule_soon(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
        method: &str,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let core = slf.get();
        core.check_closed()?;
        let debug = core.is_debug();
        if debug {
            Self::debug_checks(slf, &callback, method, method == "call_soon")?;
        }
        let queued = Handle::create_queued(py, Callback::new(py, callback, args, context, debug)?)?;
        core.check_closed()?;
        let handle = queued.handle(py);
        core.stage(py, Ready::Handle(queued));
        Ok(handle)
    }

    /// Queues `callback(*args)` for loop time `when`.
    pub(super) fn schedule_timer(
        slf: &Bound<'_, Self>,
        when: f64,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let py = slf.py();
        if when.is_nan() {
            return Err(PyValueError::new_err("timer deadline must not be NaN"));
        }
        let core = slf.get();
        core.check_closed()?;
        let debug = core.is_debug();
        if debug {
            Self::debug_checks(slf, &callback, "call_at", true)?;
        }
        let counter = Arc::clone(&core.timer_cancel_counter);
        let inner = Callback::new(py, callback, args, context, debug)?;
        let queued = TimerHandle::create(py, inner, when, counter)?;
        core.check_closed()?;
        let timer = queued.handle(py);
        core.driver.push_timer(when, queued);
        Ok(timer)
    }

    /// `call_later`'s deadline: now plus `delay` seconds.
    pub(super) fn deadline_after(delay: &Bound<'_, PyAny>) -> PyResult<f64> {
        Ok(clock::monotonic() + seconds(delay, "delay must not be None")?)
    }

    /// Makes `callback(*args)` the reader or writer of `fd`, replacing (and cancelling)
    /// the previous one.
    pub(super) fn set_fd_callback(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        writer: bool,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        let py = slf.py();
        let fd = fd_number(fd)?;
        let core = slf.get();
        core.check_closed()?;
        let handle = Handle::create(
            py,
            Callback::new(py, callback, args, None, core.is_debug())?,
        )?;
        let previous = core
            .driver
            .set_fd(fd, side(writer), FdOwner::Callback(handle.clone_ref(py)))
            .map_err(os_error)?;
        if let Some(previous) = previous {
            previous.cancel(py);
        }
        Ok(handle)
    }

    /// Unregisters the reader or writer of `fd`; whether there was one. An fd number no
    /// fd can have (beyond a C int) was never watched.
    pub(super) fn unset_fd_callback(&self, fd: &Bound<'_, PyAny>, writer: bool) -> bool {
        let py = fd.py();
        let Ok(fd) = fd.extract::<RawFd>() else {
            return false;
        };
        if self.is_closed() {
            return false;
        }
        match self.driver.remove_fd(fd, side(writer)) {
            Some(owner) => {
                owner.cancel(py);
                true
            }
            None => false,
        }
    }

    /// Makes `transport` the reader or writer of its socket `fd`.
    pub(crate) fn watch_transport(
        &self,
        fd: RawFd,
        side: Side,
        transport: NativeTransport,
    ) -> PyResult<()> {
        self.check_closed()?;
        let previous = self
            .driver
            .set_fd(fd, side, FdOwner::Transport(transport))
            .map_err(os_error)?;
        drop(previous);
        Ok(())
    }

    /// Makes `wait` the reader or writer of its socket `fd` (replacing an `add_reader`
    /// callback, which is cancelled, as asyncio's `add_reader` would).
    pub(crate) fn watch_sock(
        &self,
        py: Python<'_>,
        fd: RawFd,
        side: Side,
        wait: Py<SockWait>,
    ) -> PyResult<()> {
        self.check_closed()?;
        let previous = self
            .driver
            .set_fd(fd, side, FdOwner::Sock(wait))
            .map_err(os_error)?;
        if let Some(previous) = previous {
            previous.cancel(py);
        }
        Ok(())
    }

    /// Stops watching `fd` on `side` for a `sock_*` wait, if its owner is one that
    /// `which` accepts.
    pub(crate) fn unwatch_sock_if(
        &self,
        fd: RawFd,
        side: Side,
        which: impl FnOnce(&Py<SockWait>) -> bool,
    ) {
        let removed = self.driver.remove_fd_if(fd, side, |owner| match owner {
            FdOwner::Sock(wait) => which(wait),
            _ => false,
        });
        drop(removed);
    }

    /// Makes `watch` the reader of its child's pidfd `fd`.
    pub(crate) fn watch_child(&self, fd: RawFd, watch: Py<ChildWatch>) -> PyResult<()> {
        self.check_closed()?;
        let previous = self
            .driver
            .set_fd(fd, CHILD_SIDE, FdOwner::Child(watch))
            .map_err(os_error)?;
        drop(previous);
        Ok(())
    }

    /// Stops watching a child's pidfd `fd` (before it is closed).
    pub(crate) fn unwatch_child(&self, fd: RawFd) {
        let removed = self.driver.remove_fd(fd, CHILD_SIDE);
        drop(removed);
    }

    /// Stops watching `fd` on `side` for a transport (no-op if not watched).
    pub(crate) fn unwatch_transport(&self, fd: RawFd, side: Side) {
        let removed = self.driver.remove_fd(fd, side);
        drop(removed);
    }
}
