//! The write buffer of a stream transport.
//!
//! Chunks are kept in order; the first one may be partly sent (`offset`). Small writes are
//! appended to the last owned chunk (one copy, fewer iovecs); large ones the caller can
//! hand over as [`SharedBytes`] (kept by reference, no copy); a flush hands up to
//! `MAX_IOVECS` chunks to one vectored send. `len()` is what asyncio's
//! `get_write_buffer_size()` reports.
//!
//! Invariants: `len == sum(chunk lengths) - offset`; no chunk is empty; `offset` is less
//! than the first chunk's length.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;

/// Chunks at most this large are merged into the previous chunk on `push`, and shared
/// bytes with less than this left are copied instead of held.
const MERGE_BELOW: usize = 4096;
/// Iovecs handed to one `sendmsg`.
const MAX_IOVECS: usize = 64;

/// Bytes that their owner keeps alive and unchanged while the buffer holds them (the
/// binding: an immutable Python `bytes`), so they are buffered without a copy. Dropped
/// when sent or cleared, wherever the buffer is then (the binding's: under the
/// transport's lock, so dropping must not run code that could re-enter it).
pub trait SharedBytes: Send {
    /// The bytes (the same ones at every call).
    fn as_slice(&self) -> &[u8];
}

enum Chunk {
    Owned(Vec<u8>),
    /// `data` from `start` on.
    Shared {
        data: Box<dyn SharedBytes>,
        start: usize,
    },
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(bytes) => bytes,
            Chunk::Shared { data, start } => &data.as_slice()[*start..],
        }
    }
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Chunk::Owned(_) => "Owned",
            Chunk::Shared { .. } => "Shared",
        };
        write!(f, "{kind}({} bytes)", self.bytes().len())
    }
}

/// Bytes waiting to be sent, in order.
#[derive(Debug, Default)]
pub struct WriteBuffer {
    chunks: VecDeque<Chunk>,
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
            if let Some(Chunk::Owned(last)) = self.chunks.back_mut() {
                if last.len() < MERGE_BELOW * 4 {
                    last.extend_from_slice(data);
                    return;
                }
            }
        }
        self.chunks.push_back(Chunk::Owned(data.to_vec()));
    }

    /// Appends `data` from `start` on, held without a copy (copied if only a little is
    /// left: not worth an iovec of its own).
    pub fn push_shared(&mut self, data: Box<dyn SharedBytes>, start: usize) {
        let all = data.as_slice();
        if start >= all.len() {
            return;
        }
        if all.len() - start < MERGE_BELOW {
            self.push(&all[start..]);
            return;
        }
        self.len += all.len() - start;
        self.chunks.push_back(Chunk::Shared { data, start });
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
                .map(|(i, c)| {
                    let bytes = c.bytes();
                    IoSlice::new(if i == 0 { &bytes[self.offset..] } else { bytes })
                })
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
            let left = first.bytes().len() - self.offset;
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

    /// Shared bytes that count their drops (to check that sent chunks are let go).
    struct Counted(Vec<u8>, std::sync::Arc<std::sync::atomic::AtomicUsize>);

    impl SharedBytes for Counted {
        fn as_slice(&self) -> &[u8] {
            &self.0
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        }
    }

    #[test]
    fn shared_chunks_keep_order_size_and_are_dropped_once_sent() {
        let drops = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let mut buf = WriteBuffer::new();
        buf.push(b"head ");
        // Held from byte 100 on (as after a partial send of 100 bytes).
        buf.push_shared(Box::new(Counted(big.clone(), drops.clone())), 100);
        // Little left: copied, and the holder dropped at once.
        buf.push_shared(Box::new(Counted(b"tail bytes".to_vec(), drops.clone())), 5);
        // Nothing left: nothing buffered.
        buf.push_shared(Box::new(Counted(b"sent".to_vec(), drops.clone())), 4);
        assert_eq!(drops.load(std::sync::atomic::Ordering::SeqCst), 2);
        assert_eq!(buf.len(), 5 + 19_900 + 5);
        let mut out = Vec::new();
        while !buf.is_empty() {
            // A kernel that takes 3,000 bytes at a time.
            buf.flush_with(|slices| {
                let mut n = 0;
                for s in slices {
                    let take = (3000 - n).min(s.len());
                    out.extend_from_slice(&s[..take]);
                    n += take;
                }
                Ok(n)
            })
            .unwrap();
        }
        let mut expected = b"head ".to_vec();
        expected.extend_from_slice(&big[100..]);
        expected.extend_from_slice(b"bytes");
        assert_eq!(out, expected);
        assert_eq!(drops.load(std::sync::atomic::Ordering::SeqCst), 3);
    }

    #[test]
    fn clear_drops_shared_chunks() {
        let drops = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let mut buf = WriteBuffer::new();
        buf.push_shared(Box::new(Counted(vec![7; 10_000], drops.clone())), 0);
        assert_eq!((buf.len(), drops.load(std::sync::atomic::Ordering::SeqCst)), (10_000, 0));
        buf.clear();
        assert_eq!((buf.len(), drops.load(std::sync::atomic::Ordering::SeqCst)), (0, 1));
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
