//! The child reaper for kernels without pidfds (Linux < 5.3, or a seccomp profile that
//! refuses `pidfd_open`): one `SIGCHLD` handler and one thread for the whole process, not
//! a thread per child.
//!
//! The handler only writes a byte to a pipe (async-signal-safe) and then calls the handler
//! it replaced, so a `SIGCHLD` handler installed before (Python's, another library's)
//! keeps working. A handler installed after ours (`signal.signal`, `add_signal_handler`)
//! replaces it; [`watch`] puts ours back in front of it (chaining to it), and a loop whose
//! own signal handling sees a `SIGCHLD` calls [`kick`], so children are still reaped. The reaper thread sleeps on that pipe; on each wake-up it tries
//! `waitpid(pid, WNOHANG)` for every child registered with [`watch`] — never
//! `waitpid(-1)`, so children it was not asked about are left to their owners — and calls
//! the exited children's `on_exit` from the reaper thread.
//!
//! Invariants: a registered child is reaped exactly once, here, and its `on_exit` called
//! once, with the returncode or with the `waitpid` error (`ECHILD`: someone else reaped
//! it); a child that exited before it was registered is found, because [`watch`] wakes
//! the thread itself after registering. A forked child of this process starts over with
//! an empty registry and a thread of its own on its first [`watch`] (the parent's
//! children are not its children). The handler never recurses into itself through a
//! chain of handlers that lead back to it.

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::sync::atomic::{AtomicBool, AtomicI32, AtomicPtr, Ordering};
use std::sync::{Arc, Mutex};

use crate::process;

/// What to do when a watched child exits: called once, from the reaper thread.
pub type OnExit = Box<dyn FnOnce(io::Result<i32>) + Send>;

/// The write end of the current reaper's pipe, for the signal handler (`-1`: none yet).
static WAKE_FD: AtomicI32 = AtomicI32::new(-1);
/// The `SIGCHLD` disposition replaced by ours, called after ours (null: none yet). Each
/// one is leaked: a signal handler may be reading the previous one.
static PREVIOUS: AtomicPtr<libc::sigaction> = AtomicPtr::new(std::ptr::null_mut());
/// Set while [`on_sigchld`] runs its chained handler (a chain leading back to us stops).
static CHAINING: AtomicBool = AtomicBool::new(false);
/// The reaper of this process (re-made in a forked child).
static REAPER: Mutex<Option<Arc<Reaper>>> = Mutex::new(None);

struct Reaper {
    owner_pid: libc::pid_t,
    children: Mutex<HashMap<libc::pid_t, OnExit>>,
    read: OwnedFd,
    write: OwnedFd,
}

/// Reaps child `pid` when it exits and then calls `on_exit` (from the reaper thread).
pub fn watch(pid: libc::pid_t, on_exit: OnExit) -> io::Result<()> {
    let reaper = current()?;
    install_handler()?;
    reaper
        .children
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .insert(pid, on_exit);
    reaper.wake(); // it may have exited before it was registered
    Ok(())
}

/// Makes the reaper look for exited children now (a `SIGCHLD` was seen elsewhere: a
/// handler installed after ours may not chain to it). No-op without a reaper.
pub fn kick() {
    let reaper = REAPER.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(r) = reaper.as_ref() {
        if r.owner_pid == std::process::id() as libc::pid_t {
            r.wake();
        }
    }
}

/// How many children are being waited for (for tests and stats).
pub fn watched() -> usize {
    let reaper = REAPER.lock().unwrap_or_else(|e| e.into_inner());
    match reaper.as_ref() {
        Some(r) if r.owner_pid == std::process::id() as libc::pid_t => {
            r.children.lock().unwrap_or_else(|e| e.into_inner()).len()
        }
        _ => 0,
    }
}

