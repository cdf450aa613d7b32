//! The driver: one event loop's queues, poller and waker, and its iteration (`turn`).
//!
//! A [`Driver`] owns the ready queue, the timer heap, the fd registry with its poller, the
//! cross-thread waker and the poll's event buffer. [`Driver::turn`] is one iteration in
//! asyncio's order (`BaseEventLoop._run_once`):
//!
//! 1. drop cancelled timers from the top of the heap (or compact it);
//! 2. poll: timeout 0 if anything is ready or a stop was requested, else until the next
//!    timer (capped at a day), else forever; with nothing to wait for (no fds, no pending
//!    wake-up, zero timeout) the poll is skipped;
//! 3. queue the owners of ready fds, then what the embedder staged meanwhile
//!    ([`Dispatch::take_staged`], also taken before step 2), then the timers due before
//!    `now + resolution`;
//! 4. run exactly the entries queued now; what they schedule runs next time.
//!
//! The embedder (the Python binding) supplies what the driver must not know about through
//! [`Dispatch`]: how an fd owner or a due timer becomes a ready entry, how to wait (the
//! binding releases the GIL around it), what a failed poll means and how to run an entry.
//!
//! ## Locks
//! Every structure is behind its own `parking_lot` mutex, because other threads schedule
//! (`call_soon_threadsafe`) and the embedder's objects must be `Sync`. The rules:
//! - no lock is held while the embedder runs an entry, and none while a discarded payload
//!   is dropped (both may run arbitrary code that calls back into the driver);
//! - [`Dispatch::ready_entry`] is called with the registry and ready-queue locks held, so
//!   it must only look at the owner and clone a reference;
//! - the only lock held across the blocking wait is the event buffer's; a second thread
//!   that tries to iterate at the same time gets [`TurnError::Busy`] instead of waiting
//!   (it may hold a lock the waiting thread needs once it wakes: the GIL);
//! - after `fork()`, [`Driver::reset_in_forked_child`] takes only locks that are free and
//!   releases the event buffer's by force (its holder was a thread of the parent).

use std::collections::VecDeque;
use std::io;
use std::os::fd::RawFd;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::Mutex;

use crate::clock;
use crate::io::{IoRegistry, Side};
use crate::poller::{Events, Interest, Poller};
use crate::ready::ReadyQueue;
use crate::time::{Timer, TimerQueue};
use crate::waker::Waker;

/// The poll token of the waker (fd tokens are never this large).
const WAKER_TOKEN: u64 = u64::MAX;
/// Longest single wait, as asyncio's `MAXIMUM_SELECT_TIMEOUT`.
const MAX_POLL_TIMEOUT: f64 = 24.0 * 3600.0;

/// What the embedder does for the driver during a [`Driver::turn`].
pub trait Dispatch<R, T, H> {
    /// The embedder's error (the binding: a Python exception).
    type Error;

    /// The entry to queue for `owner`, the reader or writer (`side`) of a ready fd, or
    /// `None` if the owner was cancelled (it is then unregistered). Called with driver
    /// locks held: no callbacks, no drops.
    fn ready_entry(&self, owner: &H, side: Side) -> Option<R>;

    /// Turns a due timer into a ready entry; `lag` is how many seconds after its deadline
    /// it became ready (0 when early by less than the clock resolution).
    fn timer_entry(&self, timer: T, lag: f64) -> R;

    /// Whether a queued entry was cancelled (it is skipped).
    fn is_cancelled(&self, entry: &R) -> bool;

    /// Moves the entries the embedder queued on its side of the driver (without the
    /// driver's lock: the binding's callbacks, queued under the GIL) to the back of
    /// `ready`, in order. Called with the driver's locks held at the start of an
    /// iteration and again when the batch is taken: no callbacks, no drops.
    fn take_staged(&self, ready: &mut ReadyQueue<R>) {
        let _ = ready;
    }

