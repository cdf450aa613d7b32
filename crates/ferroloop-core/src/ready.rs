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

    /// Moves every callback of `more` to the back of the queue, in order, leaving
    /// `more` empty (when the queue is empty the two deques are just swapped).
    pub fn append(&mut self, more: &mut VecDeque<T>) {
        if more.is_empty() {
            return;
        }
        if self.queue.is_empty() {
            std::mem::swap(&mut self.queue, more);
        } else {
            self.queue.append(more);
        }
    }

    /// Moves everything queued so far into `batch`, an empty deque (a drained batch of
    /// an earlier iteration: the two swap storage, so neither reallocates nor drops).
    pub fn take_batch(&mut self, batch: &mut VecDeque<T>) {
        debug_assert!(batch.is_empty());
        std::mem::swap(&mut self.queue, batch);
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
        let mut batch = VecDeque::new();
        q.take_batch(&mut batch);
        q.push(3); // scheduled while the batch runs
        assert_eq!(batch.into_iter().collect::<Vec<_>>(), vec![1, 2]);
        assert_eq!(q.len(), 1);
    }

    #[test]
    fn appended_entries_go_behind_in_order() {
        let mut q = ReadyQueue::new();
        let mut staged = VecDeque::from([1, 2]);
        q.append(&mut staged); // empty queue: takes them over
        assert!(staged.is_empty());
        staged.extend([3, 4]);
        q.append(&mut staged);
        assert!(staged.is_empty());
        let mut batch = VecDeque::new();
        q.take_batch(&mut batch);
        assert_eq!(batch.into_iter().collect::<Vec<_>>(), vec![1, 2, 3, 4]);
    }

    #[test]
    fn interrupted_batch_goes_back_in_front() {
        let mut q = ReadyQueue::new();
        for i in 0..4 {
            q.push(i);
        }
        let mut batch = VecDeque::new();
        q.take_batch(&mut batch);
        assert_eq!(batch.pop_front(), Some(0));
        q.push(10);
        q.requeue_front(batch);
        assert_eq!(q.clear().into_iter().collect::<Vec<_>>(), vec![1, 2, 3, 10]);
        assert!(q.is_empty());
    }
}
