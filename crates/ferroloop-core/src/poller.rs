//! A level-triggered `epoll` instance.
//!
//! Level triggering is deliberate: asyncio's `add_reader` contract is the selector's — a
//! reader that leaves data unread is called again on the next iteration. Edge-triggered
//! readiness (mio's model) would silently stall such callbacks.
//!
//! Each registration carries a `u64` token chosen by the caller; [`Poller::wait`] reports
//! tokens, never fds, so owners can map readiness back without a lookup by fd when they
//! want to. Errors and hang-ups are reported as both readable and writable, the way
//! Python's `selectors.EpollSelector` does, so whoever waits on the fd gets to see them.

use std::io;
use std::os::fd::{FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

use crate::sys::ClosableFd;

/// Which readiness a registration asks for.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Interest {
    /// Wake when the fd is readable.
    pub readable: bool,
    /// Wake when the fd is writable.
    pub writable: bool,
}

impl Interest {
    /// Readability only.
    pub const READABLE: Interest = Interest {
        readable: true,
        writable: false,
    };
    /// Writability only.
    pub const WRITABLE: Interest = Interest {
        readable: false,
        writable: true,
    };

    /// No readiness at all: the fd should not be registered.
    pub fn is_empty(self) -> bool {
        !self.readable && !self.writable
    }

    fn epoll_bits(self) -> u32 {
        let mut bits = 0;
        if self.readable {
            bits |= libc::EPOLLIN as u32;
        }
        if self.writable {
            bits |= libc::EPOLLOUT as u32;
        }
        bits
    }
}

/// One readiness report.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Event {
    /// The token given at registration.
    pub token: u64,
    /// Readable, or in error / hung up.
    pub readable: bool,
    /// Writable, or in error / hung up.
    pub writable: bool,
}

/// A reusable buffer that [`Poller::wait`] fills.
pub struct Events {
    buf: Vec<libc::epoll_event>,
    len: usize,
}

impl std::fmt::Debug for Events {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Events").field("len", &self.len).finish()
    }
}

impl Events {
    /// A buffer for up to `capacity` events per wait.
    pub fn with_capacity(capacity: usize) -> Self {
        let capacity = capacity.max(1);
        Events {
            buf: vec![libc::epoll_event { events: 0, u64: 0 }; capacity],
            len: 0,
        }
    }

    /// The events of the last wait.
    pub fn iter(&self) -> impl Iterator<Item = Event> + '_ {
        self.buf[..self.len].iter().map(|ev| {
            let bits = ev.events;
            let trouble = bits & (libc::EPOLLERR | libc::EPOLLHUP) as u32 != 0;
            Event {
                token: ev.u64,
                readable: trouble || bits & (libc::EPOLLIN | libc::EPOLLRDHUP) as u32 != 0,
                writable: trouble || bits & libc::EPOLLOUT as u32 != 0,
            }
        })
    }

    /// Number of events of the last wait.
    pub fn len(&self) -> usize {
        self.len
    }

    /// Whether the last wait reported nothing.
    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
}

/// An `epoll` instance. All methods take `&self`: the kernel serialises changes, so one
/// thread may wait while another registers. [`Poller::close`] releases the fd early (the
/// loop's `close()`); a `wait` in progress keeps the fd open until it returns, and every
/// later call fails with `EBADF`.
#[derive(Debug)]
pub struct Poller {
    epfd: ClosableFd,
}

impl Poller {
    /// A new close-on-exec epoll instance.
    pub fn new() -> io::Result<Self> {
        Ok(Poller {
            epfd: ClosableFd::new(Self::create_epoll()?),
        })
    }

    fn create_epoll() -> io::Result<OwnedFd> {
        let fd = syscall!(epoll_create1(libc::EPOLL_CLOEXEC))?;
        // SAFETY: epoll_create1 returned a fresh fd that nothing else owns.
        Ok(unsafe { OwnedFd::from_raw_fd(fd) })
    }

    /// Replaces the epoll instance with a new, empty one (its registrations are gone).
    ///
    /// For a child after `fork()`: the inherited fd refers to the *parent's* epoll
    /// instance, so every registration change would alter what the parent waits for.
    /// Never blocks, even if a thread of the parent was waiting at the fork.
    ///
    /// # Safety
    /// Only in a child process right after `fork()`, before any other thread uses this
    /// poller (the threads that used it in the parent do not exist in the child).
    pub unsafe fn reset_in_forked_child(&self) -> io::Result<()> {
        let fresh = Self::create_epoll()?;
        // SAFETY: the caller guarantees no other thread uses the fd.
        unsafe { self.epfd.replace_in_forked_child(fresh) };
        Ok(())
    }

    fn ctl(&self, op: libc::c_int, fd: RawFd, interest: Interest, token: u64) -> io::Result<()> {
        let mut ev = libc::epoll_event {
            events: interest.epoll_bits(),
            u64: token,
        };
        // The pointer is to a live local; EPOLL_CTL_DEL ignores it on modern kernels.
        self.epfd
            .with(|epfd| syscall!(epoll_ctl(epfd, op, fd, &mut ev)))?;
        Ok(())
    }