    /// Runs `wait`, the blocking poll (the binding releases the GIL around it).
    fn blocking<F>(&self, wait: F) -> io::Result<usize>
    where
        F: FnOnce() -> io::Result<usize> + Send;

    /// The poll failed with `err` (`Interrupted` when a signal arrived): `Ok` carries on
    /// with the iteration, `Err` ends it.
    fn poll_failed(&self, err: io::Error) -> Result<(), Self::Error>;

    /// Runs one entry; `Err` stops the iteration (the unrun rest stays queued, in order).
    fn run(&self, entry: &R) -> Result<(), Self::Error>;
}

/// Why a [`Driver::turn`] ended early.
#[derive(Debug)]
pub enum TurnError<E> {
    /// Another thread is inside an iteration of this driver.
    Busy,
    /// The embedder's error from [`Dispatch::poll_failed`] or [`Dispatch::run`].
    Dispatch(E),
}

/// One event loop's queues, poller and waker. `R`: ready entries, `T`: timers, `H`: fd
/// owners.
pub struct Driver<R, T, H> {
    ready: Mutex<ReadyQueue<R>>,
    /// An emptied batch buffer kept for reuse by the next iteration.
    timers: Mutex<TimerQueue<T>>,
    io: Mutex<IoRegistry<H>>,
    poller: Poller,
    waker: Arc<Waker>,
    events: Mutex<Events>,
    stopping: AtomicBool,
    /// True while a thread waits in the poller.
    polling: AtomicBool,
    /// The registry's fd count, kept beside it so an iteration with ready work can tell
    /// whether it must poll without taking the registry's lock.
    io_len: AtomicUsize,
    clock_resolution: f64,
}

impl<R, T, H> std::fmt::Debug for Driver<R, T, H> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Driver")
            .field("poller", &self.poller)
            .field("stopping", &self.stopping)
            .finish_non_exhaustive()
    }
}

impl<R, T: Timer, H> Driver<R, T, H> {
    /// A driver with a new epoll instance and eventfd.
    pub fn new() -> io::Result<Self> {
        let poller = Poller::new()?;
        let waker = Waker::new()?;
        poller.add(waker.fd(), Interest::READABLE, WAKER_TOKEN)?;
        Ok(Driver {
            ready: Mutex::new(ReadyQueue::new()),
            timers: Mutex::new(TimerQueue::new()),
            io: Mutex::new(IoRegistry::new()),
            poller,
            waker: Arc::new(waker),
            events: Mutex::new(Events::with_capacity(1024)),
            stopping: AtomicBool::new(false),
            polling: AtomicBool::new(false),
            io_len: AtomicUsize::new(0),
            clock_resolution: clock::resolution(),
        })
    }

    // -- scheduling ------------------------------------------------------------------

    /// Queues an entry for the next iteration (wake the poller if it may be waiting).
    pub fn push_ready(&self, entry: R) {
        self.ready.lock().push(entry);
    }

    /// Queues a timer for `when` (loop time).
    pub fn push_timer(&self, when: f64, timer: T) {
        self.timers.lock().push(when, timer);
    }

    /// The counter that cancelled timers bump while queued (see [`TimerQueue`]).
    pub fn timer_cancel_counter(&self) -> Arc<std::sync::atomic::AtomicUsize> {
        self.timers.lock().cancel_counter()
    }

    /// Makes a waiting (or the next) poll return; safe from any thread.
    pub fn wake(&self) -> io::Result<()> {
        self.waker.wake()
    }

    /// Asks the iterations to end: the next poll does not block, and
    /// [`Driver::take_stop`] reports it.
    pub fn request_stop(&self) {
        self.stopping.store(true, Ordering::Release);
    }

    /// Whether a stop was requested.
    pub fn stop_requested(&self) -> bool {
        self.stopping.load(Ordering::Acquire)
    }

    /// Clears a stop request, returning whether there was one.
    pub fn take_stop(&self) -> bool {
        self.stopping.swap(false, Ordering::AcqRel)
    }

    /// The loop's clock granularity: timers due this close to now fire now.
    pub fn clock_resolution(&self) -> f64 {
        self.clock_resolution
    }

