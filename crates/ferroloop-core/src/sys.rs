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
