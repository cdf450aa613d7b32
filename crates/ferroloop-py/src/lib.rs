//! # ferroloop-py
//!
//! The PyO3 binding of ferroloop: the extension module `ferroloop._ferroloop`.
//!
//! * [`event_loop`] — `LoopCore`, the Rust base class of `ferroloop.Loop`: queues, poller,
//!   and the run loop itself.
//! * [`handles`] — `Handle` and `TimerHandle`, frozen pyclasses.
//! * [`ready`] — what the driver queues: ready entries and fd owners.
//! * [`queued`] — handles as the queues hold them (untracked by the collector there).
//! * [`run_context`] — the `contextvars.Context` a callback runs in (an empty copy the
//!   loop made is untracked by the collector while queued).
//! * [`transports`] — native transports (streams, datagrams, pipes) and the TLS record
//!   pump's hot path.
//! * [`sock`] — the `sock_recv`/`sock_sendall` system calls and waits.
//! * [`process`] — child exit watching (pidfd, or the `SIGCHLD` reaper) for subprocesses.
//! * [`watchdog`] — the blocking detector's thread.
//! * [`errors`] — the one mapping from Rust errors to Python exceptions.
//! * [`ffi`] — the only raw CPython calls (entering `contextvars` contexts, the handles'
//!   free list).
//! * [`py`] — Python objects looked up once.

// First: its `intern!` macro is used by the modules below.
#[macro_use]
mod py;
mod errors;
mod event_loop;
mod ffi;
mod handles;
mod process;
mod queued;
mod ready;
mod run_context;
mod sock;
mod transports;
mod watchdog;

use pyo3::prelude::*;

// The loop relies on the GIL to serialise Python-side state (handles, the exception
// handler, `_current_handle`); on a free-threaded build importing it re-enables the GIL.
#[pymodule(gil_used = true)]
mod _ferroloop {
    #[pymodule_export]
    use crate::event_loop::LoopCore;
    #[pymodule_export]
    use crate::handles::{Handle, TimerHandle};
    #[pymodule_export]
    use crate::process::child_watcher;
    #[pymodule_export]
    use crate::transports::{
        DatagramTransport, ReadPipeTransport, StreamTransport, WritePipeTransport,
    };

    #[pymodule_init]
    fn init(m: &pyo3::Bound<'_, pyo3::types::PyModule>) -> pyo3::PyResult<()> {
        use pyo3::types::PyAnyMethods;
        crate::handles::install_caches(m.py());
        // `ferroloop._tls._SSLProtocolTransport.write`: a method, not a bare built-in.
        let write = pyo3::wrap_pyfunction!(crate::transports::tls_app_write, m)?;
        m.setattr("_tls_app_write", crate::ffi::instance_method(write.as_any())?)?;
        Ok(())
    }
}
