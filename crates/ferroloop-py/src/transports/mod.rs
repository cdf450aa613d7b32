//! Native transports: sockets whose readiness is handled in Rust.
//!
//! * [`core`] — what every kind shares: identity, the state under the lock, close/abort,
//!   fatal errors, `connection_lost`, flow control, pausing reads, the Python face.
//! * [`stream`] — `StreamTransport`, asyncio's socket transport for TCP and Unix streams:
//!   reads straight into `data_received`/`BufferedProtocol`, writes through
//!   `ferroloop_core::net::WriteBuffer`, half-close, sendfile's waiter.
//! * [`datagram`] — `DatagramTransport`, asyncio's UDP and Unix datagram transport.
//!
//! A transport owns its fd's registrations in the loop's driver (as
//! `FdOwner::Transport`) and the Python socket object (which owns the fd and closes it
//! after `connection_lost`). Python calls into a transport (`write`, `close`, ...) and the
//! loop calls it on readiness; both take its state lock only briefly and never call Python
//! while holding it. Users never see a core: they get its face (`ferroloop._transports`).

pub(crate) mod core;
mod datagram;
mod stream;

use ferroloop_core::Side;
use pyo3::gc::PyVisit;
use pyo3::prelude::*;
use pyo3::PyTraverseError;

use self::core::Transport;

pub use datagram::DatagramTransport;
pub use stream::StreamTransport;

/// A native transport, as the driver keeps it for the fds it watches.
pub enum NativeTransport {
    Stream(Py<StreamTransport>),
    Datagram(Py<DatagramTransport>),
}

impl NativeTransport {
    /// Handles readiness of the transport's socket on `side` (called by the loop).
    pub fn on_ready(&self, py: Python<'_>, side: Side) -> PyResult<()> {
        match self {
            NativeTransport::Stream(t) => StreamTransport::on_ready(t.bind(py), side),
            NativeTransport::Datagram(t) => DatagramTransport::on_ready(t.bind(py), side),
        }
    }

    /// The loop closed or the fd is gone: the core lets go of its face (see
    /// `core::Common::face`).
    pub fn release_face(&self, py: Python<'_>) {
        match self {
            NativeTransport::Stream(t) => t.bind(py).get().common().release_face(),
            NativeTransport::Datagram(t) => t.bind(py).get().common().release_face(),
        }
    }

    pub fn clone_ref(&self, py: Python<'_>) -> Self {
        match self {
            NativeTransport::Stream(t) => NativeTransport::Stream(t.clone_ref(py)),
            NativeTransport::Datagram(t) => NativeTransport::Datagram(t.clone_ref(py)),
        }
    }

    /// The core object (for `_current_handle` and slow-callback logs in debug mode).
    pub fn object(&self, py: Python<'_>) -> Py<PyAny> {
        match self {
            NativeTransport::Stream(t) => t.clone_ref(py).into_any(),
            NativeTransport::Datagram(t) => t.clone_ref(py).into_any(),
        }
    }

    pub fn traverse(&self, visit: &PyVisit<'_>) -> Result<(), PyTraverseError> {
        match self {
            NativeTransport::Stream(t) => visit.call(t),
            NativeTransport::Datagram(t) => visit.call(t),
        }
    }
}