    /// Whether a thread waits in the poller right now.
    pub fn is_polling(&self) -> bool {
        self.polling.load(Ordering::Acquire)
    }

    // -- fd owners --------------------------------------------------------------------

    /// Makes `owner` the reader or writer of `fd`; returns the owner it replaced.
    pub fn set_fd(&self, fd: RawFd, side: Side, owner: H) -> io::Result<Option<H>> {
        self.change_io(|io, poller| io.set(poller, fd, side, owner))
    }

    /// Unregisters the reader or writer of `fd`, returning it.
    pub fn remove_fd(&self, fd: RawFd, side: Side) -> Option<H> {
        self.change_io(|io, poller| io.remove(poller, fd, side))
    }

    /// Unregisters the reader or writer of `fd` if `which` accepts it (under the registry
    /// lock: no callbacks in `which`), returning it.
    pub fn remove_fd_if(&self, fd: RawFd, side: Side, which: impl FnOnce(&H) -> bool) -> Option<H> {
        self.change_io(|io, poller| io.remove_if(poller, fd, side, which))
    }

    /// `f` on the registry, then `io_len` brought in step with it.
    fn change_io<X>(&self, f: impl FnOnce(&mut IoRegistry<H>, &Poller) -> X) -> X {
        let mut io = self.io.lock();
        let result = f(&mut io, &self.poller);
        self.io_len.store(io.len(), Ordering::Relaxed);
        result
    }

    /// `f` of the reader or writer of `fd` (called under the registry lock).
    pub fn with_fd<X>(&self, fd: RawFd, side: Side, f: impl FnOnce(Option<&H>) -> X) -> X {
        f(self.io.lock().get(fd, side))
    }

    // -- looking inside (counts, GC traversal) ------------------------------------------

    /// Number of queued ready entries.
    pub fn ready_len(&self) -> usize {
        self.ready.lock().len()
    }

    /// Number of queued timers (cancelled ones included) and of cancelled ones.
    pub fn timer_counts(&self) -> (usize, usize) {
        let timers = self.timers.lock();
        (timers.len(), timers.cancelled_count())
    }

    /// Number of fds watched.
    pub fn fd_count(&self) -> usize {
        self.io_len.load(Ordering::Relaxed)
    }

    /// `(readers, writers)` among the owners `counts` accepts (under the registry lock:
    /// no callbacks in `counts`).
    pub fn count_fd_owners(&self, counts: impl Fn(&H) -> bool) -> (usize, usize) {
        self.io.lock().count_sides(counts)
    }

    /// Calls `f` for every queued entry, timer and owner whose lock is free right now
    /// (for a garbage collector's traversal, which must never block). Stops at the first
    /// `Err`.
    pub fn try_visit<E>(
        &self,
        mut on_ready: impl FnMut(&R) -> Result<(), E>,
        mut on_timer: impl FnMut(&T) -> Result<(), E>,
        mut on_owner: impl FnMut(&H) -> Result<(), E>,
    ) -> Result<(), E> {
        if let Some(ready) = self.ready.try_lock() {
            ready.iter().try_for_each(&mut on_ready)?;
        }
        if let Some(timers) = self.timers.try_lock() {
            timers.iter().try_for_each(&mut on_timer)?;
        }
        if let Some(io) = self.io.try_lock() {
            io.iter().try_for_each(&mut on_owner)?;
        }
        Ok(())
    }

    /// `f` over the queued ready entries (under the ready lock: no callbacks in `f`).
    pub fn map_ready<X>(&self, f: impl FnMut(&R) -> X) -> Vec<X> {
        self.ready.lock().iter().map(f).collect()
    }

    // -- one iteration ------------------------------------------------------------------

    /// One loop iteration (see the module docs).
    pub fn turn<D: Dispatch<R, T, H>>(&self, dispatch: &D) -> Result<(), TurnError<D::Error>>
    where
        R: Send,
        T: Send,
        H: Send,
    {
        self.turn_with(dispatch, &mut VecDeque::new())
    }

