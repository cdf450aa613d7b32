//! `LoopCore`: the Rust half of `ferroloop.Loop`.
//!
//! The Python class `ferroloop.Loop` derives from `LoopCore` and `asyncio.AbstractEventLoop`.
//! `LoopCore` owns the ready queue, the timer heap, the fd registry with its poller and the
//! cross-thread waker, and runs the loop itself (`_run_forever_core`). Python supplies the
//! parts that are API shape (running-loop bookkeeping, asyncgen hooks, executors, the
//! exception handler) and is called back only for those: `call_exception_handler` when a
//! callback raises, and in debug mode `_check_thread`, `_check_callback` and
//! `_log_slow_callback`.
//!
//! ## One iteration (`run_once`), as asyncio's `_run_once`
//! 1. Drop cancelled timers from the top of the heap (or compact it).
//! 2. Poll: timeout 0 if anything is ready or `stop()` was called, else until the next
//!    timer (capped at a day), else forever. The GIL is released only around this wait.
//!    With nothing to wait for (no fds, no pending wake-up, zero timeout) the poll is
//!    skipped entirely.
//! 3. Queue the callbacks of ready fds, then the timers due before `now + resolution`.
//! 4. Run exactly the callbacks that are queued now; what they schedule runs next time.
//!
//! ## Ground rules for the locks
//! The queues sit behind `parking_lot` mutexes because other threads may schedule
//! (`call_soon_threadsafe`) and because pyclasses must be `Sync`. While a lock is held:
//! no call into Python, no allocation of Python objects and no drop of a reference that
//! could be the last one (a destructor can run arbitrary Python code, which may call back
//! into the loop and deadlock). Timer-heap cleanup therefore hands discarded timers out
//! to be dropped after the lock is released. The garbage collector's traversal only
//! `try_lock`s: reporting fewer references than exist is safe (objects just look
//! externally owned), and it can never block.

use std::collections::VecDeque;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use ferroloop_core::{
    clock, Events, Interest, IoRegistry, Poller, ReadyQueue, Side, TimerQueue, Waker,
};
use parking_lot::Mutex;
use pyo3::exceptions::{
    PyKeyboardInterrupt, PyOverflowError, PyRuntimeError, PySystemExit, PyTypeError, PyValueError,
};
use pyo3::gc::PyVisit;
use pyo3::intern;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyTuple};
use pyo3::PyTraverseError;

use crate::errors::{loop_closed, os_error};
use crate::handles::{Callback, Handle, QueuedTimer, Ready, TimerHandle};
use crate::{ffi, py};

/// The poll token of the waker (fds are never this large).
const WAKER_TOKEN: u64 = u64::MAX;
/// Longest single wait, as asyncio's `MAXIMUM_SELECT_TIMEOUT`.
const MAX_POLL_TIMEOUT: f64 = 24.0 * 3600.0;

fn side(writer: bool) -> Side {
    if writer {
        Side::Write
    } else {
        Side::Read
    }
}

/// An fd number as the kernel takes it; beyond a C `int`, CPython's own `OverflowError`.
fn fd_number(fd: &Bound<'_, PyAny>) -> PyResult<RawFd> {
    fd.extract::<RawFd>()
        .map_err(|_| PyOverflowError::new_err("Python int too large to convert to C int"))
}

/// A delay or deadline argument as float seconds; `None` gets asyncio's `TypeError`.
fn seconds(value: &Bound<'_, PyAny>, none_message: &'static str) -> PyResult<f64> {
    if value.is_none() {
        return Err(PyTypeError::new_err(none_message));
    }
    value.extract()
}

