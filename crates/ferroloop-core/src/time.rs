//! The timer queue.
//!
//! Deadlines are float seconds on the loop's clock, exactly as `loop.call_at()` receives
//! them — no rounding to a millisecond wheel, so `TimerHandle.when()` returns what was
//! asked and timers due at different sub-millisecond instants keep their order.
//!
//! Ordering is by `(when, sequence)`: the sequence number is taken at scheduling time, so
//! timers with equal deadlines fire in the order they were scheduled. `Eq` and `Ord` use
//! the same key (NaN deadlines are refused by the binding; `f64::total_cmp` keeps the
//! order total regardless).
//!
//! Cancellation is lazy, as in asyncio: a cancelled timer stays in the heap and is
//! discarded when it reaches the top. Every cancel of a still-queued timer bumps the
//! shared counter from [`TimerQueue::cancel_counter`]; when more than half of more than
//! [`MIN_TIMERS_TO_COMPACT`] queued timers are cancelled, [`TimerQueue::prune`] rebuilds
//! the heap without them, so cancel-heavy workloads (timeouts that almost never fire)
//! keep the heap small.
//!
//! Ground rule for the counter: a payload counts its cancellation only while it is
//! queued — between [`TimerQueue::push`] and the [`Timer::unscheduled`] call the queue
//! makes when the timer leaves.

use std::cmp::Ordering;
use std::collections::BinaryHeap;
use std::sync::atomic::{AtomicUsize, Ordering as AtomicOrdering};
use std::sync::Arc;

/// Below this many queued timers the heap is never compacted (asyncio uses 100 too).
pub const MIN_TIMERS_TO_COMPACT: usize = 100;

/// What the queue needs to know about a timer payload.
pub trait Timer {
    /// Whether the timer was cancelled.
    fn is_cancelled(&self) -> bool;
    /// The timer left the queue (fired or discarded): from now on cancelling it must not
    /// bump the cancel counter.
    fn unscheduled(&self);
}

struct Entry<T> {
    when: f64,
    seq: u64,
    timer: T,
}

impl<T> Entry<T> {
    fn key_cmp(&self, other: &Self) -> Ordering {
        self.when
            .total_cmp(&other.when)
            .then(self.seq.cmp(&other.seq))
    }
}

impl<T> PartialEq for Entry<T> {
    fn eq(&self, other: &Self) -> bool {
        self.key_cmp(other) == Ordering::Equal
    }
}
impl<T> Eq for Entry<T> {}
impl<T> PartialOrd for Entry<T> {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl<T> Ord for Entry<T> {
    // BinaryHeap is a max-heap; reverse so the earliest (when, seq) is on top.
    fn cmp(&self, other: &Self) -> Ordering {
        other.key_cmp(self)
    }
}

/// Min-heap of timers by `(when, sequence)`.
pub struct TimerQueue<T> {
    heap: BinaryHeap<Entry<T>>,
    next_seq: u64,
    cancelled: Arc<AtomicUsize>,
}

impl<T> std::fmt::Debug for TimerQueue<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TimerQueue")
            .field("len", &self.heap.len())
            .field("cancelled", &self.cancelled.load(AtomicOrdering::Relaxed))
            .finish()
    }
}

impl<T: Timer> Default for TimerQueue<T> {
    fn default() -> Self {
        TimerQueue {
            heap: BinaryHeap::new(),
            next_seq: 0,
            cancelled: Arc::new(AtomicUsize::new(0)),
        }
    }
}

