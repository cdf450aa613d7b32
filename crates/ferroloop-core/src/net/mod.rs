//! Sockets without Python: the system calls a stream transport makes, and its write
//! buffer.
//!
//! * [`WriteBuffer`] — bytes accepted by `transport.write()` that the kernel has not
//!   taken yet, flushed with one vectored `sendmsg` per call.
//! * [`recv`], [`send_vectored`], [`shutdown_write`] — non-blocking socket calls that keep
//!   the real `errno` (`WouldBlock` means "wait for readiness").
//! * [`read`], [`write_vectored`] — the same for pipes, FIFOs and character devices (and
//!   sockets used as pipes), as pipe transports need.
//! * [`recv_uninit`], [`read_uninit`] — reads into memory that need not be initialised
//!   (a new `bytes` object's buffer, filled in place).
//!
//! Invariant kept by every caller: the fd passed in is open and owned by the caller for
//! the whole call (the binding's transports hold the socket object).

mod write_buffer;

pub use write_buffer::{SharedBytes, WriteBuffer};

use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::RawFd;

/// Reads what is available into `buf`; `Ok(0)` is end of stream.
pub fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    recv_uninit(fd, as_uninit(buf))
}

/// [`recv`] into memory that need not be initialised: the first `n` bytes are after
/// `Ok(n)`.
pub fn recv_uninit(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    // The pointer and length describe `buf`, which outlives the call; the kernel only
    // writes into it.
    let n = syscall!(recv(fd, buf.as_mut_ptr().cast(), buf.len(), 0))?;
    Ok(n as usize)
}

/// `buf` seen as possibly uninitialised memory (to pass it to a `*_uninit` call).
fn as_uninit(buf: &mut [u8]) -> &mut [MaybeUninit<u8>] {
    // SAFETY: `MaybeUninit<u8>` has the layout of `u8`, and the `*_uninit` calls write
    // only initialised bytes into it, so `buf` stays initialised.
    unsafe { &mut *(buf as *mut [u8] as *mut [MaybeUninit<u8>]) }
}

/// Sends as much of `slices` as the kernel takes now, in order, without `SIGPIPE` (a
/// vanished peer is an `EPIPE` error). Falls back to `writev` for fds that are not
/// sockets (pipes, ptys). One slice goes by `send`, which the kernel serves with less
/// work than `sendmsg` (no message header, no iovec array to copy in).
pub fn send_vectored(fd: RawFd, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    if let [only] = slices {
        // The pointer and length describe `only`, which outlives the call; the kernel
        // only reads it.
        return match syscall!(send(fd, only.as_ptr().cast(), only.len(), libc::MSG_NOSIGNAL)) {
            Ok(n) => Ok(n as usize),
            Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => write_vectored(fd, slices),
            Err(e) => Err(e),
        };
    }
    let iovcnt = slices.len().min(libc::UIO_MAXIOV as usize);
    // SAFETY: an all-zero msghdr is valid (no name, no control data).
    let mut msg: libc::msghdr = unsafe { std::mem::zeroed() };
    // IoSlice is ABI-compatible with iovec; the kernel only reads the buffers.
    msg.msg_iov = slices.as_ptr() as *mut libc::iovec;
    msg.msg_iovlen = iovcnt as _;
    match syscall!(sendmsg(fd, &msg, libc::MSG_NOSIGNAL)) {
        Ok(n) => Ok(n as usize),
        Err(e) if e.raw_os_error() == Some(libc::ENOTSOCK) => write_vectored(fd, slices),
        Err(e) => Err(e),
    }
}

/// Reads what is available from a pipe (or any fd) into `buf`; `Ok(0)` is end of file.
pub fn read(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    read_uninit(fd, as_uninit(buf))
}

/// [`read`] into memory that need not be initialised: the first `n` bytes are after
/// `Ok(n)`.
pub fn read_uninit(fd: RawFd, buf: &mut [MaybeUninit<u8>]) -> io::Result<usize> {
    // The pointer and length describe `buf`, which outlives the call; the kernel only
    // writes into it.
    let n = syscall!(read(fd, buf.as_mut_ptr().cast(), buf.len()))?;
    Ok(n as usize)
}

