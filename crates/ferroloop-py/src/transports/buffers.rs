//! Moving bytes between Python and a transport's fd, for every kind: the argument check of
//! `write`/`sendto`, one read (into the loop thread's buffer, or straight into a new
//! `bytes` when reads are large), and "send now what the kernel takes, buffer the rest"
//! (the rest of an exact `bytes` is held by reference, not copied: [`HeldBytes`]).

use std::cell::RefCell;
use std::io::{self, IoSlice};
use std::mem::MaybeUninit;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicUsize, Ordering};

use ferroloop_core::net::{self, SharedBytes, WriteBuffer};
use pyo3::exceptions::PyTypeError;
use pyo3::prelude::*;
use pyo3::types::{PyByteArray, PyBytes, PyMemoryView};

use crate::ffi;

/// Bytes read at once for `data_received` (asyncio: 256 KiB).
const READ_SIZE: usize = 256 * 1024;

/// A read of at least this many bytes makes the next read go straight into a new `bytes`.
const DIRECT_AFTER: usize = 16 * 1024;

thread_local! {
    /// The read buffer of the loop thread, shared by all its transports (zeroed once, so
    /// all of it is initialised).
    static READ_BUF: RefCell<Vec<MaybeUninit<u8>>> =
        RefCell::new(vec![MaybeUninit::new(0); READ_SIZE]);
}

/// The bytes of a `write()` argument: `bytes` as they are, any other buffer
/// (`bytearray`, `memoryview` of any format) as `bytes(data)`, with asyncio's
/// `TypeError` for anything else.
pub fn as_bytes<'py>(data: &Bound<'py, PyAny>) -> PyResult<Bound<'py, PyBytes>> {
    if let Ok(bytes) = data.cast::<PyBytes>() {
        return Ok(bytes.clone());
    }
    if data.is_instance_of::<PyByteArray>() || data.is_instance_of::<PyMemoryView>() {
        let bytes = data.py().get_type::<PyBytes>().call1((data,))?;
        return Ok(bytes.cast_into::<PyBytes>()?);
    }
    Err(PyTypeError::new_err(format!(
        "data argument must be a bytes-like object, not {}",
        data.get_type().name()?.repr()?
    )))
}

/// Calls `write` with the bytes of every item of `list_of_data` (a `writelines`
/// argument), each checked as `write()` checks its argument.
pub fn with_chunks<'py, R>(
    list_of_data: &Bound<'py, PyAny>,
    write: impl FnOnce(&[Bound<'py, PyBytes>]) -> PyResult<R>,
) -> PyResult<R> {
    let chunks = list_of_data
        .try_iter()?
        .map(|item| as_bytes(&item?))
        .collect::<PyResult<Vec<_>>>()?;
    write(&chunks)
}

/// An exact `bytes` object a write buffer holds instead of a copy of its unsent part
/// (`data`/`len`: that part).
/// Its data never moves or changes while the object lives (`bytes` is immutable), and
/// dropping it runs no Python code (an exact `bytes` has no finalizer), so the buffer may
/// let go of it under the transport's lock.
struct HeldBytes {
    _object: Py<PyBytes>,
    data: *const u8,
    len: usize,
}

// SAFETY: `data`/`len` describe part of the immutable contents of `_object`, which this value
// keeps alive; reading them needs no lock, and `Py` may be sent between threads.
unsafe impl Send for HeldBytes {}

impl SharedBytes for HeldBytes {
    fn as_slice(&self) -> &[u8] {
        // SAFETY: see the `Send` impl: valid, immutable memory for as long as `self`.
        unsafe { std::slice::from_raw_parts(self.data, self.len) }
    }
}

/// Buffers `chunk` from `start` on: a large enough rest of an exact `bytes` held, the
/// rest copied.
fn buffer_rest(buffer: &mut WriteBuffer, chunk: &Bound<'_, PyBytes>, start: usize) {
    let rest = &chunk.as_bytes()[start..];
    if !chunk.is_exact_instance_of::<PyBytes>() {
        buffer.push(rest);
        return;
    }
    buffer.push_held(rest, || {
        Box::new(HeldBytes {
            _object: chunk.clone().unbind(),
            data: rest.as_ptr(),
            len: rest.len(),
        })
    });
}

/// One `read` (a syscall such as `net::recv` or `net::read`) from `fd` into the loop
/// thread's buffer: the bytes as a Python object, or `None` at end of stream.
///
/// After a read of at least `DIRECT_AFTER` bytes (`last_read`, the transport's own record),
/// the next one goes straight into a new `bytes` of `READ_SIZE`, shrunk to what came, with
/// no copy (as asyncio's `sock.recv(max_size)` does); small reads are copied out of the
/// shared buffer, which is cheaper than allocating and shrinking `READ_SIZE` each time.
pub fn read_bytes<'py>(
    py: Python<'py>,
    fd: RawFd,
    read: fn(RawFd, &mut [MaybeUninit<u8>]) -> io::Result<usize>,
    last_read: &AtomicUsize,
) -> io::Result<Option<Bound<'py, PyBytes>>> {
    let bytes = if last_read.load(Ordering::Relaxed) >= DIRECT_AFTER {
        read_up_to(py, fd, READ_SIZE, read)?
    } else {
        read_at_most(py, fd, READ_SIZE, read)?
    };
    let n = bytes.as_bytes().len();
    last_read.store(n, Ordering::Relaxed);
    Ok((n > 0).then_some(bytes))
}