/// This process's reaper, started on first use (and again in a forked child).
fn current() -> io::Result<Arc<Reaper>> {
    let mut slot = REAPER.lock().unwrap_or_else(|e| e.into_inner());
    let pid = std::process::id() as libc::pid_t;
    if let Some(reaper) = slot.as_ref().filter(|r| r.owner_pid == pid) {
        return Ok(Arc::clone(reaper));
    }
    // A parent's reaper in a forked child: its thread does not exist here. Its pipe is
    // left open (the parent's thread may still read it through a shared file
    // description, which is harmless: a wake-up only makes it look again).
    if let Some(stale) = slot.take() {
        std::mem::forget(stale);
    }
    let mut fds = [0 as libc::c_int; 2];
    syscall!(pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC))?;
    // SAFETY: pipe2 just returned these two new fds; nothing else owns them.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    let reaper = Arc::new(Reaper {
        owner_pid: pid,
        children: Mutex::new(HashMap::new()),
        read,
        write,
    });
    WAKE_FD.store(reaper.write.as_raw_fd(), Ordering::SeqCst);
    let worker = Arc::clone(&reaper);
    std::thread::Builder::new()
        .name("ferroloop-reaper".into())
        .spawn(move || worker.run())?;
    *slot = Some(Arc::clone(&reaper));
    Ok(reaper)
}

impl Reaper {
    fn wake(&self) {
        let byte = 1u8;
        // SAFETY: writing one byte from a live stack variable to our own pipe.
        let _ = unsafe { libc::write(self.write.as_raw_fd(), (&byte as *const u8).cast(), 1) };
    }

    fn run(&self) {
        loop {
            self.sleep();
            self.reap_exited();
        }
    }

    /// Blocks until the pipe is readable, then empties it.
    fn sleep(&self) {
        let mut pollfd = libc::pollfd {
            fd: self.read.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        };
        // SAFETY: one valid pollfd on the stack; -1 waits without a timeout.
        let _ = unsafe { libc::poll(&mut pollfd, 1, -1) };
        let mut buf = [0u8; 64];
        while matches!(crate::net::read(self.read.as_raw_fd(), &mut buf), Ok(n) if n > 0) {}
    }

    /// Reaps every registered child that has exited and calls its `on_exit` (outside the
    /// registry's lock, so that `on_exit` may register another child).
    fn reap_exited(&self) {
        let mut exited = Vec::new();
        {
            let mut children = self.children.lock().unwrap_or_else(|e| e.into_inner());
            let finished: Vec<(libc::pid_t, io::Result<i32>)> = children
                .keys()
                .filter_map(|&pid| match process::try_reap(pid) {
                    Ok(None) => None,
                    Ok(Some(code)) => Some((pid, Ok(code))),
                    Err(e) => Some((pid, Err(e))),
                })
                .collect();
            for (pid, result) in finished {
                if let Some(on_exit) = children.remove(&pid) {
                    exited.push((on_exit, result));
                }
            }
        }
        for (on_exit, result) in exited {
            on_exit(result);
        }
    }
}

/// Our `SIGCHLD` handler: wake the reaper, then chain to the handler we replaced.
extern "C" fn on_sigchld(
    signo: libc::c_int,
    info: *mut libc::siginfo_t,
    context: *mut libc::c_void,
) {
    // SAFETY: errno is thread-local; reading and restoring it keeps the interrupted code's
    // value (the handler's write may change it).
    let saved_errno = unsafe { *libc::__errno_location() };
    let fd = WAKE_FD.load(Ordering::Relaxed);
    if fd >= 0 {
        let byte = 1u8;
        // SAFETY: write(2) is async-signal-safe; one byte from the stack.
        let _ = unsafe { libc::write(fd, (&byte as *const u8).cast(), 1) };
    }
    let previous = PREVIOUS.load(Ordering::Acquire);
    if !previous.is_null() && !CHAINING.swap(true, Ordering::AcqRel) {
        // SAFETY: PREVIOUS only ever holds leaked, never-freed sigaction values.
        let previous = unsafe { &*previous };
        let handler = previous.sa_sigaction;
        if handler != libc::SIG_DFL && handler != libc::SIG_IGN {
            if previous.sa_flags & libc::SA_SIGINFO != 0 {
                // SAFETY: the previous disposition was installed with SA_SIGINFO, so its
                // handler has this three-argument signature.
                let f: extern "C" fn(libc::c_int, *mut libc::siginfo_t, *mut libc::c_void) =
                    unsafe { std::mem::transmute(handler) };
                f(signo, info, context);
            } else {
                // SAFETY: without SA_SIGINFO the handler takes the signal number only.
                let f: extern "C" fn(libc::c_int) = unsafe { std::mem::transmute(handler) };
                f(signo);
            }
        }
        CHAINING.store(false, Ordering::Release);
    }
    // SAFETY: as above.
    unsafe { *libc::__errno_location() = saved_errno };
}

