//! What `loop.stats()` reports about time beyond the counters: how late timers fire, and
//! (opt-in) how long callbacks run.
//!
//! * [`TimerLag`] — always on and free: the driver already reads the clock to find the
//!   due timers, and hands each timer's lateness to `timer_entry`; the last
//!   [`LAG_WINDOW`] values are kept in a ring of atomics (written by the loop thread
//!   only, read by `stats()` from any thread: a snapshot, not a consistent cut).
//! * [`CallbackTiming`] — off by default, because timing a callback costs two clock reads
//!   (about 45 ns each on the 2-core benchmark VM, a third of a no-op callback). When on
//!   (`loop.set_callback_timing(True)`, `FERROLOOP_CALLBACK_TIMING=1`, or the monitor),
//!   it keeps the [`SLOWEST_KEPT`] slowest callbacks of the last [`RECENT_SECONDS`] (with
//!   the handle's repr made when it entered the list) and the run time of each live task
//!   (a callback whose callable is bound to an `asyncio.Task` is a step of that task).
//!
//! Invariant: the task table holds weak references only; a finished task's entry goes at
//! the next snapshot or when its address is reused.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

use parking_lot::Mutex;
use pyo3::prelude::*;
use pyo3::types::{PyDict, PyList, PyWeakrefReference};

use crate::py;
use crate::ready::Ready;

/// Timer lateness values kept for percentiles.
pub const LAG_WINDOW: usize = 1024;
/// Slowest callbacks kept.
pub const SLOWEST_KEPT: usize = 10;
/// How long a slow callback stays in the list.
pub const RECENT_SECONDS: f64 = 60.0;
/// Tasks reported as the busiest.
const BUSIEST_REPORTED: usize = 10;
/// Above this many task entries, dead ones are swept before adding another.
const TASKS_SWEEP_AT: usize = 4096;

/// The lateness of the last [`LAG_WINDOW`] timers, as f64 bits.
pub struct TimerLag {
    ring: Box<[AtomicU64]>,
    recorded: AtomicU64,
}

impl TimerLag {
    pub fn new() -> Self {
        TimerLag {
            ring: (0..LAG_WINDOW).map(|_| AtomicU64::new(0)).collect(),
            recorded: AtomicU64::new(0),
        }
    }

    /// Records one timer's lateness (loop thread only).
    pub fn record(&self, lag: f64) {
        let n = self.recorded.load(Ordering::Relaxed);
        self.ring[(n % LAG_WINDOW as u64) as usize].store(lag.to_bits(), Ordering::Relaxed);
        self.recorded.store(n + 1, Ordering::Release);
    }

    /// `{"timers": n, "p50": s, "p99": s, "max": s}` over the window (seconds; `None`
    /// values before any timer fired).
    pub fn snapshot<'py>(&self, py: Python<'py>) -> PyResult<Bound<'py, PyDict>> {
        let n = self.recorded.load(Ordering::Acquire);
        let kept = n.min(LAG_WINDOW as u64) as usize;
        let mut values: Vec<f64> = self.ring[..kept]
            .iter()
            .map(|v| f64::from_bits(v.load(Ordering::Relaxed)))
            .collect();
        values.sort_by(f64::total_cmp);
        let pick = |q: f64| -> Option<f64> {
            let last = values.len().checked_sub(1)?;
            Some(values[((last as f64) * q).round() as usize])
        };
        let out = PyDict::new(py);
        out.set_item("timers", kept)?;
        out.set_item("p50", pick(0.5))?;
        out.set_item("p99", pick(0.99))?;
        out.set_item("max", values.last().copied())?;
        Ok(out)
    }
}

struct SlowCallback {
    seconds: f64,
    /// Monotonic time it ended.
    at: f64,
    handle: String,
    /// The repr of the task it was a step of (the handle's own repr names only a C
    /// wrapper then).
    task: Option<String>,
}

struct TaskTime {
    seconds: f64,
    steps: u64,
    task: Py<PyWeakrefReference>,
}

#[derive(Default)]
struct Timings {
    /// Slowest first.
    slowest: Vec<SlowCallback>,
    /// By the task's address.
    tasks: HashMap<usize, TaskTime>,
}

/// Opt-in per-callback timing (see the module docs).
#[derive(Default)]
pub struct CallbackTiming {
    enabled: AtomicBool,
    data: Mutex<Timings>,
}

impl CallbackTiming {
    pub fn enabled(&self) -> bool {
        self.enabled.load(Ordering::Relaxed)
    }

    /// Turns timing on or off; turning it off forgets what was measured.
    pub fn set_enabled(&self, enabled: bool) {
        self.enabled.store(enabled, Ordering::Relaxed);
        if !enabled {
            let old = std::mem::take(&mut *self.data.lock());
            drop(old); // weak references only: dropping them runs no Python code
        }
    }