/// One `read` of at most `limit` bytes (and at most `READ_SIZE`) from `fd`: the bytes,
/// `b""` at end of stream. A large `limit` reads straight into a new `bytes`.
pub fn read_up_to<'py>(
    py: Python<'py>,
    fd: RawFd,
    limit: usize,
    read: fn(RawFd, &mut [MaybeUninit<u8>]) -> io::Result<usize>,
) -> io::Result<Bound<'py, PyBytes>> {
    if limit < DIRECT_AFTER {
        return read_at_most(py, fd, limit, read);
    }
    match ffi::bytes_filled_in_place(py, limit.min(READ_SIZE), |buf| read(fd, buf)) {
        Ok(result) => result,
        Err(no_memory) => Err(io::Error::other(no_memory)),
    }
}

/// One `read` of at most `limit` bytes (and at most the buffer's `READ_SIZE`) from `fd`
/// into the loop thread's buffer: the bytes, `b""` at end of stream.
fn read_at_most<'py>(
    py: Python<'py>,
    fd: RawFd,
    limit: usize,
    read: fn(RawFd, &mut [MaybeUninit<u8>]) -> io::Result<usize>,
) -> io::Result<Bound<'py, PyBytes>> {
    READ_BUF.with(|cell| {
        let mut buf = cell.borrow_mut();
        let len = limit.min(buf.len());
        let n = read(fd, &mut buf[..len])?.min(len);
        // SAFETY: the buffer was initialised when it was made (zeros), and reads only
        // ever write initialised bytes into it.
        let filled = unsafe { &*(&buf[..n] as *const [MaybeUninit<u8>] as *const [u8]) };
        Ok(PyBytes::new(py, filled))
    })
}

/// Sends at once what the kernel takes (one vectored `send`) if `buffer` is empty, and
/// buffers the rest in order; returns whether the fd must now be watched for writability.
pub fn send_now_or_buffer(
    fd: RawFd,
    buffer: &mut WriteBuffer,
    chunks: &[Bound<'_, PyBytes>],
    send: fn(RawFd, &[IoSlice<'_>]) -> io::Result<usize>,
) -> io::Result<bool> {
    let was_empty = buffer.is_empty();
    let mut sent = 0;
    if was_empty {
        let one;
        let many: Vec<IoSlice<'_>>;
        let slices: &[IoSlice<'_>] = if let [chunk] = chunks {
            one = [IoSlice::new(chunk.as_bytes())];
            &one
        } else {
            many = chunks.iter().map(|c| IoSlice::new(c.as_bytes())).collect();
            &many
        };
        match send(fd, slices) {
            Ok(n) => sent = n,
            Err(e) if net::would_block(&e) => {}
            Err(e) => return Err(e),
        }
    }
    for chunk in chunks {
        let skip = sent.min(chunk.as_bytes().len());
        sent -= skip;
        buffer_rest(buffer, chunk, skip);
    }
    Ok(was_empty && !buffer.is_empty())
}
