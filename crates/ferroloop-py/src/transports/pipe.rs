//! Pipe transports (`connect_read_pipe`, `connect_write_pipe`, and so subprocess pipes),
//! in Rust: pipes, FIFOs, character devices such as ptys, and sockets used as pipes.
//!
//! Same steps as asyncio's Unix pipe transports:
//! * `ReadPipeTransport`: one `read` per readable event into `data_received(bytes)`; at end
//!   of file it stops reading, then schedules `eof_received()` and `connection_lost(None)`
//!   (`eof_received`'s answer is ignored: a pipe cannot stay half-open). A read error
//!   other than `EIO` (a pty whose other side closed) goes to the exception handler.
//! * `WritePipeTransport`: `write` sends at once when nothing is buffered and buffers the
//!   rest (flow control at the water marks, as on sockets); `write_eof` and `close` are the
//!   same (close once flushed). For FIFOs and sockets it also watches the fd for
//!   *reading*, which only happens when the read end closes: then the transport closes,
//!   with `BrokenPipeError` if data was still buffered.
//!
//! Invariants: those of `super::core`. The pipe object (a file object or socket) owns the
//! fd and is closed after `connection_lost`.

use std::os::fd::RawFd;

use ferroloop_core::net::{self, WriteBuffer};
use ferroloop_core::Side;
use parking_lot::Mutex;
use pyo3::exceptions::{PyBrokenPipeError, PyOSError};
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};

use super::buffers::{self, as_bytes};
use super::core::{self, Common, Pending, State};
use super::macros::native_transport;
use crate::errors::os_error;
use crate::event_loop::LoopCore;

/// A read pipe has nothing pending to write.
pub struct NothingToWrite;

impl Pending for NothingToWrite {
    fn size(&self) -> usize {
        0
    }

    fn clear(&mut self) {}
}

/// A write pipe's buffered bytes.
pub struct PipeBuffer(WriteBuffer);

impl Pending for PipeBuffer {
    fn size(&self) -> usize {
        self.0.len()
    }

    fn clear(&mut self) {
        self.0.clear();
    }
}

/// asyncio does not report `EIO` on a read pipe (a pty whose other side closed).
fn is_eio(py: Python<'_>, exc: &PyErr) -> bool {
    exc.is_instance_of::<PyOSError>(py)
        && exc
            .value(py)
            .getattr(intern!(py, "errno"))
            .and_then(|e| e.extract::<i32>())
            .is_ok_and(|e| e == libc::EIO)
}

const LOST_PIPE_WRITE_WARNING: &str =
    "pipe closed by peer or os.write(pipe, data) raised exception.";

/// The read end of a pipe.
#[pyclass(frozen, weakref, module = "ferroloop._ferroloop")]
pub struct ReadPipeTransport {
    common: Common,
    state: Mutex<State<NothingToWrite>>,
}

native_transport! { ReadPipeTransport, NothingToWrite, ReadPipe, {
        fn is_quiet_fatal_error(py: Python<'_>, exc: &PyErr) -> bool {
            is_eio(py, exc)
        }

        fn repr_text(&self) -> String {
            core::pipe_repr(self, false)
        }
    };
    /// Wraps the non-blocking pipe object `pipe` (fd `fd`); `ferroloop._pipes` builds it,
    /// binds its face and schedules `connection_made`.
    #[new]
    fn new(
        event_loop: Py<LoopCore>,
        pipe: Py<PyAny>,
        fd: RawFd,
        protocol: Py<PyAny>,
        extra: Py<PyDict>,
    ) -> Self {
        ReadPipeTransport {
            common: Common::new(event_loop, pipe, fd, extra, None, false),
            state: Mutex::new(State::new(protocol, NothingToWrite)),
        }
    }

}

impl ReadPipeTransport {
    /// The face's methods besides the base ones (see `core::bind_face`).
    const FACE_METHODS: &'static [&'static [&'static str]] = &[core::READ_FACE_METHODS];

    /// Handles readiness (called by the loop; a read pipe only waits for reading).
    pub fn on_ready(slf: &Bound<'_, Self>, _side: Side) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let protocol = {
            let state = this.state.lock();
            if state.closing || !state.reading {
                return Ok(()); // stale readiness from before a pause or close
            }
            state.protocol.clone_ref(py)
        };
        match buffers::read_bytes(py, this.common.fd, net::read_uninit, &this.common.last_read) {
            Ok(Some(data)) => {
                match protocol
                    .bind(py)
                    .call_method1(intern!(py, "data_received"), (data,))
                {
                    Ok(_) => Ok(()),
                    Err(err) => core::report_callback_error(
                        slf,
                        err,
                        "Exception in protocol.data_received()",
                    ),
                }
            }
            Ok(None) => Self::end_of_file(slf, protocol),
            Err(e) if net::would_block(&e) => Ok(()),
            Err(e) => core::fatal_error(slf, os_error(e), "Fatal read error on pipe transport"),
        }
    }