    /// `entry` ran for `seconds`, ending at monotonic time `now`.
    pub fn record(&self, py: Python<'_>, entry: &Ready, seconds: f64, now: f64) -> PyResult<()> {
        let task = step_of_task(py, entry)?;
        let mut data = self.data.lock();
        let enters = data.slowest.len() < SLOWEST_KEPT
            || data.slowest.last().is_some_and(|s| s.seconds < seconds);
        if enters {
            drop(data); // the repr may run Python code that calls the loop
            let handle = entry.object(py).bind(py).repr()?.to_string();
            let task = match &task {
                Some(task) => Some(task.repr()?.to_string()),
                None => None,
            };
            data = self.data.lock();
            let slowest = &mut data.slowest;
            let at = slowest.partition_point(|s| s.seconds >= seconds);
            let slow = SlowCallback {
                seconds,
                at: now,
                handle,
                task,
            };
            slowest.insert(at, slow);
            slowest.retain(|s| now - s.at <= RECENT_SECONDS);
            slowest.truncate(SLOWEST_KEPT);
        }
        if let Some(task) = task {
            let key = task.as_ptr() as usize;
            let fresh = match data.tasks.get(&key) {
                Some(entry) => entry.task.bind(py).upgrade().is_none(), // address reused
                None => true,
            };
            if fresh {
                if data.tasks.len() >= TASKS_SWEEP_AT {
                    data.tasks.retain(|_, t| t.task.bind(py).upgrade().is_some());
                }
                let weak = PyWeakrefReference::new(&task)?.unbind();
                data.tasks.insert(
                    key,
                    TaskTime {
                        seconds: 0.0,
                        steps: 0,
                        task: weak,
                    },
                );
            }
            let entry = data.tasks.get_mut(&key).expect("inserted above");
            entry.seconds += seconds;
            entry.steps += 1;
        }
        Ok(())
    }

    /// `(slowest_callbacks, busiest_tasks)` as lists of dicts, or `None`s when timing is
    /// off.
    pub fn snapshot<'py>(
        &self,
        py: Python<'py>,
        now: f64,
    ) -> PyResult<(Option<ListOfDicts<'py>>, Option<ListOfDicts<'py>>)> {
        if !self.enabled() {
            return Ok((None, None));
        }
        let (slow, mut live) = {
            let mut data = self.data.lock();
            data.slowest.retain(|s| now - s.at <= RECENT_SECONDS);
            data.tasks.retain(|_, t| t.task.bind(py).upgrade().is_some());
            let slow: Vec<(f64, f64, String, Option<String>)> = data
                .slowest
                .iter()
                .map(|s| (s.seconds, now - s.at, s.handle.clone(), s.task.clone()))
                .collect();
            let live: Vec<(f64, u64, Bound<'py, PyAny>)> = data
                .tasks
                .values()
                .filter_map(|t| Some((t.seconds, t.steps, t.task.bind(py).upgrade()?)))
                .collect();
            (slow, live)
        };
        let slowest = PyList::empty(py);
        for (seconds, ago, handle, task) in slow {
            let item = PyDict::new(py);
            item.set_item("seconds", seconds)?;
            item.set_item("ago", ago)?;
            item.set_item("handle", handle)?;
            item.set_item("task", task)?;
            slowest.append(item)?;
        }
        live.sort_by(|a, b| b.0.total_cmp(&a.0));
        let busiest = PyList::empty(py);
        for (seconds, steps, task) in live.into_iter().take(BUSIEST_REPORTED) {
            let item = PyDict::new(py);
            item.set_item("task", task.call_method0("get_name")?)?;
            item.set_item("seconds", seconds)?;
            item.set_item("steps", steps)?;
            item.set_item("done", task.call_method0("done")?)?;
            busiest.append(item)?;
        }
        Ok((Some(slowest), Some(busiest)))
    }
}

type ListOfDicts<'py> = Bound<'py, PyList>;

/// The task a ready entry is a step of: its callable is bound to an `asyncio.Task`
/// (`Task.__step`, its C wrapper, or `Task.__wakeup`).
fn step_of_task<'py>(py: Python<'py>, entry: &Ready) -> PyResult<Option<Bound<'py, PyAny>>> {
    let Some(callable) = entry.callback().and_then(|c| c.callable(py)) else {
        return Ok(None);
    };
    let Ok(owner) = callable.getattr(intern!(py, "__self__")) else {
        return Ok(None);
    };
    Ok(owner.is_instance(py::task_type(py)?)?.then_some(owner))
}
