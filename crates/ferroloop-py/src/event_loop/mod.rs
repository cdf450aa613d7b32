//! `LoopCore`: the Rust half of `ferroloop.Loop`.
//!
//! The Python class `ferroloop.Loop` derives from `LoopCore` and `asyncio.AbstractEventLoop`.
//! `LoopCore` owns a `ferroloop_core::Driver` (ready queue, timer heap, fd registry with its
//! poller, cross-thread waker) and runs the loop itself (`_run_forever_core`). Python
//! supplies the parts that are API shape (running-loop bookkeeping, asyncgen hooks,
//! executors, the exception handler) and is called back only for those:
//! `call_exception_handler` when a callback raises, and in debug mode `_check_thread`,
//! `_check_callback` and `_log_slow_callback`.
//!
//! This file holds the state and the one `#[pymethods]` block, each method a thin shim;
//! the work is in the plain `impl` blocks by concern:
//! * [`schedule`] — handles into the driver's queues (callbacks, timers, fd callbacks);
//! * [`run`] — one iteration: the binding's side of `Driver::turn`;
//! * [`lifecycle`] — close, fork, GC support;
//! * [`signals`] — the wake-up pipe of `add_signal_handler`.
//!
//! The locking rules are the driver's (`ferroloop_core::driver`): no Python code runs and
//! no possibly-last reference is dropped while a driver lock is held; the GC traversal
//! only looks at what it can lock without waiting.

mod lifecycle;
mod run;
mod schedule;
mod signals;
mod timing;

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicPtr, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use ferroloop_core::signal::WakeupPipe;
use ferroloop_core::{clock, Driver};
use pyo3::exceptions::PyRuntimeError;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict, PyTuple};
use pyo3::PyTraverseError;

use crate::errors::{loop_closed, os_error};
use crate::handles::{Handle, TimerHandle};
use crate::py::GilCell;
use crate::queued::Queued;
use crate::process::ChildWatch;
use crate::ready::{FdOwner, Ready};
use crate::sock::{self, SockWait};
use crate::watchdog::Watchdog;
use timing::{CallbackTiming, TimerLag};
use crate::{ffi, py};

/// The driver of a Python loop: ready entries, timers and fd owners are Python handles.
type LoopDriver = Driver<Ready, Queued<TimerHandle>, FdOwner>;

/// The Rust core of a ferroloop event loop.
#[pyclass(subclass, frozen, weakref, module = "ferroloop._ferroloop")]
pub struct LoopCore {
    driver: LoopDriver,
    /// Callbacks scheduled (`call_soon`, `call_soon_threadsafe`) since the driver last
    /// took them: appended under the GIL with no lock; the driver moves them to its ready
    /// queue at the start of each iteration and when it takes the batch
    /// (`Dispatch::take_staged`), so they run in order, in the next iteration.
    staged: GilCell<VecDeque<Ready>>,
    /// The driver's timer cancel counter, kept here so scheduling a timer takes one lock.
    timer_cancel_counter: Arc<AtomicUsize>,
    closed: AtomicBool,
    running: AtomicBool,
    debug: AtomicBool,
    /// Callbacks started since the loop was created. With the driver's polling flag,
    /// this is what a watchdog thread samples: a count that stops moving while the loop
    /// is not polling means one callback has been running since the last sample.
    callbacks_run: AtomicU64,
    /// The entry `run_entry` is running, null between entries: for the watchdog's report
    /// (see [`LoopCore::running_object`]). Only the loop thread writes it.
    running_entry: AtomicPtr<Ready>,
    /// The wake-up pipe of signal handlers, created by the first `add_signal_handler`.
    signal_pipe: parking_lot::Mutex<Option<WakeupPipe>>,
    /// The blocking detector's thread, while a threshold is set.
    watchdog: parking_lot::Mutex<Option<Watchdog>>,
    /// Loop iterations run so far (for `stats()`; only the loop thread writes it).
    iterations: AtomicU64,
    /// Seconds spent waiting in the poller, as f64 bits (only the loop thread writes it).
    poll_seconds: AtomicU64,
    /// How late timers fired (for `stats()`).
    timer_lag: TimerLag,
    /// Opt-in per-callback timing (for `stats()`).
    timing: CallbackTiming,
}

