//! Who waits on which fd.
//!
//! An fd has at most one reader and one writer (asyncio's `add_reader` replaces the
//! previous reader). The registry keeps the kernel's interest set equal to "has a reader"
//! / "has a writer" and uses the fd itself as the poll token.
//!
//! Invariant: an fd is registered with the [`Poller`] exactly when it has a slot here, and
//! a slot always has a reader or a writer. Removing never fails: if the kernel already
//! dropped the fd (it was closed behind our back) there is nothing left to undo.

use std::collections::HashMap;
use std::io;
use std::os::fd::RawFd;

use crate::poller::{Event, Interest, Poller};

#[derive(Debug)]
struct Slot<T> {
    reader: Option<T>,
    writer: Option<T>,
}

impl<T> Slot<T> {
    fn interest(&self) -> Interest {
        Interest {
            readable: self.reader.is_some(),
            writable: self.writer.is_some(),
        }
    }
}

/// Readers and writers by fd, kept in step with a [`Poller`].
#[derive(Debug)]
pub struct IoRegistry<T> {
    slots: HashMap<RawFd, Slot<T>>,
}

impl<T> Default for IoRegistry<T> {
    fn default() -> Self {
        IoRegistry {
            slots: HashMap::new(),
        }
    }
}

/// Which side of an fd an owner waits on.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Side {
    /// Readability (`add_reader`).
    Read,
    /// Writability (`add_writer`).
    Write,
}

impl<T> IoRegistry<T> {
    /// An empty registry.
    pub fn new() -> Self {
        Self::default()
    }

    /// The token under which `fd` is registered.
    pub fn token(fd: RawFd) -> u64 {
        fd as u64
    }

    /// Makes `owner` the reader or writer of `fd`; returns the owner it replaced. On
    /// error nothing changes (the new owner is dropped).
    pub fn set(
        &mut self,
        poller: &Poller,
        fd: RawFd,
        side: Side,
        owner: T,
    ) -> io::Result<Option<T>> {
        let existed = self.slots.contains_key(&fd);
        let slot = self.slots.entry(fd).or_insert(Slot {
            reader: None,
            writer: None,
        });
        let place = match side {
            Side::Read => &mut slot.reader,
            Side::Write => &mut slot.writer,
        };
        let previous = place.replace(owner);
        let interest = slot.interest();
        let applied = if existed {
            poller.modify(fd, interest, Self::token(fd))
        } else {
            poller.add(fd, interest, Self::token(fd))
        };
        if let Err(err) = applied {
            // Roll back so the invariant holds: the registry mirrors the kernel.
            let slot = self.slots.get_mut(&fd).expect("slot inserted above");
            let place = match side {
                Side::Read => &mut slot.reader,
                Side::Write => &mut slot.writer,
            };
            *place = previous;
            if slot.interest().is_empty() {
                self.slots.remove(&fd);
            }
            return Err(err);
        }
        Ok(previous)
    }

    /// Removes and returns the reader or writer of `fd`, if any.
    pub fn remove(&mut self, poller: &Poller, fd: RawFd, side: Side) -> Option<T> {
        self.remove_if(poller, fd, side, |_| true)
    }

    /// Removes and returns the reader or writer of `fd` if `which` accepts it.
    pub fn remove_if(
        &mut self,
        poller: &Poller,
        fd: RawFd,
        side: Side,
        which: impl FnOnce(&T) -> bool,
    ) -> Option<T> {
        let slot = self.slots.get_mut(&fd)?;
        let place = match side {
            Side::Read => &mut slot.reader,
            Side::Write => &mut slot.writer,
        };
        if !place.as_ref().is_some_and(which) {
            return None;
        }
        let removed = place.take();
        let interest = slot.interest();
        if interest.is_empty() {
            self.slots.remove(&fd);
            // Ignored on purpose: see the module invariant.
            let _ = poller.delete(fd);
        } else {
            let _ = poller.modify(fd, interest, Self::token(fd));
        }
        removed
    }

    /// The reader or writer of `fd`.
    pub fn get(&self, fd: RawFd, side: Side) -> Option<&T> {
        let slot = self.slots.get(&fd)?;
        match side {
            Side::Read => slot.reader.as_ref(),
            Side::Write => slot.writer.as_ref(),
        }
    }

    /// The owners a readiness event concerns: `(reader, writer)`, each only if that side
    /// is ready and has an owner.
    pub fn dispatch(&self, event: Event) -> (Option<&T>, Option<&T>) {
        match self.slots.get(&(event.token as RawFd)) {
            None => (None, None),
            Some(slot) => (
                slot.reader.as_ref().filter(|_| event.readable),
                slot.writer.as_ref().filter(|_| event.writable),
            ),
        }
    }

