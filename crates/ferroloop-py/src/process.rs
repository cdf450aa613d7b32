//! Child exit watching for subprocesses: one `pidfd` per child, watched by the loop's
//! driver like any fd, reaped in Rust when it turns readable; no polling, no thread per
//! child, no `SIGCHLD` handler. Where the kernel has no pidfds (`ENOSYS` before Linux
//! 5.3, `EPERM` under seccomp profiles that refuse `pidfd_open`) or
//! `FERROLOOP_CHILD_WATCHER=sigchld` asks for it, the core's process-wide `SIGCHLD`
//! reaper (`ferroloop_core::reaper`) reaps the child instead and the callback is handed
//! to the loop with `call_soon_threadsafe`.
//!
//! `Loop._make_subprocess_transport` (`ferroloop._subprocess`) calls
//! `LoopCore._watch_child(pid, callback)`; when the child exits the loop reaps it and runs
//! `callback(pid, returncode)` as a loop callback (its failure goes to the exception
//! handler). For a child someone else already reaped (`Popen.poll()` in `send_signal`
//! does), the returncode is `None`: the caller knows where else to look.
//!
//! Invariants: a `ChildWatch` is registered with the driver (as `FdOwner::Child`) from
//! `_watch_child` until the child is reaped; the pidfd is unregistered before it is
//! closed; the callback runs at most once (never after the loop closed: then a thread, or
//! the reaper, reaps the child, so that no zombie is left).

use std::os::fd::{AsRawFd, OwnedFd};
use std::sync::OnceLock;

use ferroloop_core::{process, reaper, Side};
use parking_lot::Mutex;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::PyTraverseError;

use crate::errors::os_error;
use crate::event_loop::LoopCore;

/// The exception handler's message for a failed reap or exit callback.
const REAP_FAILED: &str = "Error while reaping a child process";

/// A child process the loop waits for.
#[pyclass(frozen, module = "ferroloop._ferroloop")]
pub struct ChildWatch {
    pid: libc::pid_t,
    /// Taken (and closed) once the child is reaped.
    pidfd: Mutex<Option<OwnedFd>>,
    callback: Py<PyAny>,
}

impl ChildWatch {
    /// Starts watching child `pid`: through its pidfd, or the `SIGCHLD` reaper.
    pub fn start(
        event_loop: &Bound<'_, LoopCore>,
        pid: libc::pid_t,
        callback: Py<PyAny>,
    ) -> PyResult<()> {
        let py = event_loop.py();
        if !pidfds_wanted() {
            return watch_with_reaper(event_loop, pid, callback);
        }
        let pidfd = match process::pidfd_open(pid) {
            Ok(fd) => Some(fd),
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)) => {
                return watch_with_reaper(event_loop, pid, callback);
            }
            Err(e) if e.raw_os_error() == Some(libc::ESRCH) => None,
            Err(e) => return Err(os_error(e)),
        };
        let Some(pidfd) = pidfd else {
            // Gone already: reaped by someone else.
            event_loop.call_method1(intern!(py, "call_soon"), (callback, pid, py.None()))?;
            return Ok(());
        };
        let fd = pidfd.as_raw_fd();
        let watch = Py::new(
            py,
            ChildWatch {
                pid,
                pidfd: Mutex::new(Some(pidfd)),
                callback,
            },
        )?;
        event_loop.get().watch_child(fd, watch)
    }

    /// The pidfd turned readable: reap the child and run the callback.
    pub fn on_ready(slf: &Bound<'_, Self>, event_loop: &Bound<'_, LoopCore>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let returncode = match process::try_reap(this.pid) {
            Ok(None) => return Ok(()), // not yet (spurious readiness)
            Ok(Some(code)) => Some(code),
            Err(e) if e.raw_os_error() == Some(libc::ECHILD) => None, // reaped elsewhere
            Err(e) => return LoopCore::report_error(event_loop, REAP_FAILED, os_error(e)),
        };
        let pidfd = this.pidfd.lock().take();
        if let Some(pidfd) = pidfd {
            event_loop.get().unwatch_child(pidfd.as_raw_fd());
            drop(pidfd);
        }
        match this.callback.bind(py).call1((this.pid, returncode)) {
            Ok(_) => Ok(()),
            Err(err) => LoopCore::report_error(event_loop, REAP_FAILED, err),
        }
    }

    /// The loop closed before the child exited: a thread waits for it and reaps it, so
    /// that it never stays a zombie (its exit is reported to no one, as in asyncio).
    pub fn reap_in_background(&self) {
        let Some(pidfd) = self.pidfd.lock().take() else {
            return; // reaped already
        };
        drop(pidfd);
        let pid = self.pid;
        let spawned = std::thread::Builder::new()
            .name(format!("ferroloop-reap-{pid}"))
            .spawn(move || {
                let _ = process::wait_blocking(pid);
            });
        // Without a thread (resources exhausted) the child is left to init's adoption
        // once this process exits; nothing better can be done here.
        drop(spawned);
    }

    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        visit.call(&self.callback)
    }
}

#[pymethods]
impl ChildWatch {
    fn __traverse__(&self, visit: PyVisit<'_>) -> Result<(), PyTraverseError> {
        self.traverse(&visit)
    }

    fn __repr__(&self) -> String {
        format!("<ChildWatch pid={}>", self.pid)
    }
}

/// Whether children are watched through pidfds (unless `FERROLOOP_CHILD_WATCHER=sigchld`;
/// read once per process).
fn pidfds_wanted() -> bool {
    static WANTED: OnceLock<bool> = OnceLock::new();
    *WANTED.get_or_init(|| {
        std::env::var("FERROLOOP_CHILD_WATCHER").map_or(true, |v| v != "sigchld")
    })
}

/// Which child watcher this process uses for its next child: `"pidfd"` or `"sigchld"`
/// (`ferroloop._ferroloop.child_watcher()`).
#[pyfunction]
pub fn child_watcher() -> &'static str {
    let probe = pidfds_wanted()
        && match process::pidfd_open(std::process::id() as libc::pid_t) {
            Ok(_) => true,
            Err(e) => !matches!(e.raw_os_error(), Some(libc::ENOSYS | libc::EPERM)),
        };
    if probe {
        "pidfd"
    } else {
        "sigchld"
    }
}

/// Hands child `pid` to the process-wide `SIGCHLD` reaper; its exit reaches `callback`
/// through `call_soon_threadsafe` (dropped if the loop closed meanwhile: the child is
/// reaped all the same).
fn watch_with_reaper(
    event_loop: &Bound<'_, LoopCore>,
    pid: libc::pid_t,
    callback: Py<PyAny>,
) -> PyResult<()> {
    let owner = event_loop.clone().unbind();
    let on_exit = Box::new(move |result: std::io::Result<i32>| {
        // `None` (not attached) when the interpreter is finalizing: nobody is left to tell.
        let _ = Python::try_attach(|py| {
            let owner = owner.bind(py);
            if owner.get().is_closed() {
                return;
            }
            // An error is ECHILD: reaped elsewhere, and the caller knows where to look.
            let returncode = result.ok();
            let scheduled = owner.call_method1(
                intern!(py, "call_soon_threadsafe"),
                (callback, pid, returncode),
            );
            if let Err(err) = scheduled {
                // Closed between the check and the call: nobody is left to tell.
                if !owner.get().is_closed() {
                    err.write_unraisable(py, Some(owner.as_any()));
                }
            }
        });
    });
    reaper::watch(pid, on_exit).map_err(os_error)
}

/// The side a pidfd is watched on.
pub const CHILD_SIDE: Side = Side::Read;