    /// [`Driver::turn`] running the batch in `batch`, an empty deque the caller keeps
    /// from one iteration to the next (its capacity is reused; it is empty again on
    /// return). An iteration with ready work and nothing to poll takes two locks.
    pub fn turn_with<D: Dispatch<R, T, H>>(
        &self,
        dispatch: &D,
        batch: &mut VecDeque<R>,
    ) -> Result<(), TurnError<D::Error>>
    where
        R: Send,
        T: Send,
        H: Send,
    {
        debug_assert!(batch.is_empty());
        let mut discarded = Vec::new();
        let poll_for = {
            let mut timers = self.timers.lock();
            timers.prune(&mut discarded);
            let mut ready = self.ready.lock();
            dispatch.take_staged(&mut ready);
            let timeout = self.poll_timeout(&timers, ready.is_empty());
            let must_poll = timeout != Some(Duration::ZERO)
                || self.io_len.load(Ordering::Relaxed) > 0
                || self.waker.is_pending();
            if must_poll {
                Some(timeout)
            } else {
                self.take_batch(dispatch, &mut timers, &mut ready, batch, &mut discarded);
                None
            }
        };
        drop(discarded);

        if let Some(timeout) = poll_for {
            self.poll(dispatch, timeout)?;
            let mut discarded = Vec::new();
            {
                let mut timers = self.timers.lock();
                let mut ready = self.ready.lock();
                self.take_batch(dispatch, &mut timers, &mut ready, batch, &mut discarded);
            }
            drop(discarded);
        }

        while let Some(entry) = batch.pop_front() {
            if dispatch.is_cancelled(&entry) {
                continue;
            }
            if let Err(err) = dispatch.run(&entry) {
                self.ready.lock().requeue_front(std::mem::take(batch));
                return Err(TurnError::Dispatch(err));
            }
        }
        Ok(())
    }

    /// Queues what the embedder staged and the due timers behind what is ready, then
    /// moves everything ready into `batch` (step 3's second half and step 4's start,
    /// under the caller's locks).
    fn take_batch<D: Dispatch<R, T, H>>(
        &self,
        dispatch: &D,
        timers: &mut TimerQueue<T>,
        ready: &mut ReadyQueue<R>,
        batch: &mut VecDeque<R>,
        discarded: &mut Vec<T>,
    ) {
        dispatch.take_staged(ready);
        queue_due_timers(dispatch, timers, ready, self.clock_resolution, discarded);
        ready.take_batch(batch);
    }

    fn poll_timeout(&self, timers: &TimerQueue<T>, nothing_ready: bool) -> Option<Duration> {
        if self.stop_requested() || !nothing_ready {
            return Some(Duration::ZERO);
        }
        timers.next_deadline().map(|when| {
            let secs = (when - clock::monotonic()).clamp(0.0, MAX_POLL_TIMEOUT);
            Duration::from_secs_f64(secs)
        })
    }

    /// Waits for fd readiness and queues the entries of ready fds.
    fn poll<D: Dispatch<R, T, H>>(
        &self,
        dispatch: &D,
        timeout: Option<Duration>,
    ) -> Result<(), TurnError<D::Error>>
    where
        R: Send,
        T: Send,
        H: Send,
    {
        let Some(mut events_guard) = self.events.try_lock() else {
            return Err(TurnError::Busy);
        };
        let events: &mut Events = &mut events_guard;
        let poller = &self.poller;
        let waited = if timeout == Some(Duration::ZERO) {
            poller.wait(events, timeout)
        } else {
            self.polling.store(true, Ordering::Release);
            let waited = dispatch.blocking(|| poller.wait(events, timeout));
            self.polling.store(false, Ordering::Release);
            waited
        };
        if let Err(err) = waited {
            drop(events_guard); // the embedder may run signal handlers: no lock held
            return dispatch.poll_failed(err).map_err(TurnError::Dispatch);
        }
        let mut cancelled: Vec<(RawFd, Side)> = Vec::new();
        {
            let io = self.io.lock();
            let mut ready = self.ready.lock();
            for event in events.iter() {
                if event.token == WAKER_TOKEN {
                    self.waker.drain();
                    continue;
                }
                let (reader, writer) = io.dispatch(event);
                for (owner, side) in [(reader, Side::Read), (writer, Side::Write)] {
                    let Some(owner) = owner else { continue };
                    match dispatch.ready_entry(owner, side) {
                        Some(entry) => ready.push(entry),
                        None => cancelled.push((event.token as RawFd, side)),
                    }
                }
            }
        }
        drop(events_guard);
        // A cancelled owner unregisters itself, as asyncio's cancelled fd handles do.
        for (fd, side) in cancelled {
            let removed = self.remove_fd(fd, side);
            drop(removed);
        }
        Ok(())
    }