    /// Number of fds with a reader or a writer.
    pub fn len(&self) -> usize {
        self.slots.len()
    }

    /// Whether no fd is watched.
    pub fn is_empty(&self) -> bool {
        self.slots.is_empty()
    }

    /// How many readers and how many writers `counts` accepts: `(readers, writers)`.
    pub fn count_sides(&self, counts: impl Fn(&T) -> bool) -> (usize, usize) {
        let mut sides = (0, 0);
        for slot in self.slots.values() {
            sides.0 += usize::from(slot.reader.as_ref().is_some_and(&counts));
            sides.1 += usize::from(slot.writer.as_ref().is_some_and(&counts));
        }
        sides
    }

    /// Every reader and writer, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = &T> {
        self.slots
            .values()
            .flat_map(|s| s.reader.iter().chain(s.writer.iter()))
    }

    /// Registers the watched fds again with `poller` (a fresh instance, after
    /// `Poller::reset`), keeping only the owners `keep` accepts. Owners not kept, and
    /// those of fds that are no longer open, are dropped from the registry and returned.
    pub fn register_all(&mut self, poller: &Poller, keep: impl Fn(&T) -> bool) -> Vec<T> {
        let mut lost = Vec::new();
        let fds: Vec<RawFd> = self.slots.keys().copied().collect();
        for fd in fds {
            let slot = self.slots.get_mut(&fd).expect("key listed above");
            for side in [&mut slot.reader, &mut slot.writer] {
                if side.as_ref().is_some_and(|owner| !keep(owner)) {
                    lost.extend(side.take());
                }
            }
            let interest = slot.interest();
            if interest.is_empty() || poller.add(fd, interest, Self::token(fd)).is_err() {
                let slot = self.slots.remove(&fd).expect("key listed above");
                lost.extend(slot.reader);
                lost.extend(slot.writer);
            }
        }
        lost
    }

    /// Unregisters everything and hands back all owners (used by `close()`).
    pub fn clear(&mut self, poller: &Poller) -> Vec<T> {
        let mut owners = Vec::with_capacity(self.slots.len() * 2);
        for (fd, slot) in self.slots.drain() {
            let _ = poller.delete(fd);
            owners.extend(slot.reader);
            owners.extend(slot.writer);
        }
        owners
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poller::Events;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;
    use std::time::Duration;

    #[test]
    fn count_sides_counts_readers_and_writers_apart() {
        let poller = Poller::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        let mut io = IoRegistry::new();
        io.set(&poller, a.as_raw_fd(), Side::Read, 1).unwrap();
        io.set(&poller, a.as_raw_fd(), Side::Write, 2).unwrap();
        io.set(&poller, b.as_raw_fd(), Side::Read, 3).unwrap();
        assert_eq!(io.count_sides(|_| true), (2, 1));
        assert_eq!(io.count_sides(|owner| *owner != 3), (1, 1));
        io.remove(&poller, a.as_raw_fd(), Side::Read);
        assert_eq!(io.count_sides(|_| true), (1, 1));
    }

    #[test]
    fn remove_if_removes_only_the_owner_it_accepts() {
        let poller = Poller::new().unwrap();
        let (a, _b) = UnixStream::pair().unwrap();
        let fd = a.as_raw_fd();
        let mut io = IoRegistry::new();
        io.set(&poller, fd, Side::Read, 1).unwrap();
        assert_eq!(io.remove_if(&poller, fd, Side::Read, |owner| *owner == 2), None);
        assert_eq!(io.get(fd, Side::Read), Some(&1));
        assert_eq!(io.remove_if(&poller, fd, Side::Write, |_| true), None);
        assert_eq!(io.remove_if(&poller, fd, Side::Read, |owner| *owner == 1), Some(1));
        assert!(io.is_empty(), "the last owner's registration is gone");
    }

    #[test]
    fn reader_and_writer_share_one_registration() {
        let poller = Poller::new().unwrap();
        let mut reg = IoRegistry::new();
        let (mut a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        assert_eq!(reg.set(&poller, fd, Side::Read, "r1").unwrap(), None);
        assert_eq!(reg.set(&poller, fd, Side::Read, "r2").unwrap(), Some("r1"));
        assert_eq!(reg.set(&poller, fd, Side::Write, "w").unwrap(), None);
        assert_eq!(reg.len(), 1);
        a.write_all(b"x").unwrap();
        let mut events = Events::with_capacity(4);
        poller
            .wait(&mut events, Some(Duration::from_secs(1)))
            .unwrap();
        let ev = events.iter().next().unwrap();
        assert_eq!(reg.dispatch(ev), (Some(&"r2"), Some(&"w")));
        assert_eq!(reg.remove(&poller, fd, Side::Write), Some("w"));
        assert_eq!(reg.remove(&poller, fd, Side::Write), None);
        poller
            .wait(&mut events, Some(Duration::from_secs(1)))
            .unwrap();
        assert_eq!(
            reg.dispatch(events.iter().next().unwrap()),
            (Some(&"r2"), None)
        );
        assert_eq!(reg.remove(&poller, fd, Side::Read), Some("r2"));
        assert!(reg.is_empty());
        assert_eq!(poller.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
    }

    #[test]
    fn failed_registration_leaves_no_trace() {
        let poller = Poller::new().unwrap();
        let mut reg = IoRegistry::new();
        let err = reg.set(&poller, 999_999, Side::Read, 1).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        assert!(reg.is_empty());
        assert_eq!(reg.get(999_999, Side::Read), None);
    }

    #[test]
    fn closed_fd_can_still_be_removed() {
        let poller = Poller::new().unwrap();
        let mut reg = IoRegistry::new();
        let (_a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        reg.set(&poller, fd, Side::Read, 5).unwrap();
        drop(b);
        assert_eq!(reg.remove(&poller, fd, Side::Read), Some(5));
        assert!(reg.is_empty());
    }

    #[test]
    fn register_all_drops_the_owners_not_kept() {
        let poller = Poller::new().unwrap();
        let mut reg = IoRegistry::new();
        let (_a, b) = UnixStream::pair().unwrap();
        let (_c, d) = UnixStream::pair().unwrap();
        reg.set(&poller, b.as_raw_fd(), Side::Read, 1).unwrap();
        reg.set(&poller, b.as_raw_fd(), Side::Write, 10).unwrap();
        reg.set(&poller, d.as_raw_fd(), Side::Read, 2).unwrap();
        // SAFETY: no other thread uses this poller.
        unsafe { poller.reset_in_forked_child() }.unwrap();
        let mut lost = reg.register_all(&poller, |owner| *owner != 10 && *owner != 2);
        lost.sort();
        assert_eq!(lost, vec![2, 10]);
        assert_eq!(reg.get(b.as_raw_fd(), Side::Read), Some(&1));
        assert_eq!(reg.get(b.as_raw_fd(), Side::Write), None);
        assert_eq!(reg.get(d.as_raw_fd(), Side::Read), None);
        assert_eq!(reg.len(), 1);
    }

    #[test]
    fn register_all_moves_watches_to_a_fresh_poller_and_drops_closed_fds() {
        let poller = Poller::new().unwrap();
        let mut reg = IoRegistry::new();
        let (mut a, b) = UnixStream::pair().unwrap();
        let (_c, d) = UnixStream::pair().unwrap();
        reg.set(&poller, b.as_raw_fd(), Side::Read, 1).unwrap();
        reg.set(&poller, d.as_raw_fd(), Side::Read, 2).unwrap();
        let closed_fd = d.as_raw_fd();
        drop(d);
        // SAFETY: no other thread uses this poller.
        unsafe { poller.reset_in_forked_child() }.unwrap();
        assert_eq!(reg.register_all(&poller, |_| true), vec![2]);
        assert_eq!(reg.get(closed_fd, Side::Read), None);
        a.write_all(b"x").unwrap();
        let mut events = Events::with_capacity(4);
        poller
            .wait(&mut events, Some(Duration::from_secs(1)))
            .unwrap();
        assert_eq!(
            reg.dispatch(events.iter().next().unwrap()),
            (Some(&1), None)
        );
    }

    #[test]
    fn clear_returns_every_owner() {
        let poller = Poller::new().unwrap();
        let mut reg = IoRegistry::new();
        let (a, b) = UnixStream::pair().unwrap();
        reg.set(&poller, a.as_raw_fd(), Side::Read, 1).unwrap();
        reg.set(&poller, a.as_raw_fd(), Side::Write, 2).unwrap();
        reg.set(&poller, b.as_raw_fd(), Side::Read, 3).unwrap();
        let mut owners = reg.clear(&poller);
        owners.sort();
        assert_eq!(owners, vec![1, 2, 3]);
        assert!(reg.is_empty());
    }
}