/// The Rust core of a ferroloop event loop.
#[pyclass(subclass, frozen, weakref, module = "ferroloop._ferroloop")]
pub struct LoopCore {
    ready: Mutex<ReadyQueue<Ready>>,
    /// An emptied batch buffer kept for reuse by the next iteration.
    spare_batch: Mutex<VecDeque<Ready>>,
    timers: Mutex<TimerQueue<QueuedTimer>>,
    /// `timers.cancel_counter()`, kept here so scheduling a timer takes the lock once.
    timer_cancel_counter: Arc<AtomicUsize>,
    io: Mutex<IoRegistry<Py<Handle>>>,
    poller: Poller,
    waker: Arc<Waker>,
    events: Mutex<Events>,
    clock_resolution: f64,
    closed: AtomicBool,
    stopping: AtomicBool,
    running: AtomicBool,
    debug: AtomicBool,
    /// Callbacks started since the loop was created. With `polling`, this is what a
    /// watchdog thread samples: a count that stops moving while `polling` is false
    /// means one callback has been running since the last sample.
    callbacks_run: AtomicU64,
    /// True while the loop thread waits in the poller (the GIL is released then).
    polling: AtomicBool,
}

impl LoopCore {
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
    fn schedule_soon(
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
        let handle = Handle::create(py, Callback::new(py, callback, args, context, debug)?)?;
        // Creating the handle may run Python code (a GC pass), during which another
        // thread could close the loop; from here to the caller's wake-up nothing can.
        core.check_closed()?;
        core.ready.lock().push(Ready::Handle(handle.clone_ref(py)));
        Ok(handle)
    }

    fn schedule_timer(
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
        let timer = TimerHandle::create(py, inner, when, counter)?;
        core.timers
            .lock()
            .push(when, QueuedTimer(timer.clone_ref(py)));
        Ok(timer)
    }

    fn poll_timeout(&self, timers: &TimerQueue<QueuedTimer>) -> Option<Duration> {
        if self.stopping.load(Ordering::Acquire) || !self.ready.lock().is_empty() {
            return Some(Duration::ZERO);
        }
        timers.next_deadline().map(|when| {
            let secs = (when - clock::monotonic()).clamp(0.0, MAX_POLL_TIMEOUT);
            Duration::from_secs_f64(secs)
        })
    }

    /// Waits for fd readiness and queues the callbacks of ready fds.
    fn poll(&self, py: Python<'_>, timeout: Option<Duration>) -> PyResult<()> {
        // Held by another thread only if two threads iterate this loop at once: refuse
        // instead of waiting for it with the GIL held (that thread needs the GIL back).
        let Some(mut events_guard) = self.events.try_lock() else {
            return Err(PyRuntimeError::new_err(
                "another thread is running an iteration of this event loop",
            ));
        };
        let events: &mut Events = &mut events_guard;
        let poller = &self.poller;
        let waited = if timeout == Some(Duration::ZERO) {
            poller.wait(events, timeout)
        } else {
            self.polling.store(true, Ordering::Release);
            let waited = py.detach(|| poller.wait(events, timeout));
            self.polling.store(false, Ordering::Release);
            waited
        };
        if let Err(err) = waited {
            drop(events_guard); // signal handlers are Python code: no lock held
            if err.kind() == std::io::ErrorKind::Interrupted {
                // A signal arrived: let Python run its handlers (raises KeyboardInterrupt
                // for the default SIGINT handler), then carry on with the iteration.
                return py.check_signals();
            }
            return Err(os_error(err));
        }
        let mut cancelled_readers: Vec<(RawFd, bool)> = Vec::new();
        {
            let io = self.io.lock();
            let mut ready = self.ready.lock();
            for event in events.iter() {
                if event.token == WAKER_TOKEN {
                    self.waker.drain();
                    continue;
                }
                let (reader, writer) = io.dispatch(event);
                for (owner, is_reader) in [(reader, true), (writer, false)] {
                    let Some(handle) = owner else { continue };
                    if handle.get().inner.is_cancelled() {
                        cancelled_readers.push((event.token as RawFd, is_reader));
                    } else {
                        ready.push(Ready::Handle(handle.clone_ref(py)));
                    }
                }
            }
        }
        // A cancelled fd callback unregisters itself, as in asyncio.
        for (fd, is_reader) in cancelled_readers {
            let removed = self.io.lock().remove(&self.poller, fd, side(!is_reader));
            drop(removed);
        }
        Ok(())
    }