impl<T: Timer> TimerQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// The counter a payload bumps when it is cancelled while queued.
    pub fn cancel_counter(&self) -> Arc<AtomicUsize> {
        Arc::clone(&self.cancelled)
    }

    /// How many queued timers are cancelled (as counted by the payloads).
    pub fn cancelled_count(&self) -> usize {
        self.cancelled.load(AtomicOrdering::Relaxed)
    }

    /// Queues `timer` to fire at `when`.
    pub fn push(&mut self, when: f64, timer: T) {
        let seq = self.next_seq;
        self.next_seq += 1;
        self.heap.push(Entry { when, seq, timer });
    }

    fn forget_cancelled(&self, n: usize) {
        // Saturating: a payload that miscounts must not wrap the counter around.
        let _ =
            self.cancelled
                .fetch_update(AtomicOrdering::Relaxed, AtomicOrdering::Relaxed, |c| {
                    Some(c.saturating_sub(n))
                });
    }

    /// Drops cancelled timers: all of them if they dominate the heap, otherwise those on
    /// top, so that [`Self::next_deadline`] is the deadline of a live timer. The dropped
    /// payloads are moved into `discarded` instead of being destroyed here, so a caller
    /// holding a lock can release it before running their destructors.
    pub fn prune(&mut self, discarded: &mut Vec<T>) {
        let len = self.heap.len();
        if len > MIN_TIMERS_TO_COMPACT && self.cancelled_count() * 2 > len {
            let before = discarded.len();
            let (live, dead): (Vec<_>, Vec<_>) = std::mem::take(&mut self.heap)
                .into_iter()
                .partition(|e| !e.timer.is_cancelled());
            self.heap = BinaryHeap::from(live);
            discarded.extend(dead.into_iter().map(|e| {
                e.timer.unscheduled();
                e.timer
            }));
            self.forget_cancelled(discarded.len() - before);
        } else {
            while self.heap.peek().is_some_and(|e| e.timer.is_cancelled()) {
                let entry = self.heap.pop().expect("peeked");
                entry.timer.unscheduled();
                self.forget_cancelled(1);
                discarded.push(entry.timer);
            }
        }
    }

    /// The earliest deadline in the queue (cancelled timers included unless pruned).
    pub fn next_deadline(&self) -> Option<f64> {
        self.heap.peek().map(|e| e.when)
    }

    /// Pops the next live timer due before `end`, with its deadline; cancelled ones met
    /// on the way are moved into `discarded`.
    pub fn pop_due(&mut self, end: f64, discarded: &mut Vec<T>) -> Option<(T, f64)> {
        while let Some(top) = self.heap.peek() {
            if top.when >= end {
                return None;
            }
            let entry = self.heap.pop().expect("peeked");
            entry.timer.unscheduled();
            if entry.timer.is_cancelled() {
                self.forget_cancelled(1);
                discarded.push(entry.timer);
                continue;
            }
            return Some((entry.timer, entry.when));
        }
        None
    }

    /// Number of queued timers, cancelled ones included.
    pub fn len(&self) -> usize {
        self.heap.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    /// The queued timers, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.heap.iter().map(|e| &e.timer)
    }

    /// Removes every timer (used by `close()`), returning them in no particular order.
    pub fn clear(&mut self) -> Vec<T> {
        self.cancelled.store(0, AtomicOrdering::Relaxed);
        self.heap
            .drain()
            .map(|e| {
                e.timer.unscheduled();
                e.timer
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::cell::Cell;
    use std::rc::Rc;

    /// A timer payload like the binding's TimerHandle: counts its cancel only while queued.
    #[derive(Clone)]
    struct TestTimer {
        id: u32,
        cancelled: Rc<Cell<bool>>,
        scheduled: Rc<Cell<bool>>,
        counter: Arc<AtomicUsize>,
    }

    impl TestTimer {
        fn new(id: u32, q: &TimerQueue<TestTimer>) -> Self {
            TestTimer {
                id,
                cancelled: Rc::new(Cell::new(false)),
                scheduled: Rc::new(Cell::new(true)),
                counter: q.cancel_counter(),
            }
        }
        fn cancel(&self) {
            if !self.cancelled.replace(true) && self.scheduled.get() {
                self.counter.fetch_add(1, AtomicOrdering::Relaxed);
            }
        }
    }

    impl Timer for TestTimer {
        fn is_cancelled(&self) -> bool {
            self.cancelled.get()
        }
        fn unscheduled(&self) {
            self.scheduled.set(false);
        }
    }

    fn drain_due(q: &mut TimerQueue<TestTimer>, end: f64) -> Vec<u32> {
        let mut discarded = Vec::new();
        std::iter::from_fn(|| q.pop_due(end, &mut discarded))
            .map(|(t, _)| t.id)
            .collect()
    }

    #[test]
    fn fires_in_deadline_order() {
        let mut q = TimerQueue::new();
        for (id, when) in [(1, 3.0), (2, 1.0), (3, 2.0), (4, 0.5)] {
            let t = TestTimer::new(id, &q);
            q.push(when, t);
        }
        assert_eq!(q.next_deadline(), Some(0.5));
        assert_eq!(drain_due(&mut q, 2.5), vec![4, 2, 3]);
        assert_eq!(drain_due(&mut q, 10.0), vec![1]);
        assert!(q.is_empty());
    }

    #[test]
    fn equal_deadlines_fire_in_scheduling_order() {
        let mut q = TimerQueue::new();
        for id in 0..1000 {
            let t = TestTimer::new(id, &q);
            q.push(5.0, t);
        }
        assert_eq!(drain_due(&mut q, 6.0), (0..1000).collect::<Vec<_>>());
    }

    #[test]
    fn sub_millisecond_deadlines_keep_their_order() {
        let mut q = TimerQueue::new();
        let a = TestTimer::new(1, &q);
        let b = TestTimer::new(2, &q);
        q.push(1.0002, a);
        q.push(1.0001, b);
        assert_eq!(drain_due(&mut q, 1.00015), vec![2]);
        assert_eq!(drain_due(&mut q, 1.0003), vec![1]);
    }

    #[test]
    fn deadline_equal_to_end_is_not_due() {
        let mut q = TimerQueue::new();
        let t = TestTimer::new(1, &q);
        q.push(2.0, t);
        assert!(q.pop_due(2.0, &mut Vec::new()).is_none());
        assert!(q.pop_due(2.0 + 1e-9, &mut Vec::new()).is_some());
    }

    #[test]
    fn cancelled_timers_are_skipped_and_uncounted() {
        let mut q = TimerQueue::new();
        let timers: Vec<_> = (0..5).map(|id| TestTimer::new(id, &q)).collect();
        for t in &timers {
            q.push(t.id as f64, t.clone());
        }
        timers[0].cancel();
        timers[2].cancel();
        assert_eq!(q.cancelled_count(), 2);
        q.prune(&mut Vec::new());
        assert_eq!(q.next_deadline(), Some(1.0));
        assert_eq!(q.cancelled_count(), 1);
        assert_eq!(drain_due(&mut q, 100.0), vec![1, 3, 4]);
        assert_eq!(q.cancelled_count(), 0);
        // Cancelling after it fired does not count.
        timers[4].cancel();
        assert_eq!(q.cancelled_count(), 0);
    }

    #[test]
    fn compacts_when_cancelled_dominate() {
        let mut q = TimerQueue::new();
        let timers: Vec<_> = (0..300).map(|id| TestTimer::new(id, &q)).collect();
        for t in &timers {
            q.push(1000.0 - t.id as f64, t.clone());
        }
        // Cancel 200 of 300, none of them on top of the heap (top is id 299).
        for t in &timers[..200] {
            t.cancel();
        }
        let mut discarded = Vec::new();
        q.prune(&mut discarded);
        assert_eq!(discarded.len(), 200);
        assert_eq!(q.len(), 100);
        assert_eq!(q.cancelled_count(), 0);
        assert!(timers[..200].iter().all(|t| !t.scheduled.get()));
        assert_eq!(drain_due(&mut q, f64::INFINITY).len(), 100);
    }

    #[test]
    fn no_compaction_below_threshold_or_half() {
        let mut q = TimerQueue::new();
        let timers: Vec<_> = (0..300).map(|id| TestTimer::new(id, &q)).collect();
        for t in &timers {
            q.push(t.id as f64, t.clone());
        }
        for t in &timers[150..] {
            t.cancel(); // exactly half, none on top
        }
        q.prune(&mut Vec::new());
        assert_eq!(q.len(), 300);
        assert_eq!(q.cancelled_count(), 150);
    }

    #[test]
    fn clear_unschedules_everything() {
        let mut q = TimerQueue::new();
        let t = TestTimer::new(1, &q);
        q.push(1.0, t.clone());
        t.cancel();
        assert_eq!(q.clear().len(), 1);
        assert_eq!(q.cancelled_count(), 0);
        assert!(!t.scheduled.get());
    }
}