    /// Starts watching `fd`. If the kernel still has a stale registration for this fd
    /// number (the old fd was closed while a dup kept the description alive), it is
    /// replaced.
    pub fn add(&self, fd: RawFd, interest: Interest, token: u64) -> io::Result<()> {
        match self.ctl(libc::EPOLL_CTL_ADD, fd, interest, token) {
            Err(e) if e.raw_os_error() == Some(libc::EEXIST) => {
                self.ctl(libc::EPOLL_CTL_MOD, fd, interest, token)
            }
            other => other,
        }
    }

    /// Changes what `fd` is watched for. If the kernel forgot the fd (it was closed and
    /// its number reused), registers it again.
    pub fn modify(&self, fd: RawFd, interest: Interest, token: u64) -> io::Result<()> {
        match self.ctl(libc::EPOLL_CTL_MOD, fd, interest, token) {
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => {
                self.ctl(libc::EPOLL_CTL_ADD, fd, interest, token)
            }
            other => other,
        }
    }

    /// Stops watching `fd`. An fd the kernel already dropped (closed) is not an error.
    pub fn delete(&self, fd: RawFd) -> io::Result<()> {
        match self.ctl(libc::EPOLL_CTL_DEL, fd, Interest::default(), 0) {
            Err(e) if matches!(e.raw_os_error(), Some(libc::ENOENT) | Some(libc::EBADF)) => Ok(()),
            other => other,
        }
    }

    /// Closes the epoll fd now instead of at drop.
    pub fn close(&self) {
        self.epfd.close();
    }

    /// Whether [`Poller::close`] was called.
    pub fn is_closed(&self) -> bool {
        self.epfd.is_closed()
    }