/// Writes as much of `slices` as a pipe (or any fd) takes now, in order (`writev`). A
/// closed read end is an `EPIPE` error: Python ignores `SIGPIPE`.
pub fn write_vectored(fd: RawFd, slices: &[IoSlice<'_>]) -> io::Result<usize> {
    let iovcnt = slices.len().min(libc::UIO_MAXIOV as usize);
    // IoSlice is ABI-compatible with iovec; the kernel only reads the buffers.
    let n = syscall!(writev(fd, slices.as_ptr().cast(), iovcnt as libc::c_int))?;
    Ok(n as usize)
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

#[cfg(test)]
mod tests {
    use super::*;

    fn nonblocking_pipe() -> (RawFd, RawFd) {
        let mut fds = [0; 2];
        syscall!(pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC)).unwrap();
        (fds[0], fds[1])
    }

    #[test]
    fn pipe_write_vectored_then_read_keeps_order() {
        let (r, w) = nonblocking_pipe();
        let parts = [
            IoSlice::new(b"abc"),
            IoSlice::new(b""),
            IoSlice::new(b"defg"),
        ];
        assert_eq!(write_vectored(w, &parts).unwrap(), 7);
        let mut buf = [0u8; 16];
        assert_eq!(read(r, &mut buf).unwrap(), 7);
        assert_eq!(&buf[..7], b"abcdefg");
        let err = read(r, &mut buf).unwrap_err();
        assert!(would_block(&err), "{err}");
        syscall!(close(w)).unwrap();
        assert_eq!(
            read(r, &mut buf).unwrap(),
            0,
            "end of file once the writer closed"
        );
        syscall!(close(r)).unwrap();
    }

    #[test]
    fn pipe_full_would_block_and_closed_reader_is_epipe() {
        let (r, w) = nonblocking_pipe();
        let chunk = vec![7u8; 64 * 1024];
        let mut total = 0;
        let err = loop {
            match write_vectored(w, &[IoSlice::new(&chunk)]) {
                Ok(n) => total += n,
                Err(e) => break e,
            }
            assert!(total < 64 * 1024 * 1024, "the pipe never filled up");
        };
        assert!(would_block(&err), "{err}");
        assert!(total > 0);
        syscall!(close(r)).unwrap();
        // SAFETY: ignoring SIGPIPE as Python does, so that the write reports EPIPE.
        unsafe { libc::signal(libc::SIGPIPE, libc::SIG_IGN) };
        let err = write_vectored(w, &[IoSlice::new(b"x")]).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
        syscall!(close(w)).unwrap();
    }

    #[test]
    fn send_vectored_falls_back_to_writev_on_a_pipe() {
        let (r, w) = nonblocking_pipe();
        // One slice (the `send` path) and several (the `sendmsg` path).
        assert_eq!(send_vectored(w, &[IoSlice::new(b"pipe")]).unwrap(), 4);
        assert_eq!(send_vectored(w, &[IoSlice::new(b"ab"), IoSlice::new(b"cd")]).unwrap(), 4);
        let mut buf = [0u8; 16];
        assert_eq!(read(r, &mut buf).unwrap(), 8);
        assert_eq!(&buf[..8], b"pipeabcd");
        syscall!(close(r)).unwrap();
        syscall!(close(w)).unwrap();
    }

    #[test]
    fn send_vectored_on_a_socket_keeps_order_and_reports_a_closed_peer() {
        let mut fds = [0; 2];
        syscall!(socketpair(libc::AF_UNIX, libc::SOCK_STREAM | libc::SOCK_NONBLOCK, 0, fds.as_mut_ptr()))
            .unwrap();
        let [a, b] = fds;
        assert_eq!(send_vectored(a, &[IoSlice::new(b"one")]).unwrap(), 3);
        assert_eq!(send_vectored(a, &[IoSlice::new(b"two"), IoSlice::new(b"!")]).unwrap(), 4);
        let mut buf = [0u8; 16];
        assert_eq!(recv(b, &mut buf).unwrap(), 7);
        assert_eq!(&buf[..7], b"onetwo!");
        syscall!(close(b)).unwrap();
        // No SIGPIPE (MSG_NOSIGNAL) on either path: the error comes back as EPIPE.
        for slices in [&[IoSlice::new(b"x")][..], &[IoSlice::new(b"x"), IoSlice::new(b"y")]] {
            let err = send_vectored(a, slices).unwrap_err();
            assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
        }
        syscall!(close(a)).unwrap();
    }
}
