//! Cross-thread wake-up of a blocking poll.
//!
//! An `eventfd` registered with the loop's poller. [`Waker::wake`] may be called from any
//! thread, any number of times; wake-ups coalesce: only the first call after
//! [`Waker::drain`] writes to the fd. Ordering contract: a producer publishes its work
//! (e.g. pushes to the ready queue) *before* calling `wake`, and the loop calls `drain`
//! *before* looking at that work, so a wake-up is never lost: either the loop sees the
//! work in this iteration, or the flag is clear and the write makes the next poll return.
//!
//! Share the waker with `Arc`. [`Waker::close`] may release the fd early; a thread racing
//! it can never write into a closed (and possibly reused) fd number (see
//! `sys::ClosableFd`: the fd is closed only once no system call uses it).

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::sync::atomic::{AtomicBool, Ordering};

use crate::sys::ClosableFd;

/// An eventfd-based waker with coalescing.
#[derive(Debug)]
pub struct Waker {
    fd: ClosableFd,
    pending: AtomicBool,
}

impl Waker {
    /// A new non-blocking, close-on-exec eventfd.
    pub fn new() -> io::Result<Self> {
        Ok(Waker {
            fd: ClosableFd::new(Self::create_eventfd()?),
            pending: AtomicBool::new(false),
        })
    }

    fn create_eventfd() -> io::Result<OwnedFd> {
        let fd = syscall!(eventfd(0, libc::EFD_CLOEXEC | libc::EFD_NONBLOCK))?;
        // SAFETY: eventfd returned a fresh fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Replaces the eventfd with a new one and forgets pending wake-ups (for a child
    /// after `fork()`, whose inherited eventfd is shared with the parent).
    ///
    /// # Safety
    /// Only in a child process right after `fork()`, before any other thread uses this
    /// waker (the threads that used it in the parent do not exist in the child).
    pub unsafe fn reset_in_forked_child(&self) -> io::Result<()> {
        let fresh = Self::create_eventfd()?;
        // SAFETY: the caller guarantees no other thread uses the fd.
        unsafe { self.fd.replace_in_forked_child(fresh) };
        self.pending.store(false, Ordering::Release);
        Ok(())
    }

    /// The fd to register for readability (`-1` once closed).
    pub fn fd(&self) -> RawFd {
        self.fd.with(Ok).unwrap_or(-1)
    }

    /// Closes the eventfd now instead of at drop; later wake-ups are no-ops that report
    /// `EBADF`, never a write into a reused fd number.
    pub fn close(&self) {
        self.fd.close();
    }

    /// Makes the next (or current) poll return. Safe from any thread.
    pub fn wake(&self) -> io::Result<()> {
        if self.pending.swap(true, Ordering::AcqRel) {
            return Ok(());
        }
        let one: u64 = 1;
        // The buffer is a live 8-byte integer, as eventfd requires.
        let written = self
            .fd
            .with(|fd| syscall!(write(fd, (&one as *const u64).cast(), 8)));
        match written {
            Ok(_) => Ok(()),
            // The counter is saturated: the fd is readable anyway.
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => Ok(()),
            Err(e) => {
                self.pending.store(false, Ordering::Release);
                Err(e)
            }
        }
    }

    /// Consumes pending wake-ups; call before looking at the work they announce.
    ///
    /// The fd is read *before* the flag is cleared. The other order loses wake-ups: a
    /// `wake` between clearing and reading would set the flag and write, the read would
    /// swallow that write, and every later `wake` would see the flag set and skip its
    /// write while the fd stays empty. In this order a `wake` that skips its write ran
    /// before the flag was cleared, so its work is visible to the caller's next look.
    pub fn drain(&self) {
        let mut buf: u64 = 0;
        // Non-blocking read into a live 8-byte integer; EAGAIN just means nothing pending.
        let _ = self
            .fd
            .with(|fd| syscall!(read(fd, (&mut buf as *mut u64).cast(), 8)));
        self.pending.store(false, Ordering::Release);
    }

    /// Whether a wake-up was sent and not yet drained.
    pub fn is_pending(&self) -> bool {
        self.pending.load(Ordering::Acquire)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::poller::{Events, Interest, Poller};
    use std::sync::Arc;
    use std::time::Duration;

    #[test]
    fn wake_interrupts_a_blocking_wait_from_another_thread() {
        let poller = Poller::new().unwrap();
        let waker = Arc::new(Waker::new().unwrap());
        poller.add(waker.fd(), Interest::READABLE, 42).unwrap();
        let remote = Arc::clone(&waker);
        let t = std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(20));
            remote.wake().unwrap();
        });
        let mut events = Events::with_capacity(4);
        let n = poller
            .wait(&mut events, Some(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(n, 1);
        assert_eq!(events.iter().next().unwrap().token, 42);
        t.join().unwrap();
        waker.drain();
        assert!(!waker.is_pending());
        assert_eq!(poller.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
    }

    #[test]
    fn wakes_coalesce_until_drained() {
        let poller = Poller::new().unwrap();
        let waker = Waker::new().unwrap();
        poller.add(waker.fd(), Interest::READABLE, 1).unwrap();
        for _ in 0..1000 {
            waker.wake().unwrap();
        }
        assert!(waker.is_pending());
        waker.drain();
        let mut events = Events::with_capacity(4);
        assert_eq!(poller.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
        waker.wake().unwrap();
        assert_eq!(poller.wait(&mut events, Some(Duration::ZERO)).unwrap(), 1);
    }

    #[test]
    fn many_threads_never_lose_a_wake() {
        let waker = Arc::new(Waker::new().unwrap());
        let poller = Poller::new().unwrap();
        poller.add(waker.fd(), Interest::READABLE, 1).unwrap();
        let counter = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let threads: Vec<_> = (0..4)
            .map(|_| {
                let w = Arc::clone(&waker);
                let c = Arc::clone(&counter);
                std::thread::spawn(move || {
                    for _ in 0..1000 {
                        c.fetch_add(1, Ordering::SeqCst);
                        w.wake().unwrap();
                    }
                })
            })
            .collect();
        let mut events = Events::with_capacity(4);
        loop {
            waker.drain();
            if counter.load(Ordering::SeqCst) == 4000 {
                break;
            }
            // Work is still coming, so a wake-up must arrive: a timeout here means one
            // was lost to coalescing.
            let n = poller
                .wait(&mut events, Some(Duration::from_secs(5)))
                .unwrap();
            assert_eq!(n, 1, "lost wake-up");
        }
        for t in threads {
            t.join().unwrap();
        }
    }
}
