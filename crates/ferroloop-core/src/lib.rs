//! # ferroloop-core
//!
//! The interpreter-free engine of ferroloop. CPython's `asyncio` splits an event loop into
//! "a multiplexer" and "the event loop proper"; this crate is both halves, minus anything
//! that knows about Python:
//!
//! * [`Driver`] — one loop's queues, poller and waker, and its iteration
//!   ([`Driver::turn`], asyncio's `_run_once`); the embedder supplies what it runs
//!   through [`Dispatch`].
//! * [`Poller`] — a thin, level-triggered `epoll` wrapper (asyncio's selectors are
//!   level-triggered, and `add_reader` callbacks rely on being called again while data is
//!   pending).
//! * [`IoRegistry`] — which owner wants readiness of which fd, one reader and one writer
//!   per fd, and keeps the kernel's interest set in step with it. Owners are generic: the
//!   binding stores Python `add_reader` handles today and native transports later.
//! * [`TimerQueue`] — deadlines as float seconds on the monotonic clock, ordered by
//!   `(when, sequence)` so equal deadlines fire in scheduling order; cancelled timers are
//!   dropped lazily from the top and the heap is compacted when they dominate.
//! * [`ReadyQueue`] — FIFO of callbacks ready to run, drained in batches so that one loop
//!   iteration runs exactly what was ready when it started.
//! * [`Waker`] — an `eventfd` that other threads use to interrupt a blocking poll;
//!   wake-ups coalesce so a burst of `call_soon_threadsafe` costs one `write(2)`.
//! * [`net`] — socket calls and the write buffer of stream transports.
//! * [`process`] — child exit via `pidfd`, and reaping.
//! * [`reaper`] — the `SIGCHLD`-driven reaper of kernels without pidfds.
//! * [`signal`] — the wake-up pipe that carries caught signals' numbers to the loop.
//! * [`clock`] — the monotonic clock, in the same seconds as Python's `time.monotonic()`.
//!
//! Everything here is generic over the payload type and is tested with `cargo test`
//! without a Python interpreter.

#![deny(missing_docs)]
#![warn(missing_debug_implementations)]

#[macro_use]
mod sys;

pub mod clock;
mod driver;
mod io;
pub mod net;
mod poller;
pub mod process;
mod ready;
pub mod reaper;
pub mod signal;
mod time;
mod waker;

pub use driver::{Dispatch, Driver, TurnError};
pub use io::{IoRegistry, Side};
pub use poller::{Event, Events, Interest, Poller};
pub use ready::ReadyQueue;
pub use time::{Timer, TimerQueue, MIN_TIMERS_TO_COMPACT};
pub use waker::Waker;
