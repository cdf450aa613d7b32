//! Native transports: sockets whose readiness is handled in Rust.
//!
//! * [`buffers`] — moving bytes: `write()`'s argument check, reads into the loop thread's
//!   buffer, send-now-or-buffer.
//! * [`core`] — what every kind shares: identity, the state under the lock, close/abort,
//!   fatal errors, `connection_lost`, flow control, pausing reads, the Python face.
//! * [`stream`] — `StreamTransport`, asyncio's socket transport for TCP and Unix streams:
//!   reads straight into `data_received`/`BufferedProtocol`, writes through
//!   `ferroloop_core::net::WriteBuffer`, half-close, sendfile's waiter.
//! * [`macros`] — `native_transport!`, the shared `#[pymethods]` of every kind.
//! * [`flow`] — write flow control: the water marks and the protocol's pause state.
//! * [`datagram`] — `DatagramTransport`, asyncio's UDP and Unix datagram transport.
//! * [`pipe`] — `ReadPipeTransport`/`WritePipeTransport`, asyncio's Unix pipe transports
//!   (pipes, FIFOs, ptys, subprocess pipes).
//! * [`tls`] — the TLS record pump's hot path (asyncio's `SSLProtocol` in the `WRAPPED`
//!   state): records from a `StreamTransport` and application writes, in Rust.
//!
//! A transport owns its fd's registrations in the loop's driver (as
//! `FdOwner::Transport`) and the Python socket object (which owns the fd and closes it
//! after `connection_lost`). Python calls into a transport (`write`, `close`, ...) and the
//! loop calls it on readiness; both take its state lock only briefly and never call Python
//! while holding it. Users never see a core: they get its face (`ferroloop._transports`).

pub(crate) mod buffers;
pub(crate) mod core;
mod datagram;
pub(crate) mod flow;
mod macros;
mod pipe;
mod stream;
mod tls;

use ferroloop_core::Side;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::PyTraverseError;

use self::core::Transport;

pub use datagram::DatagramTransport;
pub use pipe::{ReadPipeTransport, WritePipeTransport};
pub use stream::StreamTransport;
pub use tls::tls_app_write;

/// A native transport, as the driver keeps it for the fds it watches.
pub enum NativeTransport {
    Stream(Py<StreamTransport>),
    Datagram(Py<DatagramTransport>),
    ReadPipe(Py<ReadPipeTransport>),
    WritePipe(Py<WritePipeTransport>),
}

/// `$body` with `$t` bound to the transport, whatever its kind.
macro_rules! each_kind {
    ($native:expr, $t:ident => $body:expr) => {
        match $native {
            NativeTransport::Stream($t) => $body,
            NativeTransport::Datagram($t) => $body,
            NativeTransport::ReadPipe($t) => $body,
            NativeTransport::WritePipe($t) => $body,
        }
    };
}

impl NativeTransport {
    /// Handles readiness of the transport's socket on `side` (called by the loop).
    pub fn on_ready(&self, py: Python<'_>, side: Side) -> PyResult<()> {
        match self {
            NativeTransport::Stream(t) => StreamTransport::on_ready(t.bind(py), side),
            NativeTransport::Datagram(t) => DatagramTransport::on_ready(t.bind(py), side),
            NativeTransport::ReadPipe(t) => ReadPipeTransport::on_ready(t.bind(py), side),
            NativeTransport::WritePipe(t) => WritePipeTransport::on_ready(t.bind(py), side),
        }
    }

    /// The loop closed or the fd is gone: the core lets go of its face (see
    /// `core::Common::face`).
    pub fn release_face(&self, py: Python<'_>) {
        each_kind!(self, t => t.bind(py).get().common().release_face())
    }

    pub fn clone_ref(&self, py: Python<'_>) -> Self {
        match self {
            NativeTransport::Stream(t) => NativeTransport::Stream(t.clone_ref(py)),
            NativeTransport::Datagram(t) => NativeTransport::Datagram(t.clone_ref(py)),
            NativeTransport::ReadPipe(t) => NativeTransport::ReadPipe(t.clone_ref(py)),
            NativeTransport::WritePipe(t) => NativeTransport::WritePipe(t.clone_ref(py)),
        }
    }

    /// The core object (for `_current_handle` and slow-callback logs in debug mode).
    pub fn object(&self, py: Python<'_>) -> Py<PyAny> {
        each_kind!(self, t => t.clone_ref(py).into_any())
    }

    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        each_kind!(self, t => visit.call(t))
    }
}
