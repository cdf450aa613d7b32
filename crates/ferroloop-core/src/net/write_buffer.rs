//! The write buffer of a stream transport.
//!
//! Chunks are kept in order; the first one may be partly sent (`offset`). Small writes are
//! appended to the last owned chunk (one copy, fewer iovecs); large ones the caller can
//! have held as [`SharedBytes`] (kept by reference, no copy); a flush hands up to
//! `MAX_IOVECS` chunks to one vectored send. `len()` is what asyncio's
//! `get_write_buffer_size()` reports.
//!
//! Invariants: `len == sum(chunk lengths) - offset`; no chunk is empty; `offset` is less
//! than the first chunk's length.

use std::collections::VecDeque;
use std::io::{self, IoSlice};
use std::os::fd::RawFd;

/// Chunks at most this large are merged into the previous chunk on `push`, and are
/// copied by `push_held` instead of held.
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
    Shared(Box<dyn SharedBytes>),
}

impl Chunk {
    fn bytes(&self) -> &[u8] {
        match self {
            Chunk::Owned(bytes) => bytes,
            Chunk::Shared(data) => data.as_slice(),
        }
    }
}

impl std::fmt::Debug for Chunk {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let kind = match self {
            Chunk::Owned(_) => "Owned",
            Chunk::Shared(_) => "Shared",
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

    /// Appends `data`: held without a copy by what `hold` returns (whose `as_slice()` is
    /// `data`), or copied if it is small (not worth an iovec of its own; `hold` is then
    /// not called).
    pub fn push_held(&mut self, data: &[u8], hold: impl FnOnce() -> Box<dyn SharedBytes>) {
        if data.len() < MERGE_BELOW {
            self.push(data);
            return;
        }
        let held = hold();
        debug_assert_eq!(held.as_slice(), data);
        self.len += data.len();
        self.chunks.push_back(Chunk::Shared(held));
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
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::sync::Arc;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    /// Flushes `buf` to a kernel that takes at most `per_call` bytes per send, until it
    /// is empty; returns what was sent.
    fn drain_taking(buf: &mut WriteBuffer, per_call: usize) -> Vec<u8> {
        let mut out = Vec::new();
        while !buf.is_empty() {
            buf.flush_with(|slices| {
                let mut n = 0;
                for s in slices {
                    let take = (per_call - n).min(s.len());
                    out.extend_from_slice(&s[..take]);
                    n += take;
                }
                Ok(n)
            })
            .unwrap();
        }
        out
    }

    #[test]
    fn partial_sends_keep_order_and_size() {
        let mut buf = WriteBuffer::new();
        buf.push(b"hello ");
        buf.push(&[b'x'; 10_000]);
        buf.push(b" world");
        assert_eq!(buf.len(), 10_012);
        let out = drain_taking(&mut buf, 7);
        let mut expected = b"hello ".to_vec();
        expected.extend_from_slice(&[b'x'; 10_000]);
        expected.extend_from_slice(b" world");
        assert_eq!(out, expected);
        assert_eq!(buf.len(), 0);
    }

    /// Held bytes that count how many holders were dropped (to check that sent chunks
    /// are let go).
    struct Counted(Vec<u8>, Arc<AtomicUsize>);

    impl SharedBytes for Counted {
        fn as_slice(&self) -> &[u8] {
            &self.0
        }
    }

    impl Drop for Counted {
        fn drop(&mut self) {
            self.1.fetch_add(1, Ordering::SeqCst);
        }
    }

    #[test]
    fn held_chunks_keep_order_and_size_and_are_dropped_once_sent() {
        let drops = Arc::new(AtomicUsize::new(0));
        let made = AtomicUsize::new(0);
        let holder = |data: &[u8]| {
            made.fetch_add(1, Ordering::SeqCst);
            Box::new(Counted(data.to_vec(), drops.clone())) as Box<dyn SharedBytes>
        };
        let big: Vec<u8> = (0..20_000u32).map(|i| (i % 251) as u8).collect();
        let mut buf = WriteBuffer::new();
        buf.push(b"head ");
        // Held (as the rest after a partial send of 100 bytes).
        buf.push_held(&big[100..], || holder(&big[100..]));
        // Small: copied, no holder made.
        buf.push_held(b"bytes", || holder(b"bytes"));
        // Nothing: nothing buffered.
        buf.push_held(b"", || holder(b""));
        assert_eq!((made.load(Ordering::SeqCst), drops.load(Ordering::SeqCst)), (1, 0));
        assert_eq!(buf.len(), 5 + 19_900 + 5);
        let out = drain_taking(&mut buf, 3000);
        let mut expected = b"head ".to_vec();
        expected.extend_from_slice(&big[100..]);
        expected.extend_from_slice(b"bytes");
        assert_eq!(out, expected);
        assert_eq!(drops.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn clear_drops_held_chunks() {
        let drops = Arc::new(AtomicUsize::new(0));
        let data = vec![7; 10_000];
        let mut buf = WriteBuffer::new();
        buf.push_held(&data, || Box::new(Counted(data.clone(), drops.clone())));
        assert_eq!((buf.len(), drops.load(Ordering::SeqCst)), (10_000, 0));
        buf.clear();
        assert_eq!((buf.len(), drops.load(Ordering::SeqCst)), (0, 1));
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
