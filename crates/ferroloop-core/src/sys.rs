//! The one way this crate calls libc: [`syscall!`] turns the C convention (`-1` and
//! `errno`) into `io::Result`, keeping the real `errno` in the error so the binding can
//! build `OSError(errno, strerror)` from it.

/// Calls a libc function and maps a `-1` return to `Err(io::Error::last_os_error())`.
macro_rules! syscall {
    ($fn:ident ( $($arg:expr),* $(,)? )) => {{
        // SAFETY: every use passes arguments that satisfy the libc function's contract;
        // the call sites document the pointers and fds they hand over.
        #[allow(unused_unsafe)]
        let res = unsafe { libc::$fn($($arg),*) };
        if res == -1 {
            Err(std::io::Error::last_os_error())
        } else {
            Ok(res)
        }
    }};
}

use std::io;
use std::os::fd::{IntoRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicI32, AtomicUsize, Ordering::SeqCst};

/// An owned fd that can be closed early through a shared reference, without a lock.
///
/// Invariants:
/// - `fd` holds the open fd, or `-1` once [`ClosableFd::close`] ran. A user
///   ([`ClosableFd::with`]) counts itself in `users` *before* it reads `fd` and leaves
///   after its system call returned.
/// - `close` takes the fd out of `fd` (no new user can get it) and parks it in `retired`;
///   whoever then sees no user left — `close` itself or the last leaving user — swaps it
///   out of `retired` and closes it, so it is closed exactly once and never while a system
///   call uses it. A thread therefore never hands a closed, possibly reused, fd number to
///   the kernel.
/// - No lock is held across a system call (a poller may wait for hours): a `fork()` while
///   another thread waits in `epoll_wait` leaves nothing locked in the child, which can
///   then replace the fd ([`ClosableFd::replace_in_forked_child`]).
#[derive(Debug)]
pub(crate) struct ClosableFd {
    fd: AtomicI32,
    users: AtomicUsize,
    retired: AtomicI32,
}

/// Leaves the user count of a [`ClosableFd`] when dropped (also on unwinding).
struct Use<'a>(&'a ClosableFd);

impl Drop for Use<'_> {
    fn drop(&mut self) {
        if self.0.users.fetch_sub(1, SeqCst) == 1 {
            self.0.close_retired();
        }
    }
}

impl ClosableFd {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        ClosableFd {
            fd: AtomicI32::new(fd.into_raw_fd()),
            users: AtomicUsize::new(0),
            retired: AtomicI32::new(-1),
        }
    }

    /// Runs `f` with the raw fd, which stays open until `f` returns; `EBADF` once closed.
    pub(crate) fn with<R>(&self, f: impl FnOnce(RawFd) -> io::Result<R>) -> io::Result<R> {
        self.users.fetch_add(1, SeqCst);
        let _use = Use(self);
        match self.fd.load(SeqCst) {
            fd if fd >= 0 => f(fd),
            _ => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    /// Closes the fd (idempotent); if a system call is using it right now, the fd is
    /// closed when that call returns.
    pub(crate) fn close(&self) {
        let fd = self.fd.swap(-1, SeqCst);
        if fd < 0 {
            return;
        }
        // Only one `close` gets a live fd per fd, so `retired` is empty here.
        self.retired.store(fd, SeqCst);
        if self.users.load(SeqCst) == 0 {
            self.close_retired();
        }
    }

    fn close_retired(&self) {
        let fd = self.retired.swap(-1, SeqCst);
        if fd >= 0 {
            // The fd was owned by this struct and no user holds it; close(2) errors are
            // not actionable.
            let _ = syscall!(close(fd));
        }
    }

    /// Whether `close` was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.fd.load(SeqCst) < 0
    }

    /// Closes this process's copy of the current fd and owns `fd` from now on, forgetting
    /// the users that were counted.
    ///
    /// # Safety
    /// No other thread may be using this `ClosableFd`: call it only in a child process
    /// right after `fork()`, where the threads counted in `users` do not exist.
    pub(crate) unsafe fn replace_in_forked_child(&self, fd: OwnedFd) {
        let old = self.fd.swap(fd.into_raw_fd(), SeqCst);
        self.users.store(0, SeqCst);
        self.close_retired();
        if old >= 0 {
            let _ = syscall!(close(old));
        }
    }
}

impl Drop for ClosableFd {
    fn drop(&mut self) {
        self.close();
    }
}
