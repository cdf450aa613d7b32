//! The write buffer of a stream transport.
//!
//! Chunks are kept in order; the first one may be partly sent (`offset`). Small writes are
//! appended to the last chunk (one copy, fewer iovecs); a flush hands up to `MAX_IOVECS`
//! chunks to one `sendmsg`. `len()` is what asyncio's `get_write_buffer_size()` reports.
//!
//! Invariants: `len == sum(chunk lengths) - offset`; no chunk is empty; `offset` is less
//! than the first chunk's length.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;

/// Chunks at most this large are merged into the previous chunk on `push`.
const MERGE_BELOW: usize = 4096;
/// Iovecs handed to one `sendmsg`.
const MAX_IOVECS: usize = 64;

/// Bytes waiting to be sent, in order.
#[derive(Debug, Default)]
pub struct WriteBuffer {
    chunks: VecDeque<Vec<u8>>,
    offset: usize,
    len: usize,
}

impl WriteBuffer {
    /// An empty buffer.
    pub fn new() -> Self {
        Self::default()
    }

    /// Bytes waiting.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether nothing waits.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    /// Appends `data` (copied).
    pub fn push(&mut self, data: &[u8]) {
        if data.is_empty() {
            return;
        }
        self.len += data.len();
        if data.len() < MERGE_BELOW {
            if let Some(last) = self.chunks.back_mut() {
                if last.len() < MERGE_BELOW * 4 {
                    last.extend_from_slice(data);
                    return;
                }
            }
        }
        self.chunks.push_back(data.to_vec());
    }

    /// Sends as much as the kernel takes with `send` (a vectored write, e.g.
    /// [`super::send_vectored`] on an fd), dropping what was sent. Returns the number of
    /// bytes sent; `WouldBlock` is not an error (`Ok` with what was sent before).
    pub fn flush_with(
        &mut self,
        mut send: impl FnMut(&[IoSlice<'_>]) -> io::Result<usize>,
    ) -> io::Result<usize> {
        let mut total = 0;
        while !self.is_empty() {
            let slices: Vec<IoSlice<'_>> = self
                .chunks
                .iter()
                .take(MAX_IOVECS)
                .enumerate()
                .map(|(i, c)| IoSlice::new(if i == 0 { &c[self.offset..] } else { c }))
                .collect();
            let offered: usize = slices.iter().map(|s| s.len()).sum();
            let sent = match send(&slices) {
                Ok(n) => n,
                Err(e) if super::would_block(&e) => return Ok(total),
                Err(e) => return Err(e),
            };
            drop(slices);
            self.consume(sent);
            total += sent;
            if sent < offered {
                break; // the kernel's buffer is full
            }
        }
        Ok(total)
    }

    /// [`WriteBuffer::flush_with`] on a socket (or pipe) fd.
    pub fn flush_to(&mut self, fd: RawFd) -> io::Result<usize> {
        self.flush_with(|slices| super::send_vectored(fd, slices))
    }

    /// Drops everything (abort).
    pub fn clear(&mut self) {
        self.chunks.clear();
        self.offset = 0;
        self.len = 0;
    }

    fn consume(&mut self, mut n: usize) {
        self.len -= n;
        while n > 0 {
            let first = self.chunks.front().expect("n <= len");
            let left = first.len() - self.offset;
            if n < left {
                self.offset += n;
                return;
            }
            n -= left;
            self.offset = 0;
            self.chunks.pop_front();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn partial_sends_keep_order_and_size() {
        let mut buf = WriteBuffer::new();
        buf.push(b"hello ");
        buf.push(&[b'x'; 10_000]);
        buf.push(b" world");
        assert_eq!(buf.len(), 10_012);
        let mut out = Vec::new();
        // A kernel that takes 7 bytes at a time.
        while !buf.is_empty() {
            buf.flush_with(|slices| {
                let mut n = 0;
                for s in slices {
                    let take = (7 - n).min(s.len());
                    out.extend_from_slice(&s[..take]);
                    n += take;
                    if n == 7 {
                        break;
                    }
                }
                Ok(n)
            })
            .unwrap();
        }
        let mut expected = b"hello ".to_vec();
        expected.extend_from_slice(&[b'x'; 10_000]);
        expected.extend_from_slice(b" world");
        assert_eq!(out, expected);
        assert_eq!(buf.len(), 0);
    }

    #[test]
    fn would_block_is_not_an_error_and_keeps_the_data() {
        let mut buf = WriteBuffer::new();
        buf.push(b"abc");
        let sent = buf
            .flush_with(|_| Err(io::Error::from(io::ErrorKind::WouldBlock)))
            .unwrap();
        assert_eq!((sent, buf.len()), (0, 3));
        buf.clear();
        assert!(buf.is_empty());
    }

    #[test]
    fn flushes_a_megabyte_through_a_socket_in_order() {
        let (a, mut b) = UnixStream::pair().unwrap();
        a.set_nonblocking(true).unwrap();
        let data: Vec<u8> = (0..1_000_000u32).map(|i| (i % 251) as u8).collect();
        let mut buf = WriteBuffer::new();
        for piece in data.chunks(1000) {
            buf.push(piece);
        }
        let reader = std::thread::spawn(move || {
            let mut got = Vec::new();
            b.read_to_end(&mut got).unwrap();
            got
        });
        while !buf.is_empty() {
            buf.flush_to(a.as_raw_fd()).unwrap();
            std::thread::yield_now();
        }
        drop(a);
        assert_eq!(reader.join().unwrap(), data);
    }

    #[test]
    fn a_vanished_peer_is_epipe_not_sigpipe() {
        let (a, b) = UnixStream::pair().unwrap();
        drop(b);
        let mut buf = WriteBuffer::new();
        buf.push(b"lost");
        let err = buf.flush_to(a.as_raw_fd()).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EPIPE));
        assert_eq!(buf.len(), 4);
    }
}
