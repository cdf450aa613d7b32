//! Native transports: sockets whose readiness is handled in Rust.
//!
//! * [`stream`] — `StreamTransport`, asyncio's socket transport for TCP and Unix streams:
//!   reads straight into `data_received`/`BufferedProtocol`, writes through
//!   `ferroloop_core::net::WriteBuffer`, flow control at the water marks, half-close,
//!   `close` (flushes) and `abort` (drops).
//!
//! A transport owns its fd's registrations in the loop's driver (as `FdOwner::Stream`)
//! and the Python socket object (which owns the fd and closes it after
//! `connection_lost`). Python calls into a transport (`write`, `close`, ...) and the loop
//! calls it on readiness; both take its state lock only briefly and never call Python
//! while holding it.

mod stream;

pub use stream::StreamTransport;