    fn run_once(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        let mut discarded = Vec::new();
        let timeout = {
            let mut timers = core.timers.lock();
            timers.prune(&mut discarded);
            core.poll_timeout(&timers)
        };
        drop(discarded);

        let must_poll = timeout != Some(Duration::ZERO)
            || !core.io.lock().is_empty()
            || core.waker.is_pending();
        if must_poll {
            core.poll(py, timeout)?;
        }

        let mut discarded = Vec::new();
        {
            let end = clock::monotonic() + core.clock_resolution;
            let mut timers = core.timers.lock();
            let mut ready = core.ready.lock();
            while let Some(timer) = timers.pop_due(end, &mut discarded) {
                ready.push(Ready::Timer(timer.0));
            }
        }
        drop(discarded);

        let spare = std::mem::take(&mut *core.spare_batch.lock());
        let mut batch = core.ready.lock().take_batch(spare);
        while let Some(entry) = batch.pop_front() {
            if entry.callback().is_cancelled() {
                continue;
            }
            if let Err(err) = Self::run_entry(slf, &entry) {
                core.ready.lock().requeue_front(batch);
                return Err(err);
            }
        }
        *core.spare_batch.lock() = batch;
        Ok(())
    }

    /// Runs one callback; errors other than `SystemExit`/`KeyboardInterrupt` go to the
    /// exception handler. An `Err` means the loop must stop and re-raise it.
    fn run_entry(slf: &Bound<'_, Self>, entry: &Ready) -> PyResult<()> {
        let py = slf.py();
        let core = slf.get();
        // Only the loop thread writes the counter: a plain store avoids a locked RMW.
        let started_count = core.callbacks_run.load(Ordering::Relaxed) + 1;
        core.callbacks_run.store(started_count, Ordering::Relaxed);
        let debug = core.is_debug();
        let started = if debug {
            // asyncio's default exception handler reads the running handle from here.
            slf.setattr(intern!(py, "_current_handle"), entry.object(py))?;
            Some(clock::monotonic())
        } else {
            None
        };
        let result = entry.callback().run(py);
        if debug {
            slf.setattr(intern!(py, "_current_handle"), py.None())?;
        }
        if let Err(err) = result {
            if err.is_instance_of::<PySystemExit>(py)
                || err.is_instance_of::<PyKeyboardInterrupt>(py)
            {
                return Err(err);
            }
            Self::report_callback_error(slf, entry, err)?;
        }
        if let Some(started) = started {
            let elapsed = clock::monotonic() - started;
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

    #[cold]
    fn report_callback_error(slf: &Bound<'_, Self>, entry: &Ready, err: PyErr) -> PyResult<()> {
        let py = slf.py();
        let source = entry.callback().source(py)?;
        let context = PyDict::new(py);
        context.set_item(
            intern!(py, "message"),
            format!("Exception in callback {source}"),
        )?;
        context.set_item(intern!(py, "exception"), err.into_value(py))?;
        context.set_item(intern!(py, "handle"), entry.object(py))?;
        if let Some(tb) = entry.callback().source_traceback(py) {
            context.set_item(intern!(py, "source_traceback"), tb)?;
        }
        slf.call_method1(intern!(py, "call_exception_handler"), (context,))?;
        Ok(())
    }

    /// Empties every queue. Each one is taken out under its lock and dropped only after
    /// the lock is released (destructors may run Python code that calls the loop).
    fn discard_queued(&self) {
        let ready = self.ready.lock().clear();
        drop(ready);
        let timers = self.timers.lock().clear();
        drop(timers);
        let io = self.io.lock().clear(&self.poller);
        drop(io);
    }
}

#[pymethods]
impl LoopCore {
    #[new]
    #[pyo3(signature = (*_args, **_kwargs))]
    fn new(_args: &Bound<'_, PyTuple>, _kwargs: Option<&Bound<'_, PyDict>>) -> PyResult<Self> {
        let poller = Poller::new().map_err(os_error)?;
        let waker = Waker::new().map_err(os_error)?;
        poller
            .add(waker.fd(), Interest::READABLE, WAKER_TOKEN)
            .map_err(os_error)?;
        let timers = TimerQueue::new();
        Ok(LoopCore {
            ready: Mutex::new(ReadyQueue::new()),
            spare_batch: Mutex::new(VecDeque::new()),
            timer_cancel_counter: timers.cancel_counter(),
            timers: Mutex::new(timers),
            io: Mutex::new(IoRegistry::new()),
            poller,
            waker: Arc::new(waker),
            events: Mutex::new(Events::with_capacity(1024)),
            clock_resolution: clock::resolution(),
            closed: AtomicBool::new(false),
            stopping: AtomicBool::new(false),
            running: AtomicBool::new(false),
            debug: AtomicBool::new(false),
            callbacks_run: AtomicU64::new(0),
            polling: AtomicBool::new(false),
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
        self.clock_resolution
    }

    #[getter]
    fn _stopping(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Number of callbacks started so far.
    #[getter]
    fn _callbacks_run(&self) -> u64 {
        self.callbacks_run.load(Ordering::Relaxed)
    }

    /// Whether the loop thread is waiting in the poller right now.
    #[getter]
    fn _polling(&self) -> bool {
        self.polling.load(Ordering::Acquire)
    }

    /// Number of queued timers, cancelled ones included.
    #[getter]
    fn _timer_count(&self) -> usize {
        self.timers.lock().len()
    }

    /// Number of queued timers that are cancelled.
    #[getter]
    fn _timer_cancelled_count(&self) -> usize {
        self.timers.lock().cancelled_count()
    }

    fn is_closed(&self) -> bool {
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
        slf.get().waker.wake().map_err(os_error)?;
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
        let delay = seconds(&delay, "delay must not be None")?;
        Self::schedule_timer(slf, clock::monotonic() + delay, callback, args, context)
    }

    #[pyo3(signature = (when, callback, *args, context=None))]
    fn call_at(
        slf: &Bound<'_, Self>,
        when: Bound<'_, PyAny>,
        callback: Bound<'_, PyAny>,
        args: Bound<'_, PyTuple>,
        context: Option<Bound<'_, PyAny>>,
    ) -> PyResult<Py<TimerHandle>> {
        let when = seconds(&when, "when cannot be None")?;
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
        self.stopping.store(true, Ordering::Release);
        if self.running.load(Ordering::Acquire) {
            self.waker.wake().map_err(os_error)?;
        }
        Ok(())
    }

    /// Runs iterations until `stop()`; the Python wrapper does the bookkeeping around it.
    fn _run_forever_core(slf: &Bound<'_, Self>) -> PyResult<()> {
        let core = slf.get();
        core.check_closed()?;
        core.running.store(true, Ordering::Release);
        let result = loop {
            if let Err(err) = Self::run_once(slf) {
                break Err(err);
            }
            if core.stopping.load(Ordering::Acquire) {
                break Ok(());
            }
        };
        core.stopping.store(false, Ordering::Release);
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
        Self::run_once(slf)
    }

    /// A snapshot of the handles waiting for the next iteration (asyncio's `_ready` is
    /// the deque itself; code reads it only to test for emptiness or count).
    #[getter]
    fn _ready(&self, py: Python<'_>) -> Vec<Py<PyAny>> {
        self.ready
            .lock()
            .iter()
            .map(|entry| entry.object(py))
            .collect()
    }

    /// Marks the loop closed, drops everything queued and closes the poller and waker
    /// fds; the Python `close()` checks that the loop is not running first.
    fn _close_core(&self) {
        if self.closed.swap(true, Ordering::AcqRel) {
            return;
        }
        self.discard_queued();
        // Give the fds back now, like asyncio closing its selector. A thread racing us in
        // call_soon_threadsafe either saw `closed` already or finds the waker closed.
        self.poller.close();
        self.waker.close();
    }

    /// In a child process after `fork()`: gives this loop its own epoll instance and
    /// eventfd (the inherited ones are shared with the parent, whose loop would see every
    /// change the child makes) and registers the watched fds again. Called for every live
    /// loop by the `os.register_at_fork` hook in `ferroloop._loop`.
    fn _after_fork_in_child(&self) -> PyResult<()> {
        if self.is_closed() {
            return Ok(());
        }
        // SAFETY: this runs in the child's at-fork hook, before the child starts threads;
        // the parent's threads that used these fds do not exist here.
        unsafe {
            self.poller.reset_in_forked_child().map_err(os_error)?;
            self.waker.reset_in_forked_child().map_err(os_error)?;
        }
        self.poller
            .add(self.waker.fd(), Interest::READABLE, WAKER_TOKEN)
            .map_err(os_error)?;
        // Only the forking thread exists in the child. A lock another thread held at
        // fork time stays locked forever: the event buffer is scratch space, so its lock
        // is released by force; the fd registry is only re-registered if it is free
        // (it is held for microseconds at a time, never across a wait).
        if self.events.is_locked() {
            // SAFETY: the holder was another thread of the parent, which does not exist in
            // the child, so nothing can be using the buffer; `wait` resets its length.
            unsafe { self.events.force_unlock() };
        }
        let Some(mut io) = self.io.try_lock() else {
            return Ok(());
        };
        let lost = io.register_all(&self.poller);
        drop(io);
        for handle in &lost {
            handle.get().cancel();
        }
        drop(lost);
        Ok(())
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
        let py = slf.py();
        let fd = fd_number(fd)?;
        let core = slf.get();
        core.check_closed()?;
        let handle = Handle::create(
            py,
            Callback::new(py, callback, args, None, core.is_debug())?,
        )?;
        let previous = core
            .io
            .lock()
            .set(&core.poller, fd, side(writer), handle.clone_ref(py))
            .map_err(os_error)?;
        if let Some(previous) = previous {
            previous.get().cancel();
        }
        Ok(handle)
    }

    /// Unregisters the reader (`writer=False`) or writer of `fd`; returns whether there
    /// was one. An fd number no fd can have (beyond a C int) was never watched.
    fn _remove_fd_callback(&self, fd: &Bound<'_, PyAny>, writer: bool) -> bool {
        let Ok(fd) = fd.extract::<RawFd>() else {
            return false;
        };
        if self.is_closed() {
            return false;
        }
        let removed = self.io.lock().remove(&self.poller, fd, side(writer));
        match removed {
            Some(handle) => {
                handle.get().cancel();
                true
            }
            None => false,
        }
    }

    /// The reader (`writer=False`) or writer handle registered for `fd`, if any.
    fn _get_fd_callback(&self, py: Python<'_>, fd: RawFd, writer: bool) -> Option<Py<Handle>> {
        self.io
            .lock()
            .get(fd, side(writer))
            .map(|h| h.clone_ref(py))
    }

    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        if let Some(ready) = self.ready.try_lock() {
            for entry in ready.iter() {
                entry.traverse(&visit)?;
            }
        }
        if let Some(timers) = self.timers.try_lock() {
            for timer in timers.iter() {
                visit.call(&timer.0)?;
            }
        }
        if let Some(io) = self.io.try_lock() {
            for handle in io.iter() {
                visit.call(handle)?;
            }
        }
        Ok(())
    }

    fn __clear__(&self) {
        self.discard_queued();
    }
}
