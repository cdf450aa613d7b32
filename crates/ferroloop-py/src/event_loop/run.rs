//! Running the loop: the binding's side of `ferroloop_core::Driver::turn`.
//!
//! [`Iteration`] tells the driver how fd owners and timers become ready entries, releases
//! the GIL around the blocking poll (the only place it is released), runs Python signal
//! handlers when a signal interrupts the poll, and runs each entry: the callback in its
//! context, errors other than `SystemExit`/`KeyboardInterrupt` to the exception handler,
//! and in debug mode `_current_handle` and the slow-callback warning.

use std::collections::VecDeque;
use std::io;
use std::sync::atomic::Ordering;

use ferroloop_core::{clock, Dispatch, ReadyQueue, Side, TurnError};
use pyo3::exceptions::PyRuntimeError;
use pyo3::prelude::*;
use pyo3::types::PyDict;

use super::LoopCore;
use crate::errors::os_error;
use crate::handles::{Callback, TimerHandle};
use crate::queued::Queued;
use crate::process::ChildWatch;
use crate::py;
use crate::ready::{FdOwner, Ready};
use crate::sock::SockWait;

/// One `turn` of a loop, with the loop object the callbacks need.
pub(super) struct Iteration<'a, 'py> {
    pub(super) slf: &'a Bound<'py, LoopCore>,
}

impl Dispatch<Ready, Queued<TimerHandle>, FdOwner> for Iteration<'_, '_> {
    type Error = PyErr;

    fn ready_entry(&self, owner: &FdOwner, side: Side) -> Option<Ready> {
        owner.ready_entry(self.slf.py(), side)
    }

    fn timer_entry(&self, timer: Queued<TimerHandle>, lag: f64) -> Ready {
        self.slf.get().timer_lag.record(lag);
        Ready::Timer(timer)
    }

    fn is_cancelled(&self, entry: &Ready) -> bool {
        entry.is_cancelled()
    }

    fn take_staged(&self, ready: &mut ReadyQueue<Ready>) {
        let py = self.slf.py();
        self.slf
            .get()
            .staged
            .with_mut(py, |staged| ready.append(staged));
    }

    fn blocking<F>(&self, wait: F) -> io::Result<usize>
    where
        F: FnOnce() -> io::Result<usize> + Send,
    {
        let started = clock::monotonic();
        let result = self.slf.py().detach(wait);
        // Only the loop thread writes the total: a plain load/store, no locked RMW.
        let total = &self.slf.get().poll_seconds;
        let spent = f64::from_bits(total.load(Ordering::Relaxed)) + (clock::monotonic() - started);
        total.store(spent.to_bits(), Ordering::Relaxed);
        result
    }

    fn poll_failed(&self, err: io::Error) -> PyResult<()> {
        if err.kind() == io::ErrorKind::Interrupted {
            // A signal arrived: let Python run its handlers (raises KeyboardInterrupt for
            // the default SIGINT handler), then carry on with the iteration.
            return self.slf.py().check_signals();
        }
        Err(os_error(err))
    }

    fn run(&self, entry: &Ready) -> PyResult<()> {
        run_entry(self.slf, entry)
    }
}

/// One iteration of `slf`'s loop; `batch` is the empty deque the driver runs the
/// iteration's entries from (kept by the caller across iterations, see `turn_with`).
pub(super) fn turn(slf: &Bound<'_, LoopCore>, batch: &mut VecDeque<Ready>) -> PyResult<()> {
    let core = slf.get();
    let iterations = core.iterations.load(Ordering::Relaxed) + 1;
    core.iterations.store(iterations, Ordering::Relaxed);
    match core.driver.turn_with(&Iteration { slf }, batch) {
        Ok(()) => Ok(()),
        Err(TurnError::Dispatch(err)) => Err(err),
        Err(TurnError::Busy) => Err(PyRuntimeError::new_err(
            "another thread is running an iteration of this event loop",
        )),
    }
}