impl LoopCore {
    /// Queues `entry` for the next iteration (see `staged`).
    fn stage(&self, py: Python<'_>, entry: Ready) {
        self.staged.with_mut(py, |staged| staged.push_back(entry));
    }

    fn check_closed(&self) -> PyResult<()> {
        if self.closed.load(Ordering::Acquire) {
            Err(loop_closed())
        } else {
            Ok(())
        }
    }

    fn is_debug(&self) -> bool {
        self.debug.load(Ordering::Relaxed)
    }

    /// Whether `close()` was called.
    pub(crate) fn closed_now(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    /// Callbacks started so far (sampled by the watchdog thread).
    pub(crate) fn callbacks_started(&self) -> u64 {
        self.callbacks_run.load(Ordering::Relaxed)
    }

    /// The object user code sees for the entry the loop thread is running (a handle, a
    /// timer handle, a transport), or `None` between entries. For the watchdog thread.
    pub(crate) fn running_object(&self, py: Python<'_>) -> Option<Py<PyAny>> {
        let entry = self.running_entry.load(Ordering::Relaxed);
        // SAFETY: the loop thread stores a non-null pointer only while `run_entry` runs
        // that entry, which stays in the driver's batch until `run_entry` returns, and it
        // stores null again before returning. Leaving `run_entry` needs the GIL (the
        // entry's Python code, or Rust code holding `py`, must finish first), and we hold
        // the GIL (`py`): so a non-null pointer read now points to a live entry for as
        // long as we hold it. The GIL hand-over orders the loop thread's store before
        // our load, so the Relaxed load sees it.
        unsafe { entry.as_ref() }.map(|entry| entry.object(py))
    }

    /// Whether `run_forever` is running (sampled by the watchdog thread).
    pub(crate) fn is_running(&self) -> bool {
        self.running.load(Ordering::Acquire)
    }

    /// Whether the loop thread is waiting in the poller (sampled by the watchdog thread).
    pub(crate) fn is_polling(&self) -> bool {
        self.driver.is_polling()
    }

    /// Stops the blocking detector's thread, if any.
    fn stop_watchdog(&self, py: Python<'_>) {
        let watchdog = self.watchdog.lock().take();
        if let Some(watchdog) = watchdog {
            watchdog.stop(py);
        }
    }
}

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let driver = LoopDriver::new().map_err(os_error)?;
        Ok(LoopCore {
            timer_cancel_counter: driver.timer_cancel_counter(),
            driver,
            staged: GilCell::new(VecDeque::new()),
            closed: AtomicBool::new(false),
            running: AtomicBool::new(false),
            debug: AtomicBool::new(false),
            callbacks_run: AtomicU64::new(0),
            running_entry: AtomicPtr::new(std::ptr::null_mut()),
            signal_pipe: parking_lot::Mutex::new(None),
            watchdog: parking_lot::Mutex::new(None),
            iterations: AtomicU64::new(0),
            poll_seconds: AtomicU64::new(0f64.to_bits()),
            timer_lag: TimerLag::new(),
            timing: CallbackTiming::default(),
        })
    }

    /// The loop's clock: `time.monotonic()` seconds.
    fn time(&self) -> f64 {
        clock::monotonic()
    }

    fn get_debug(&self) -> bool {
        self.is_debug()
    }

    /// Sets only the flag; `Loop.set_debug` adds coroutine-origin tracking.
    fn _set_debug_flag(&self, enabled: bool) {
        self.debug.store(enabled, Ordering::Relaxed);
    }

    #[getter]
    fn _debug(&self) -> bool {
        self.is_debug()
    }

    #[getter]
    fn _clock_resolution(&self) -> f64 {
        self.driver.clock_resolution()
    }

    #[getter]
    fn _stopping(&self) -> bool {
        self.driver.stop_requested()
    }

    /// Number of callbacks started so far.
    #[getter]
    fn _callbacks_run(&self) -> u64 {
        self.callbacks_run.load(Ordering::Relaxed)
    }

    /// Whether the loop thread is waiting in the poller right now.
    #[getter]
    fn _polling(&self) -> bool {
        self.driver.is_polling()
    }

    /// Number of queued timers, cancelled ones included.
    #[getter]
    fn _timer_count(&self) -> usize {
        self.driver.timer_counts().0
    }

    /// Number of queued timers that are cancelled.
    #[getter]
    fn _timer_cancelled_count(&self) -> usize {
        self.driver.timer_counts().1
    }

    pub(crate) fn is_closed(&self) -> bool {
        self.closed.load(Ordering::Acquire)
    }

    #[getter]
    fn _closed(&self) -> bool {
        self.is_closed()
    }

    /// Raises `RuntimeError('Event loop is closed')` once `close()` was called.
    fn _check_closed(&self) -> PyResult<()> {
        self.check_closed()
    }

    #[pyo3(signature = (callback, *args, context=None))]
    fn call_soon(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        Self::schedule_soon(slf, callback, args, context, "call_soon")
    }

    /// `call_soon` that may be called from any thread: also wakes the loop's poller.
    #[pyo3(signature = (callback, *args, context=None))]
    fn call_soon_threadsafe(
        slf: &Bound<'_, Self>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<Handle>> {
        let handle = Self::schedule_soon(slf, callback, args, context, "call_soon_threadsafe")?;
        slf.get().driver.wake().map_err(os_error)?;
        Ok(handle)
    }

    #[pyo3(signature = (delay, callback, *args, context=None))]
    fn call_later(
        slf: &Bound<'_, Self>,
        delay: Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let when = Self::deadline_after(&delay)?;
        Self::schedule_timer(slf, when, callback, args, context)
    }

    #[pyo3(signature = (when, callback, *args, context=None))]
    fn call_at(
        slf: &Bound<'_, Self>,
        when: Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let when = schedule::seconds(&when, "when cannot be None")?;
        Self::schedule_timer(slf, when, callback, args, context)
    }

    /// `asyncio.Task(coro, loop=self, name=name, context=context)`; with a task factory
    /// or in debug mode, asyncio's own `create_task` (`_create_task_general`) does it.
    #[pyo3(signature = (coro, *, name=None, context=None))]
    fn create_task(
        slf: &Bound<'_, Self>,
        coro: Bound<'_, PyAny>,
        name: Option<Bound<'_, PyAny>>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let core = slf.get();
        core.check_closed()?;
        let name = name.filter(|n| !n.is_none());
        let context = context.filter(|c| !c.is_none());
        if core.is_debug() || !slf.getattr(intern!(py, "_task_factory"))?.is_none() {
            let kwargs = PyDict::new(py);
            if let Some(name) = name {
                kwargs.set_item(intern!(py, "name"), name)?;
            }
            if let Some(context) = context {
                kwargs.set_item(intern!(py, "context"), context)?;
            }
            let general = slf.getattr(intern!(py, "_create_task_general"))?;
            return Ok(general.call((coro,), Some(&kwargs))?.unbind());
        }
        let task = py::task_type(py)?;
        let kwnames = py::loop_kwnames(py, name.is_some(), context.is_some())?;
        let slf = slf.as_any();
        let created = match (&name, &context) {
            (None, None) => ffi::vectorcall(task, [&coro, slf], kwnames),
            (Some(n), None) => ffi::vectorcall(task, [&coro, slf, n], kwnames),
            (None, Some(c)) => ffi::vectorcall(task, [&coro, slf, c], kwnames),
            (Some(n), Some(c)) => ffi::vectorcall(task, [&coro, slf, n, c], kwnames),
        };
        Ok(created?.unbind())
    }

    /// `asyncio.Future(loop=self)`.
    fn create_future(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let kwnames = py::loop_kwnames(py, false, false)?;
        Ok(ffi::vectorcall(py::future_type(py)?, [slf.as_any()], kwnames)?.unbind())
    }

    /// Asks the running loop to return after the current iteration. Safe to call from a
    /// callback; from another thread use `call_soon_threadsafe(loop.stop)`.
    fn stop(&self) -> PyResult<()> {
        self.driver.request_stop();
        if self.running.load(Ordering::Acquire) {
            self.driver.wake().map_err(os_error)?;
        }
        Ok(())
    }

    /// Runs iterations until `stop()`; the Python wrapper does the bookkeeping around it.
    fn _run_forever_core(slf: &Bound<'_, Self>) -> PyResult<()> {
        let core = slf.get();
        core.check_closed()?;
        core.running.store(true, Ordering::Release);
        let mut batch = VecDeque::new();
        let result = loop {
            if let Err(err) = run::turn(slf, &mut batch) {
                break Err(err);
            }
            if core.driver.stop_requested() {
                break Ok(());
            }
        };
        core.driver.take_stop();
        core.running.store(false, Ordering::Release);
        result
    }

    /// Runs one iteration (poll, queue due timers, run what is ready), as asyncio's
    /// `BaseEventLoop._run_once`; test suites drive loops step by step with it.
    fn _run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        let core = slf.get();
        core.check_closed()?;
        if core.running.load(Ordering::Acquire) {
            // Stepping a loop that runs (maybe in another thread, waiting in the poller)
            // would interleave two iterations; asyncio's would corrupt its queues.
            return Err(PyRuntimeError::new_err(
                "_run_once() cannot step a loop that is running; stop it first",
            ));
        }
        run::turn(slf, &mut VecDeque::new())
    }

    /// A snapshot of the handles waiting for the next iteration (asyncio's `_ready` is
    /// the deque itself; code reads it only to test for emptiness or count).
    #[getter]
    fn _ready(&self, py: Python<'_>) -> Vec<Py<PyAny>> {
        let mut ready = self.driver.map_ready(|entry| entry.object(py));
        let staged = self.staged.with(py, |staged| {
            staged.iter().map(|entry| entry.object(py)).collect::<Vec<_>>()
        });
        ready.extend(staged);
        ready
    }

    /// Marks the loop closed, drops everything queued and closes the poller and waker
    /// fds; the Python `close()` checks that the loop is not running first.
    fn _close_core(&self, py: Python<'_>) {
        self.stop_watchdog(py);
        self.close_core();
    }

    /// In a child process after `fork()`: gives this loop its own epoll instance and
    /// eventfd and registers the watched fds again. Called for every live loop by the
    /// `os.register_at_fork` hook in `ferroloop._loop`. Returns `(old, new)` signal
    /// wake-up fds when the loop had one (the child gets a pipe of its own), else `None`.
    fn _after_fork_in_child(&self) -> PyResult<Option<(RawFd, RawFd)>> {
        // The parent's watchdog thread does not exist here: forget it without joining
        // (`ferroloop._loop` starts a new one if a threshold was set).
        if let Some(mut slot) = self.watchdog.try_lock() {
            if let Some(watchdog) = slot.take() {
                std::mem::forget(watchdog);
            }
        }
        self.after_fork_in_child()?;
        self.renew_signal_pipe_in_child()
    }

    /// Registers `callback(*args)` for readability (`writer=False`) or writability of
    /// `fd`; replaces (and cancels) the previous one. `fd` was validated by `Loop`.
    fn _add_fd_callback(
        slf: &Bound<'_, Self>,
        fd: &Bound<'_, PyAny>,
        writer: bool,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
    ) -> PyResult<Py<Handle>> {
        Self::set_fd_callback(slf, fd, writer, callback, args)
    }

    /// Unregisters the reader (`writer=False`) or writer of `fd`; returns whether there
    /// was one.
    fn _remove_fd_callback(&self, fd: &Bound<'_, PyAny>, writer: bool) -> bool {
        self.unset_fd_callback(fd, writer)
    }

    /// Starts the blocking detector: `reporter("blocked", seconds)` once a callback has
    /// run for `threshold` seconds, `reporter("unblocked", seconds)` when it returns (on
    /// the watchdog thread). Replaces a detector already running.
    fn _start_watchdog(slf: &Bound<'_, Self>, threshold: f64, reporter: Py<PyAny>) -> PyResult<()> {
        if !(threshold.is_finite() && threshold > 0.0) {
            return Err(pyo3::exceptions::PyValueError::new_err(format!(
                "blocking threshold must be a positive number of seconds, not {threshold}"
            )));
        }
        let core = slf.get();
        core.check_closed()?;
        core.stop_watchdog(slf.py());
        let watchdog =
            Watchdog::start(slf.clone().unbind(), threshold, reporter).map_err(os_error)?;
        *core.watchdog.lock() = Some(watchdog);
        Ok(())
    }

    /// The core's counters for `Loop.stats()`: `(iterations, callbacks_run,
    /// poll_seconds, ready, timers, cancelled_timers, watched_fds, readers, writers)`;
    /// `readers`/`writers` count the `add_reader`/`add_writer` callbacks (those of the
    /// `sock_*` coroutines included), not transports, child pidfds or the signal pipe.
    #[allow(clippy::type_complexity)]
    fn _stats_counters(
        &self,
        py: Python<'_>,
    ) -> (u64, u64, f64, usize, usize, usize, usize, usize, usize) {
        let (timers, cancelled) = self.driver.timer_counts();
        let (readers, writers) = self
            .driver
            .count_fd_owners(|owner| matches!(owner, FdOwner::Callback(_) | FdOwner::Sock(_)));
        (
            self.iterations.load(Ordering::Relaxed),
            self.callbacks_run.load(Ordering::Relaxed),
            f64::from_bits(self.poll_seconds.load(Ordering::Relaxed)),
            self.driver.ready_len() + self.staged.with(py, VecDeque::len),
            timers,
            cancelled,
            self.driver.fd_count(),
            readers,
            writers,
        )
    }

    /// `(timer_lag, slowest_callbacks, busiest_tasks)` for `stats()` (the last two `None`
    /// while callback timing is off).
    fn _stats_timing<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyTuple>> {
        let lag = self.timer_lag.snapshot(py)?;
        let (slowest, busiest) = self.timing.snapshot(py, clock::monotonic())?;
        PyTuple::new(py, [lag.into_any(), slowest.into_pyobject(py)?, busiest.into_pyobject(py)?])
    }

    /// Turns per-callback timing on or off (see `timing.rs`).
    fn _set_callback_timing(&self, enabled: bool) {
        self.timing.set_enabled(enabled);
    }

    #[getter]
    fn _callback_timing(&self) -> bool {
        self.timing.enabled()
    }

    /// Stops the blocking detector (no-op if it is off).
    fn _stop_watchdog(&self, py: Python<'_>) {
        self.stop_watchdog(py);
    }

    /// The fd for `signal.set_wakeup_fd` (the loop watches the other end of its pipe).
    fn _signal_wakeup_fd(&self) -> PyResult<RawFd> {
        self.signal_wakeup_fd()
    }

    /// Waits for child `pid` to exit (its pidfd in the driver, or the `SIGCHLD` reaper)
    /// and then runs `callback(pid, returncode)` as a loop callback.
    fn _watch_child(slf: &Bound<'_, Self>, pid: i32, callback: Py<PyAny>) -> PyResult<()> {
        ChildWatch::start(slf, pid, callback)
    }

    /// The reader (`writer=False`) or writer handle registered for `fd`, if any.
    /// `sock_recv`'s first attempt: one `recv` of at most `n` bytes, `None` if it would
    /// block (see `crate::sock`).
    fn _sock_try_recv(&self, py: Python<'_>, fd: RawFd, n: isize) -> PyResult<Option<Py<PyBytes>>> {
        sock::try_recv(py, fd, n)
    }

    /// `sock_sendall`'s first attempt: the number of bytes of `data` sent now.
    fn _sock_try_send_all(&self, fd: RawFd, data: &Bound<'_, PyBytes>) -> PyResult<usize> {
        sock::try_send_all(fd, data)
    }

    /// Waits for `fd` to finish `sock_recv(n)` (`data` None) or the rest of
    /// `sock_sendall(data)` after `sent` bytes; returns the future to await.
    fn _sock_start_wait(
        slf: &Bound<'_, Self>,
        fd: RawFd,
        n: isize,
        data: Option<Py<PyBytes>>,
        sent: usize,
    ) -> PyResult<Py<PyAny>> {
        SockWait::start(slf, fd, n, data, sent)
    }

    /// The `sock_*` coroutine waiting on `future` stopped waiting: unregister its wait.
    fn _sock_stop_waiting(slf: &Bound<'_, Self>, fd: RawFd, writer: bool, future: &Bound<'_, PyAny>) {
        SockWait::stop_waiting(slf, fd, writer, future);
    }

    fn _get_fd_callback(&self, py: Python<'_>, fd: RawFd, writer: bool) -> Option<Py<Handle>> {
        self.driver
            .with_fd(fd, schedule::side(writer), |owner| match owner {
                Some(FdOwner::Callback(h)) => Some(h.clone_ref(py)),
                _ => None,
            })
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.traverse(&visit)
    }

    fn __clear__(&self) {
        self.discard_queued();
    }
}
