//! The wake-up pipe of signal handlers.
//!
//! CPython's C-level signal handler writes the number of each caught signal, one byte per
//! signal, to the fd given to `signal.set_wakeup_fd`. [`WakeupPipe`] is that fd's pipe:
//! the write end goes to `set_wakeup_fd`, the loop's driver watches the read end, and
//! [`WakeupPipe::drain`] returns the signal numbers written since the last call, in order.
//!
//! Invariants: both ends are non-blocking and close-on-exec; a byte is never lost while
//! the pipe is not full (64 KiB of pending signals); only the loop thread reads.

use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};

/// A non-blocking pipe carrying signal numbers.
#[derive(Debug)]
pub struct WakeupPipe {
    read: OwnedFd,
    write: OwnedFd,
}

impl WakeupPipe {
    /// A new pipe.
    pub fn new() -> io::Result<Self> {
        let mut fds = [0 as libc::c_int; 2];
        syscall!(pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC))?;
        // SAFETY: pipe2 just returned these two new fds; nothing else owns them.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        Ok(WakeupPipe { read, write })
    }

    /// The end the loop watches for reading.
    pub fn read_fd(&self) -> RawFd {
        self.read.as_raw_fd()
    }

    /// The end for `signal.set_wakeup_fd`.
    pub fn write_fd(&self) -> RawFd {
        self.write.as_raw_fd()
    }

    /// The signal numbers written so far, in order (empty if none).
    pub fn drain(&self) -> io::Result<Vec<u8>> {
        let mut signals = Vec::new();
        let mut buf = [0u8; 256];
        loop {
            match crate::net::read(self.read_fd(), &mut buf) {
                Ok(0) => return Ok(signals),
                Ok(n) => signals.extend_from_slice(&buf[..n]),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return Ok(signals),
                Err(e) => return Err(e),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn drain_returns_bytes_in_order_then_nothing() {
        let pipe = WakeupPipe::new().unwrap();
        assert!(pipe.drain().unwrap().is_empty());
        let written = [2u8, 15, 2, 10];
        let n = syscall!(write(
            pipe.write_fd(),
            written.as_ptr().cast(),
            written.len()
        ))
        .unwrap();
        assert_eq!(n as usize, written.len());
        assert_eq!(pipe.drain().unwrap(), written);
        assert!(pipe.drain().unwrap().is_empty());
    }

    #[test]
    fn a_burst_larger_than_one_read_is_kept_whole() {
        let pipe = WakeupPipe::new().unwrap();
        let burst: Vec<u8> = (0..1000).map(|i| (i % 64) as u8 + 1).collect();
        let n = syscall!(write(pipe.write_fd(), burst.as_ptr().cast(), burst.len())).unwrap();
        assert_eq!(n as usize, burst.len());
        assert_eq!(pipe.drain().unwrap(), burst);
    }
}
