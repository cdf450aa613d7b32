//! The blocking detector's watchdog: a Rust thread that notices, while it happens, that the
//! loop has been running one callback (or task step) for longer than a threshold.
//!
//! It costs the loop thread nothing: the loop already counts the callbacks it starts
//! (`LoopCore::callbacks_run`) and the driver says whether it is polling. Every
//! `interval` (a quarter of the threshold, between 1 ms and 250 ms) the watchdog samples
//! both: a loop that is running, not polling, and has not started another callback since
//! the last sample is inside one callback. Once that has lasted `threshold`, the watchdog
//! takes the GIL and calls `reporter("blocked", seconds, running)` — `running` is the
//! handle (or transport) the loop thread is running, `ferroloop._blocking` then reads the
//! loop thread's stack — and when the loop moves on, `reporter("unblocked",
//! total_seconds, None)`. One report per stall.
//!
//! A stall is timed from the sample that first saw its callback (at most one interval
//! after it began). When the loop moved on while the watchdog waited for the GIL (C code
//! holding the GIL), the stall is reported as ended only, without a stack, since the
//! stack would be the next callback's. Stopping the detector during a stall still gives
//! the stall's "unblocked" report.
//!
//! Invariants: at most one watchdog per loop; `stop` wakes the thread at once and joins
//! it; the thread exits by itself when the loop closes; the reporter runs with the GIL on
//! the watchdog thread, never on the loop thread.
//!
//! The thread waits on `std::sync`'s mutex and condition variable, not `parking_lot`'s:
//! the watchdog is nearly always parked, and `parking_lot` keeps parked threads in one
//! global table that `fork()` copies into the child with the parent's threads gone; the
//! child's next contended `parking_lot` wait in the same bucket then followed a dead
//! thread's entry (seen: the child's own watchdog crashing in `wait_for`). `std`'s
//! primitives wait on a futex inside the object itself: nothing global to go stale.

use std::sync::{Arc, Condvar, Mutex, PoisonError};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use pyo3::prelude::*;

use crate::event_loop::LoopCore;

/// A running watchdog thread.
pub struct Watchdog {
    stop: Arc<(Mutex<bool>, Condvar)>,
    thread: Option<JoinHandle<()>>,
}

impl Watchdog {
    /// Starts watching `core` with `threshold` seconds; reports go to `reporter`.
    pub fn start(core: Py<LoopCore>, threshold: f64, reporter: Py<PyAny>) -> std::io::Result<Self> {
        let stop = Arc::new((Mutex::new(false), Condvar::new()));
        let thread_stop = Arc::clone(&stop);
        let threshold = Duration::from_secs_f64(threshold);
        let interval = (threshold / 4).clamp(Duration::from_millis(1), Duration::from_millis(250));
        let thread = std::thread::Builder::new()
            .name("ferroloop-watchdog".into())
            .spawn(move || watch(&core, threshold, interval, &reporter, &thread_stop))?;
        Ok(Watchdog {
            stop,
            thread: Some(thread),
        })
    }

    /// Stops the thread and waits for it (a report in progress finishes first).
    pub fn stop(mut self, py: Python<'_>) {
        {
            let (flag, wake) = &*self.stop;
            *flag.lock().unwrap_or_else(PoisonError::into_inner) = true;
            wake.notify_all();
        }
        if let Some(thread) = self.thread.take() {
            // The thread may be waiting for the GIL to report: let it have it.
            py.detach(|| {
                let _ = thread.join();
            });
        }
    }
}

/// The watchdog thread's loop (see the module docs).
fn watch(
    core: &Py<LoopCore>,
    threshold: Duration,
    interval: Duration,
    reporter: &Py<PyAny>,
    stop: &(Mutex<bool>, Condvar),
) {
    let mut last_count = u64::MAX;
    let mut last_change = Instant::now();
    let mut reported = false;
    loop {
        let stopping = {
            let (flag, wake) = stop;
            let mut stopped = flag.lock().unwrap_or_else(PoisonError::into_inner);
            if !*stopped {
                stopped = wake
                    .wait_timeout(stopped, interval)
                    .unwrap_or_else(PoisonError::into_inner)
                    .0;
            }
            *stopped
        };
        let loop_core = core.get();
        if stopping || loop_core.closed_now() {
            if reported {
                // The stall in progress ends with the detector: give its total.
                report(reporter, "unblocked", last_change.elapsed());
            }
            return;
        }
        let now = Instant::now();
        let count = loop_core.callbacks_started();
        let inside_callback = loop_core.is_running() && !loop_core.is_polling();
        if inside_callback && count == last_count {
            if now - last_change >= threshold && !reported {
                reported = report_stall(loop_core, reporter, count, last_change);
            }
        } else {
            if reported {
                reported = false;
                report(reporter, "unblocked", now - last_change);
            }
            last_count = count;
            last_change = now;
        }
    }
}

/// Reports the stall of callback number `count` (started by `since`) as "blocked" —
/// unless the loop moved on while this thread waited for the GIL (a callback running C
/// code that holds the GIL): then the stack would be the next callback's, so the stall is
/// reported as ended, without a stack. Returns whether a "blocked" report is open.
fn report_stall(loop_core: &LoopCore, reporter: &Py<PyAny>, count: u64, since: Instant) -> bool {
    Python::attach(|py| {
        let moved_on = loop_core.callbacks_started() != count || loop_core.is_polling();
        if moved_on {
            call_reporter(py, reporter, "unblocked", since.elapsed(), None);
        } else {
            let running = loop_core.running_object(py);
            call_reporter(py, reporter, "blocked", since.elapsed(), running);
        }
        !moved_on
    })
}

fn report(reporter: &Py<PyAny>, event: &str, duration: Duration) {
    Python::attach(|py| call_reporter(py, reporter, event, duration, None));
}

fn call_reporter(
    py: Python<'_>,
    reporter: &Py<PyAny>,
    event: &str,
    duration: Duration,
    running: Option<Py<PyAny>>,
) {
    if let Err(err) = reporter.call1(py, (event, duration.as_secs_f64(), running)) {
        // A failing reporter must not end the watchdog: show it as Python would.
        err.write_unraisable(py, Some(reporter.bind(py)));
    }
}
