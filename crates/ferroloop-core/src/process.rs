//! Child processes without polling and without a thread per child: a `pidfd` turns
//! readable when its process exits, so the loop watches it like any fd and reaps the child
//! then.
//!
//! * [`pidfd_open`] — a pidfd for a child (Linux ≥ 5.3; `ENOSYS` before).
//! * [`try_reap`] — `waitpid(pid, WNOHANG)`: the exit status as asyncio reports it
//!   ([`returncode`]), or `None` while the child runs; [`wait_blocking`] waits for it.
//!
//! Invariant kept by callers: only the owner of a child reaps it; a child reaped by
//! someone else gives `ECHILD`, which the binding reports as asyncio does (returncode 255
//! with a warning).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd};

/// A pidfd for process `pid` (close-on-exec); `ESRCH` if it no longer exists.
pub fn pidfd_open(pid: libc::pid_t) -> io::Result<OwnedFd> {
    let flags: libc::c_uint = 0; // pidfds are always close-on-exec
    let fd = syscall!(syscall(libc::SYS_pidfd_open, pid, flags))?;
    // SAFETY: the kernel just returned this new fd; nothing else owns it.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as libc::c_int) })
}

/// Reaps child `pid` if it has exited: `Some(returncode)`, or `None` while it runs.
pub fn try_reap(pid: libc::pid_t) -> io::Result<Option<i32>> {
    let mut status: libc::c_int = 0;
    loop {
        match syscall!(waitpid(pid, &mut status, libc::WNOHANG)) {
            Ok(0) => return Ok(None),
            Ok(_) => return Ok(Some(returncode(status))),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// Waits for child `pid` to exit and reaps it (blocking): its returncode.
pub fn wait_blocking(pid: libc::pid_t) -> io::Result<i32> {
    let mut status: libc::c_int = 0;
    loop {
        match syscall!(waitpid(pid, &mut status, 0)) {
            Ok(_) => return Ok(returncode(status)),
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

/// A `waitpid` status as `subprocess`/asyncio report it: the exit code, or minus the
/// signal number that killed the process.
pub fn returncode(status: libc::c_int) -> i32 {
    if libc::WIFSIGNALED(status) {
        -libc::WTERMSIG(status)
    } else if libc::WIFEXITED(status) {
        libc::WEXITSTATUS(status)
    } else {
        status
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Interest, Poller};
    use std::os::fd::AsRawFd;
    use std::process::Command;
    use std::time::Duration;

    fn wait_readable(fd: &OwnedFd) {
        let poller = Poller::new().unwrap();
        poller.add(fd.as_raw_fd(), Interest::READABLE, 1).unwrap();
        let mut events = crate::Events::with_capacity(4);
        let n = poller
            .wait(&mut events, Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(n, 1, "the pidfd never turned readable");
    }

    #[test]
    #[allow(clippy::zombie_processes)] // reaped by try_reap, which is what is tested
    fn pidfd_turns_readable_at_exit_and_reaps_exit_code() {
        let child = Command::new("sh").args(["-c", "exit 7"]).spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        let fd = pidfd_open(pid).unwrap();
        wait_readable(&fd);
        assert_eq!(try_reap(pid).unwrap(), Some(7));
        let err = try_reap(pid).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ECHILD), "reaped once only");
    }

    #[test]
    #[allow(clippy::zombie_processes)] // reaped by try_reap, which is what is tested
    fn running_child_is_not_reaped_and_a_signal_gives_minus_signo() {
        let mut child = Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        let fd = pidfd_open(pid).unwrap();
        assert_eq!(try_reap(pid).unwrap(), None);
        child.kill().unwrap();
        wait_readable(&fd);
        assert_eq!(try_reap(pid).unwrap(), Some(-libc::SIGKILL));
    }

    #[test]
    #[allow(clippy::zombie_processes)] // reaped by wait_blocking, which is what is tested
    fn wait_blocking_reaps_a_running_child() {
        let child = Command::new("sh")
            .args(["-c", "sleep 0.05; exit 3"])
            .spawn()
            .unwrap();
        let pid = child.id() as libc::pid_t;
        assert_eq!(wait_blocking(pid).unwrap(), 3);
        assert_eq!(
            try_reap(pid).unwrap_err().raw_os_error(),
            Some(libc::ECHILD)
        );
    }

    #[test]
    fn pidfd_of_a_reaped_child_is_esrch() {
        let mut child = Command::new("true").spawn().unwrap();
        let pid = child.id() as libc::pid_t;
        child.wait().unwrap();
        let err = pidfd_open(pid).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::ESRCH));
    }
}