/// Puts [`on_sigchld`] in front of the current `SIGCHLD` disposition, unless it is there
/// already (a forked child inherits it).
fn install_handler() -> io::Result<()> {
    let ours = on_sigchld as *const () as usize;
    // The disposition to chain to is recorded before ours goes in, so that no SIGCHLD
    // arriving in between misses it.
    // SAFETY: a zeroed sigaction is a valid "no handler, empty mask" value; `current` is
    // written by the kernel before it is read, and ours is filled in before it is passed.
    unsafe {
        let mut current: libc::sigaction = std::mem::zeroed();
        syscall!(sigaction(libc::SIGCHLD, std::ptr::null(), &mut current))?;
        if current.sa_sigaction == ours {
            return Ok(());
        }
        PREVIOUS.store(Box::into_raw(Box::new(current)), Ordering::Release);
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = ours;
        action.sa_flags = libc::SA_SIGINFO | libc::SA_RESTART | libc::SA_NOCLDSTOP;
        libc::sigemptyset(&mut action.sa_mask);
        syscall!(sigaction(libc::SIGCHLD, &action, std::ptr::null_mut()))?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::process::Command;
    use std::sync::mpsc;
    use std::time::Duration;

    fn watch_channel(pid: libc::pid_t) -> mpsc::Receiver<io::Result<i32>> {
        let (tx, rx) = mpsc::channel();
        watch(pid, Box::new(move |result| tx.send(result).unwrap())).unwrap();
        rx
    }

    #[test]
    #[allow(clippy::zombie_processes)] // reaped by the reaper, which is what is tested
    fn reaps_children_as_they_exit_with_their_returncodes() {
        let slow = Command::new("sh")
            .args(["-c", "sleep 0.2; exit 4"])
            .spawn()
            .unwrap();
        let fast = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        let slow_exit = watch_channel(slow.id() as libc::pid_t);
        let fast_exit = watch_channel(fast.id() as libc::pid_t);
        let wait = Duration::from_secs(10);
        assert_eq!(fast_exit.recv_timeout(wait).unwrap().unwrap(), 7);
        assert_eq!(slow_exit.recv_timeout(wait).unwrap().unwrap(), 4);
        // Reaped: the kernel no longer knows them as our children.
        let again = process::try_reap(slow.id() as libc::pid_t).unwrap_err();
        assert_eq!(again.raw_os_error(), Some(libc::ECHILD));
    }

    #[test]
    #[allow(clippy::zombie_processes)] // reaped by the reaper, which is what is tested
    fn a_child_that_exited_before_it_was_watched_is_found() {
        let child = Command::new("true").spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        // Let it exit (a zombie now) before anyone watches it.
        std::thread::sleep(Duration::from_millis(100));
        let exit = watch_channel(pid);
        assert_eq!(
            exit.recv_timeout(Duration::from_secs(10)).unwrap().unwrap(),
            0
        );
    }

    #[test]
    fn a_child_reaped_elsewhere_reports_echild() {
        let mut child = Command::new("true").spawn().unwrap();
        child.wait().unwrap();
        let exit = watch_channel(child.id() as libc::pid_t);
        let err = exit
            .recv_timeout(Duration::from_secs(10))
            .unwrap()
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ECHILD));
    }
}
