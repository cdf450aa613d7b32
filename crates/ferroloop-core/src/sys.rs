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
use std::os::fd::{AsRawFd, OwnedFd, RawFd};
use std::sync::RwLock;

/// An owned fd that can be closed early through a shared reference.
///
/// Every use holds a read lock for its whole system call and `close` takes the write
/// lock, so a thread can never hand a closed — and possibly already reused — fd number to
/// the kernel. After `close` every use fails with `EBADF`.
#[derive(Debug)]
pub(crate) struct ClosableFd {
    fd: RwLock<Option<OwnedFd>>,
}

impl ClosableFd {
    pub(crate) fn new(fd: OwnedFd) -> Self {
        ClosableFd {
            fd: RwLock::new(Some(fd)),
        }
    }

    /// Runs `f` with the raw fd, which stays open until `f` returns.
    pub(crate) fn with<R>(&self, f: impl FnOnce(RawFd) -> io::Result<R>) -> io::Result<R> {
        let guard = self
            .fd
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        match guard.as_ref() {
            Some(fd) => f(fd.as_raw_fd()),
            None => Err(io::Error::from_raw_os_error(libc::EBADF)),
        }
    }

    /// Closes the current fd (if any) and owns `fd` from now on.
    pub(crate) fn replace(&self, fd: OwnedFd) {
        let mut guard = self
            .fd
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        drop(guard.replace(fd));
    }

    /// Closes the fd (idempotent).
    pub(crate) fn close(&self) {
        let mut guard = self
            .fd
            .write()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        drop(guard.take());
    }

    /// Whether `close` was called.
    pub(crate) fn is_closed(&self) -> bool {
        self.fd
            .read()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
            .is_none()
    }
}
