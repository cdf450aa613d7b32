//! Sockets without Python: the system calls a stream transport makes, and its write
//! buffer.
//!
//! * [`WriteBuffer`] — bytes accepted by `transport.write()` that the kernel has not
//!   taken yet, flushed with one vectored `sendmsg` per call.
//! * [`recv`], [`send_vectored`], [`shutdown_write`] — non-blocking socket calls that keep
//!   the real `errno` (`WouldBlock` means "wait for readiness").
//!
//! Invariant kept by every caller: the fd passed in is open and owned by the caller for
//! the whole call (the binding's transports hold the socket object).

mod write_buffer;

pub use write_buffer::WriteBuffer;

use std::io::{self, IoSlice};
use std::os::fd::RawFd;

/// Reads what is available into `buf`; `Ok(0)` is end of stream.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // The pointer and length describe `buf`, which outlives the call.
    let n = syscall!(recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0))?;
    Ok(n as usize)
}

/// Sends as much of `slices` as the kernel takes now, in order, without `SIGPIPE` (a
/// vanished peer is an `EPIPE` error). Falls back to `writev` for fds that are not
/// sockets (pipes, ptys).
pub fn send_vectored(fd: RawFd, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    let iovcnt = slices.len().min(libc::UIO_MAXIOV as usize);
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec; the kernel only reads the buffers.
    msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iovcnt as _;
    match syscall!(sendmsg(fd, &msg, libc::MSG_NOSIGNAL)) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => {
            let n = syscall!(writev(fd, slices.as_ptr().cast(), iovcnt as libc::c_int))?;
            Ok(n as usize)
        }
        Err(e) => Err(e),
    }
}

/// Half-closes the sending side (`write_eof`).
pub fn shutdown_write(fd: RawFd) -> io::Result<()> {
    syscall!(shutdown(fd, libc::SHUT_WR))?;
    Ok(())
}

/// Whether `err` means "try again when the fd is ready" (`EAGAIN`, `EINTR`).
pub fn would_block(err: &io::Error) -> bool {
    matches!(
        err.kind(),
        io::ErrorKind::WouldBlock | io::ErrorKind::Interrupted
    )
}
