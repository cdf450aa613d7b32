//! The ready queue: callbacks that run on the next loop iteration, in FIFO order.
//!
//! asyncio runs, per iteration, exactly the callbacks that were ready when the iteration
//! started; callbacks scheduled while they run wait for the next iteration. The queue
//! gives that by handing out the whole current content as a batch
//! ([`ReadyQueue::take_batch`]). If running a batch is interrupted (an exception that must
//! leave the loop, such as `KeyboardInterrupt`), the unrun rest goes back in front with
//! [`ReadyQueue::requeue_front`], so nothing is lost or reordered.

use std::collections::VecDeque;

/// FIFO of ready callbacks.
#[derive(Debug)]
pub struct ReadyQueue<T> {
    queue: VecDeque<T>,
}

impl<T> Default for ReadyQueue<T> {
    fn default() -> Self {
        ReadyQueue {
            queue: VecDeque::new(),
        }
    }
}

impl<T> ReadyQueue<T> {
    /// An empty queue.
    pub fn new() -> Self {
        Self::default()
    }

    /// Appends a callback.
    pub fn push(&mut self, item: T) {
        self.queue.push_back(item);
    }

    /// Appends callbacks, in order.
    pub fn extend(&mut self, items: impl IntoIterator<Item = T>) {
        self.queue.extend(items);
    }

    /// Takes everything queued so far, leaving the queue empty (and its spare capacity
    /// with `spare`, a drained batch from an earlier iteration, to avoid reallocation).
    pub fn take_batch(&mut self, spare: VecDeque<T>) -> VecDeque<T> {
        debug_assert!(spare.is_empty());
        std::mem::replace(&mut self.queue, spare)
    }

    /// Puts the unrun remainder of a batch back in front of anything queued since.
    pub fn requeue_front(&mut self, mut rest: VecDeque<T>) {
        if rest.is_empty() {
            return;
        }
        rest.append(&mut self.queue);
        self.queue = rest;
    }

    /// Number of queued callbacks.
    pub fn len(&self) -> usize {
        self.queue.len()
    }

    /// Whether nothing is queued.
    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }

    /// The queued callbacks, oldest first.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.queue.iter()
    }

    /// Removes everything (used by `close()`).
    pub fn clear(&mut self) -> VecDeque<T> {
        std::mem::take(&mut self.queue)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batch_holds_only_what_was_ready() {
        let mut q = ReadyQueue::new();
        q.push(1);
        q.push(2);
        let batch = q.take_batch(VecDeque::new());
        q.push(3); // scheduled while the batch runs
        assert_eq!(batch.into_iter().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn interrupted_batch_goes_back_in_front() {
        let mut q = ReadyQueue::new();
        for i in 0..4 {
            q.push(i);
        }
        let mut batch = q.take_batch(VecDeque::new());
        assert_eq!(batch.pop_front(), Some(0));
        q.push(10);
        q.requeue_front(batch);
        assert_eq!(q.clear().into_iter().collect::<Vec<_>>(), vec![1, 2, 3, 10]);
        assert!(q.is_empty());
    }
}