    /// The write end closed: stop reading, then `eof_received()` and `connection_lost`.
    fn end_of_file(slf: &Bound<'_, Self>, protocol: Py<PyAny>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        this.state.lock().closing = true;
        core::unwatch(this, py, Side::Read);
        let eof_received = protocol.bind(py).getattr(intern!(py, "eof_received"))?;
        this.common
            .event_loop(py)
            .call_method1(intern!(py, "call_soon"), (eof_received,))?;
        core::schedule_connection_lost(slf, None)
    }
}

/// The write end of a pipe.
#[pyclass(frozen, weakref, module = "ferroloop._ferroloop")]
pub struct WritePipeTransport {
    common: Common,
    state: Mutex<State<PipeBuffer>>,
}

native_transport! { WritePipeTransport, PipeBuffer, WritePipe, {
        const LOST_WRITE_WARNING: &'static str = LOST_PIPE_WRITE_WARNING;
        // asyncio's pipes do not count the close itself: they warn from the sixth.
        const SILENT_LOST_WRITES: u32 = core::LOG_THRESHOLD_FOR_LOST_WRITES;

        fn repr_text(&self) -> String {
            core::pipe_repr(self, true)
        }
    };
    /// Wraps the non-blocking pipe object `pipe` (fd `fd`). `watch_peer_close`: the fd
    /// reports readable when the read end closes (FIFOs and sockets, not ttys).
    #[new]
    fn new(
        event_loop: Py<LoopCore>,
        pipe: Py<PyAny>,
        fd: RawFd,
        protocol: Py<PyAny>,
        extra: Py<PyDict>,
        watch_peer_close: bool,
    ) -> Self {
        let mut state = State::new(protocol, PipeBuffer(WriteBuffer::new()));
        state.reading = watch_peer_close;
        WritePipeTransport {
            common: Common::new(event_loop, pipe, fd, extra, None, false),
            state: Mutex::new(state),
        }
    }

    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::write_chunks(slf, &[as_bytes(data)?])
    }

    /// Writes every chunk of `list_of_data` in order (one `writev` when nothing is
    /// buffered).
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        buffers::with_chunks(list_of_data, |chunks| Self::write_chunks(slf, chunks))
    }

    /// Closes the pipe once the buffer is flushed (the same as `close`).
    fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        core::close(slf)
    }

    fn can_write_eof(&self) -> bool {
        true
    }

}

impl WritePipeTransport {
    /// The face's methods besides the base ones (see `core::bind_face`).
    const FACE_METHODS: &'static [&'static [&'static str]] = &[
        core::WRITE_FACE_METHODS,
        &["write", "writelines", "write_eof", "can_write_eof"],
    ];

    /// Handles readiness (called by the loop): writable, or the read end closed.
    pub fn on_ready(slf: &Bound<'_, Self>, side: Side) -> PyResult<()> {
        match side {
            Side::Read => Self::peer_closed(slf),
            Side::Write => Self::write_ready(slf),
        }
    }

    fn write_chunks(slf: &Bound<'_, Self>, chunks: &[Bound<'_, PyBytes>]) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let outcome = {
            let mut state = this.state.lock();
            if chunks.iter().all(|c| c.as_bytes().is_empty()) {
                return Ok(());
            }
            if state.lost || state.closing {
                None
            } else {
                Some(buffers::send_now_or_buffer(
                    this.common.fd,
                    &mut state.kind.0,
                    chunks,
                    net::write_vectored,
                ))
            }
        };
        match outcome {
            None => core::note_write_after_lost(this, py),
            Some(Ok(start_watching)) => {
                if start_watching {
                    core::watch(slf, Side::Write)?;
                }
                core::maybe_pause_protocol(slf)
            }
            Some(Err(err)) => {
                core::fatal_error(slf, os_error(err), "Fatal write error on pipe transport")
            }
        }
    }

    fn write_ready(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let flushed = {
            let mut state = this.state.lock();
            if state.lost {
                return Ok(());
            }
            state
                .kind
                .0
                .flush_with(|slices| net::write_vectored(this.common.fd, slices))
        };
        if let Err(err) = flushed {
            return core::fatal_error(slf, os_error(err), "Fatal write error on pipe transport");
        }
        let drained = {
            let state = this.state.lock();
            state.kind.0.is_empty() && !state.lost
        };
        if drained {
            core::unwatch(this, py, Side::Write);
            // As asyncio's pipes: resume_writing() only once everything is written.
            core::maybe_resume_protocol(slf)?;
            let (drained, closing) = {
                let state = this.state.lock();
                (state.kind.0.is_empty() && !state.lost, state.closing)
            };
            if drained && closing {
                core::unwatch(this, py, Side::Read);
                core::schedule_connection_lost(slf, None)?;
            }
        }
        Ok(())
    }

    /// The read end closed: close at once, with `BrokenPipeError` if data was still
    /// buffered.
    fn peer_closed(slf: &Bound<'_, Self>) -> PyResult<()> {
        let py = slf.py();
        let lost_data = !slf.get().state.lock().kind.0.is_empty();
        let exc = lost_data.then(|| PyBrokenPipeError::new_err(()).into_value(py).into_any());
        core::force_close(slf, exc)
    }
}