    // -- end of life ---------------------------------------------------------------------

    /// Empties every queue and unregisters every fd; returns what was queued, to be
    /// dropped by the caller once it is safe (no driver lock is held on return).
    pub fn discard_all(&self) -> (VecDeque<R>, Vec<T>, Vec<H>) {
        let ready = self.ready.lock().clear();
        let timers = self.timers.lock().clear();
        let owners = self.change_io(|io, poller| io.clear(poller));
        (ready, timers, owners)
    }

    /// Closes the poller and waker fds now (the loop's `close()`); a thread racing it
    /// gets `EBADF`, never a reused fd number.
    pub fn close_fds(&self) {
        self.poller.close();
        self.waker.close();
    }

    /// In a child process after `fork()`: a new epoll instance and eventfd (the inherited
    /// ones are shared with the parent), the watched fds whose owners `keep` accepts
    /// registered again. Never waits for a lock a parent thread held at the fork. Returns
    /// the owners dropped: not kept, or of fds that are gone.
    ///
    /// # Safety
    /// Only in the child right after `fork()`, before it starts threads.
    pub unsafe fn reset_in_forked_child(&self, keep: impl Fn(&H) -> bool) -> io::Result<Vec<H>> {
        // SAFETY: the caller guarantees we are the child's only thread.
        unsafe {
            self.poller.reset_in_forked_child()?;
            self.waker.reset_in_forked_child()?;
        }
        self.poller
            .add(self.waker.fd(), Interest::READABLE, WAKER_TOKEN)?;
        self.polling.store(false, Ordering::Release);
        if self.events.is_locked() {
            // SAFETY: the holder was a thread of the parent (a poll in progress), which
            // does not exist in the child; the buffer is scratch space that `wait` resets.
            unsafe { self.events.force_unlock() };
        }
        // The registry is locked only briefly and never across a wait; if a parent thread
        // happened to hold it, its fds stay with the (inherited) old registrations.
        let Some(mut io) = self.io.try_lock() else {
            return Ok(Vec::new());
        };
        let lost = io.register_all(&self.poller, keep);
        self.io_len.store(io.len(), Ordering::Relaxed);
        Ok(lost)
    }

    #[cfg(test)]
    fn ready_lock(&self) -> parking_lot::MutexGuard<'_, ReadyQueue<R>> {
        self.ready.lock()
    }
}

/// Moves the timers due before now (plus the clock's resolution) into `ready`, in
/// deadline order; reads the clock only if there are timers.
fn queue_due_timers<R, T: Timer, H, D: Dispatch<R, T, H>>(
    dispatch: &D,
    timers: &mut TimerQueue<T>,
    ready: &mut ReadyQueue<R>,
    resolution: f64,
    discarded: &mut Vec<T>,
) {
    if timers.is_empty() {
        return;
    }
    let now = clock::monotonic();
    while let Some((timer, when)) = timers.pop_due(now + resolution, discarded) {
        ready.push(dispatch.timer_entry(timer, (now - when).max(0.0)));
    }
}

#[cfg(test)]
mod tests;