/// Runs one entry: a Python callback (errors other than `SystemExit`/`KeyboardInterrupt`
/// go to the exception handler) or a native transport's readiness (it reports its own
/// errors). An `Err` means the loop must stop and re-raise it.
fn run_entry(slf: &Bound<'_, LoopCore>, entry: &Ready) -> PyResult<()> {
    let py = slf.py();
    let core = slf.get();
    // Only the loop thread writes the counter: a plain store avoids a locked RMW.
    let started_count = core.callbacks_run.load(Ordering::Relaxed) + 1;
    core.callbacks_run.store(started_count, Ordering::Relaxed);
    let debug = core.is_debug();
    let timed = core.timing.enabled();
    let started = if debug || timed {
        if debug {
            // asyncio's default exception handler reads the running handle from here.
            slf.setattr(intern!(py, "_current_handle"), entry.object(py))?;
        }
        Some(clock::monotonic())
    } else {
        None
    };
    // For the watchdog (see `LoopCore::running_object`): set only while `entry` runs.
    core.running_entry
        .store(std::ptr::from_ref(entry).cast_mut(), Ordering::Relaxed);
    let result = match entry {
        Ready::Transport(transport, side) => transport.on_ready(py, *side),
        Ready::Child(watch) => ChildWatch::on_ready(watch.bind(py), slf),
        Ready::Sock(wait) => SockWait::on_ready(wait.bind(py), slf),
        Ready::Signals => LoopCore::on_signals(slf),
        Ready::Handle(_) | Ready::Timer(_) => run_callback(slf, entry),
    };
    core.running_entry.store(std::ptr::null_mut(), Ordering::Relaxed);
    if debug {
        slf.setattr(intern!(py, "_current_handle"), py.None())?;
    }
    result?;
    let Some(started) = started else {
        return Ok(());
    };
    let now = clock::monotonic();
    let elapsed = now - started;
    if timed {
        core.timing.record(py, entry, elapsed, now)?;
    }
    if debug {
        let threshold: f64 = slf
            .getattr(intern!(py, "slow_callback_duration"))?
            .extract()?;
        if elapsed >= threshold {
            slf.call_method1(
                intern!(py, "_log_slow_callback"),
                (entry.object(py), elapsed),
            )?;
        }
    }
    Ok(())
}

/// Runs a handle's or timer's callback; its errors go to the exception handler.
fn run_callback(slf: &Bound<'_, LoopCore>, entry: &Ready) -> PyResult<()> {
    let py = slf.py();
    let callback: &Callback = entry.callback().expect("handles and timers have callbacks");
    if let Err(err) = callback.run(py) {
        if py::is_exit_exception(py, &err) {
            return Err(err);
        }
        report_callback_error(slf, entry, callback, err)?;
    }
    Ok(())
}

impl LoopCore {
    /// Passes `err`, raised by the loop's own work (reaping a child, completing a `sock_*`
    /// wait), to the exception handler under `message`; `SystemExit`/`KeyboardInterrupt`
    /// are returned instead, to stop the loop.
    #[cold]
    pub(crate) fn report_error(slf: &Bound<'_, Self>, message: &str, err: PyErr) -> PyResult<()> {
        let py = slf.py();
        if py::is_exit_exception(py, &err) {
            return Err(err);
        }
        let context = PyDict::new(py);
        context.set_item("message", message)?;
        context.set_item("exception", err.into_value(py))?;
        slf.call_method1(intern!(py, "call_exception_handler"), (context,))?;
        Ok(())
    }
}

#[cold]
fn report_callback_error(
    slf: &Bound<'_, LoopCore>,
    entry: &Ready,
    callback: &Callback,
    err: PyErr,
) -> PyResult<()> {
    let py = slf.py();
    let source = callback.source(py)?;
    let context = PyDict::new(py);
    context.set_item(
        intern!(py, "message"),
        format!("Exception in callback {source}"),
    )?;
    context.set_item(intern!(py, "exception"), err.into_value(py))?;
    context.set_item(intern!(py, "handle"), entry.object(py))?;
    if let Some(tb) = callback.source_traceback(py) {
        context.set_item(intern!(py, "source_traceback"), tb)?;
    }
    slf.call_method1(intern!(py, "call_exception_handler"), (context,))?;
    Ok(())
}