    /// Waits for readiness: `None` blocks until something happens, `Some(ZERO)` only looks.
    /// A signal interrupting the wait returns `Err` with `ErrorKind::Interrupted`, so the
    /// caller can run signal handlers (Python's `PyErr_CheckSignals`) before waiting again.
    pub fn wait(&self, events: &mut Events, timeout: Option<Duration>) -> io::Result<usize> {
        let timeout_ms: libc::c_int = match timeout {
            None => -1,
            Some(d) => {
                // Round up so a timer due in 0.3 ms does not cause a busy loop of
                // zero-timeout waits.
                let ms = d.as_nanos().div_ceil(1_000_000);
                ms.min(libc::c_int::MAX as u128) as libc::c_int
            }
        };
        events.len = 0;
        // The buffer pointer and length describe `events.buf`, which outlives the call.
        let buf = &mut events.buf;
        let n = self.epfd.with(|epfd| {
            syscall!(epoll_wait(
                epfd,
                buf.as_mut_ptr(),
                buf.len() as libc::c_int,
                timeout_ms
            ))
        })?;
        events.len = n as usize;
        Ok(events.len)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Write;
    use std::os::fd::AsRawFd;
    use std::os::unix::net::UnixStream;

    #[test]
    fn reports_readable_until_drained() {
        let poller = Poller::new().unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        poller.add(b.as_raw_fd(), Interest::READABLE, 7).unwrap();
        let mut events = Events::with_capacity(8);
        assert_eq!(poller.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
        a.write_all(b"x").unwrap();
        for _ in 0..2 {
            // Level-triggered: still reported while unread.
            assert_eq!(
                poller
                    .wait(&mut events, Some(Duration::from_secs(1)))
                    .unwrap(),
                1
            );
            let ev = events.iter().next().unwrap();
            assert_eq!(
                ev,
                Event {
                    token: 7,
                    readable: true,
                    writable: false
                }
            );
        }
    }

    #[test]
    fn modify_and_delete() {
        let poller = Poller::new().unwrap();
        let (_a, b) = UnixStream::pair().unwrap();
        let fd = b.as_raw_fd();
        poller.add(fd, Interest::READABLE, 1).unwrap();
        poller.modify(fd, Interest::WRITABLE, 2).unwrap();
        let mut events = Events::with_capacity(8);
        poller.wait(&mut events, Some(Duration::ZERO)).unwrap();
        assert_eq!(
            events.iter().collect::<Vec<_>>(),
            vec![Event {
                token: 2,
                readable: false,
                writable: true
            }]
        );
        poller.delete(fd).unwrap();
        poller.delete(fd).unwrap();
        assert_eq!(poller.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
    }

    #[test]
    fn hangup_wakes_readers_and_writers() {
        let poller = Poller::new().unwrap();
        let (a, b) = UnixStream::pair().unwrap();
        poller.add(b.as_raw_fd(), Interest::READABLE, 3).unwrap();
        drop(a);
        let mut events = Events::with_capacity(8);
        poller
            .wait(&mut events, Some(Duration::from_secs(1)))
            .unwrap();
        let ev = events.iter().next().unwrap();
        assert!(ev.readable);
    }

    #[test]
    fn regular_files_are_refused_with_eperm() {
        let poller = Poller::new().unwrap();
        let file = std::fs::File::open("/proc/self/stat").unwrap();
        let err = poller.add(file.as_raw_fd(), Interest::READABLE, 0);
        assert_eq!(err.unwrap_err().raw_os_error(), Some(libc::EPERM));
    }

    #[test]
    fn closed_poller_refuses_everything_with_ebadf() {
        let poller = Poller::new().unwrap();
        let (_a, b) = UnixStream::pair().unwrap();
        poller.close();
        poller.close();
        assert!(poller.is_closed());
        let err = poller
            .add(b.as_raw_fd(), Interest::READABLE, 1)
            .unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
        let mut events = Events::with_capacity(1);
        let err = poller.wait(&mut events, Some(Duration::ZERO)).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn reset_starts_an_empty_instance() {
        let poller = Poller::new().unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        poller.add(b.as_raw_fd(), Interest::READABLE, 1).unwrap();
        a.write_all(b"x").unwrap();
        // SAFETY: no other thread uses this poller.
        unsafe { poller.reset_in_forked_child() }.unwrap();
        let mut events = Events::with_capacity(4);
        assert_eq!(poller.wait(&mut events, Some(Duration::ZERO)).unwrap(), 0);
        poller.add(b.as_raw_fd(), Interest::READABLE, 2).unwrap();
        assert_eq!(poller.wait(&mut events, Some(Duration::ZERO)).unwrap(), 1);
    }

    #[test]
    fn close_during_a_wait_closes_the_fd_when_the_wait_returns() {
        let poller = std::sync::Arc::new(Poller::new().unwrap());
        let epfd = poller.epfd.with(Ok).unwrap();
        let (mut a, b) = UnixStream::pair().unwrap();
        poller.add(b.as_raw_fd(), Interest::READABLE, 1).unwrap();
        let waiter = {
            let poller = std::sync::Arc::clone(&poller);
            std::thread::spawn(move || {
                let mut events = Events::with_capacity(4);
                poller.wait(&mut events, Some(Duration::from_secs(10)))
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        poller.close();
        // The waiter still uses the fd: it must still be open.
        assert!(fd_is_open(epfd));
        a.write_all(b"x").unwrap();
        assert_eq!(waiter.join().unwrap().unwrap(), 1);
        assert!(!fd_is_open(epfd));
    }

    fn fd_is_open(fd: RawFd) -> bool {
        // SAFETY: F_GETFD on any fd number only reads its flags.
        unsafe { libc::fcntl(fd, libc::F_GETFD) != -1 }
    }

    #[test]
    fn a_forked_child_replaces_the_fd_while_a_parent_thread_waits() {
        let poller = std::sync::Arc::new(Poller::new().unwrap());
        let (_a, b) = UnixStream::pair().unwrap();
        let waiter = {
            let poller = std::sync::Arc::clone(&poller);
            std::thread::spawn(move || {
                let mut events = Events::with_capacity(4);
                poller.wait(&mut events, Some(Duration::from_millis(500)))
            })
        };
        std::thread::sleep(Duration::from_millis(50));
        // SAFETY: the child only makes system calls and leaves with _exit.
        let pid = unsafe { libc::fork() };
        assert!(pid >= 0);
        if pid == 0 {
            // SAFETY: in the child only this thread exists.
            let ok = unsafe { poller.reset_in_forked_child() }.is_ok()
                && poller.add(b.as_raw_fd(), Interest::READABLE, 1).is_ok();
            // SAFETY: leaves the child without running the test harness's destructors.
            unsafe { libc::_exit(if ok { 0 } else { 1 }) };
        }
        let mut status = 0;
        // Bounded wait: a child stuck on a lock held by the (absent) waiter thread fails.
        let deadline = std::time::Instant::now() + Duration::from_secs(10);
        loop {
            // SAFETY: waits for our own child with a live status pointer.
            let r = unsafe { libc::waitpid(pid, &mut status, libc::WNOHANG) };
            if r == pid {
                break;
            }
            if std::time::Instant::now() > deadline {
                // SAFETY: kills our own child.
                unsafe { libc::kill(pid, libc::SIGKILL) };
                panic!("the forked child hung replacing the poller");
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        assert!(libc::WIFEXITED(status) && libc::WEXITSTATUS(status) == 0);
        waiter.join().unwrap().unwrap();
    }

    #[test]
    fn bad_fd_keeps_errno() {
        let poller = Poller::new().unwrap();
        let err = poller.add(987_654, Interest::READABLE, 0).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(libc::EBADF));
    }

    #[test]
    fn timeout_rounds_up_to_a_millisecond() {
        let poller = Poller::new().unwrap();
        let mut events = Events::with_capacity(1);
        let start = std::time::Instant::now();
        poller
            .wait(&mut events, Some(Duration::from_micros(300)))
            .unwrap();
        assert!(start.elapsed() >= Duration::from_micros(300));
    }
}
