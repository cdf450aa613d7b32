//! The Python-facing methods of `StreamTransport` (asyncio's transport interface): thin
//! shims over the state machine in the parent module and the shared steps of
//! `transports::core`, plus `write()`'s argument check and `writelines`' gathering.

use std::os::fd::RawFd;

use ferroloop_core::net::{self, WriteBuffer};
use parking_lot::Mutex;
use pyo3::exceptions::{PyConnectionError, PyRuntimeError};
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::types::{PyBytes, PyDict};
use pyo3::PyTraverseError;

use super::{Reader, StreamKind, StreamTransport};
use crate::errors::os_error;
use crate::event_loop::LoopCore;
use crate::transports::buffers::{self, as_bytes};
use crate::transports::core::{self, Common, State};
use crate::transports::macros::native_transport;

native_transport! { StreamTransport, StreamKind, Stream, {
        /// Notes how the new protocol takes what is read.
        fn set_protocol_of(slf: &Bound<'_, Self>, protocol: Bound<'_, PyAny>) -> PyResult<()> {
            let reader = Reader::of(&protocol)?;
            slf.get().state.lock().kind.reader = reader;
            core::replace_protocol(slf.get(), protocol);
            Ok(())
        }

        /// The shared steps, then a pending sendfile waiter fails.
        fn connection_lost_of(slf: &Bound<'_, Self>, exc: Option<Py<PyAny>>) -> PyResult<()> {
            let lost = core::call_connection_lost(slf, exc);
            let waiter_failed = Self::resolve_empty_waiter(
                slf,
                Some(PyConnectionError::new_err("Connection is closed by peer")),
            );
            lost?;
            waiter_failed
        }

        fn traverse_kind(&self, kind: &StreamKind, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
            match &kind.empty_waiter {
                Some(waiter) => visit.call(waiter),
                None => Ok(()),
            }
        }
    };
    /// Wraps the connected non-blocking socket `sock` (fd `fd`); `ferroloop._net` builds
    /// it, binds its face and schedules `connection_made`.
    #[new]
    #[pyo3(signature = (event_loop, sock, fd, protocol, extra, server=None, server_wants_transport=false))]
    fn new(
        event_loop: Py<LoopCore>,
        sock: Py<PyAny>,
        fd: RawFd,
        protocol: Bound<'_, PyAny>,
        extra: Py<PyDict>,
        server: Option<Py<PyAny>>,
        server_wants_transport: bool,
    ) -> PyResult<Self> {
        let kind = StreamKind {
            reader: Reader::of(&protocol)?,
            eof_requested: false,
            buffer: WriteBuffer::new(),
            empty_waiter: None,
        };
        Ok(StreamTransport {
            common: Common::new(event_loop, sock, fd, extra, server, server_wants_transport),
            state: Mutex::new(State::new(protocol.unbind(), kind)),
        })
    }

    fn write(slf: &Bound<'_, Self>, data: &Bound<'_, PyAny>) -> PyResult<()> {
        Self::send_or_buffer(slf, &[as_bytes(data)?])
    }

    /// Writes every chunk of `list_of_data` in order, gathered into one vectored send when
    /// nothing is buffered.
    fn writelines(slf: &Bound<'_, Self>, list_of_data: &Bound<'_, PyAny>) -> PyResult<()> {
        buffers::with_chunks(list_of_data, |chunks| Self::send_or_buffer(slf, chunks))
    }

    fn write_eof(slf: &Bound<'_, Self>) -> PyResult<()> {
        let this = slf.get();
        let shutdown_now = {
            let mut state = this.state.lock();
            if state.closing || state.kind.eof_requested {
                return Ok(());
            }
            state.kind.eof_requested = true;
            state.kind.buffer.is_empty()
        };
        if shutdown_now {
            net::shutdown_write(this.common.fd).map_err(os_error)?;
        }
        Ok(())
    }

    fn can_write_eof(&self) -> bool {
        true
    }

    /// A future done once the write buffer is empty, for `loop.sendfile` (asyncio's
    /// `_make_empty_waiter`); `write` refuses until `_reset_empty_waiter`.
    fn _make_empty_waiter(slf: &Bound<'_, Self>) -> PyResult<Py<PyAny>> {
        let py = slf.py();
        let this = slf.get();
        if this.state.lock().kind.empty_waiter.is_some() {
            return Err(PyRuntimeError::new_err("Empty waiter is already set"));
        }
        let waiter = this
            .common
            .event_loop(py)
            .call_method0(intern!(py, "create_future"))?;
        let flushed = {
            let mut state = this.state.lock();
            state.kind.empty_waiter = Some(waiter.clone().unbind());
            state.kind.buffer.is_empty()
        };
        if flushed {
            waiter.call_method1(intern!(py, "set_result"), (py.None(),))?;
        }
        Ok(waiter.unbind())
    }

    fn _reset_empty_waiter(&self) {
        self.state.lock().kind.empty_waiter = None;
    }

}

impl StreamTransport {
    /// `write`/`writelines`: sends at once what the kernel takes when nothing is buffered
    /// (one vectored send), buffers the rest, then checks the high-water mark.
    fn send_or_buffer(slf: &Bound<'_, Self>, chunks: &[Bound<'_, PyBytes>]) -> PyResult<()> {
        let py = slf.py();
        let this = slf.get();
        let outcome = {
            let mut state = this.state.lock();
            if state.kind.eof_requested {
                return Err(PyRuntimeError::new_err(
                    "Cannot call write() after write_eof()",
                ));
            }
            if state.kind.empty_waiter.is_some() {
                return Err(PyRuntimeError::new_err(
                    "unable to write; sendfile is in progress",
                ));
            }
            let total: usize = chunks.iter().map(|c| c.as_bytes().len()).sum();
            if total == 0 {
                return Ok(());
            }
            if state.lost {
                None
            } else {
                Some(buffers::send_now_or_buffer(
                    this.common.fd,
                    &mut state.kind.buffer,
                    chunks,
                    net::send_vectored,
                ))
            }
        };
        match outcome {
            None => core::note_write_after_lost(this, py),
            Some(Ok(start_watching)) => {
                if start_watching {
                    core::watch(slf, ferroloop_core::Side::Write)?;
                }
                core::maybe_pause_protocol(slf)
            }
            Some(Err(err)) => {
                core::fatal_error(slf, os_error(err), "Fatal write error on socket transport")
            }
        }
    }
}
