//! `cargo test`s of the driver: what one turn runs and in which order, failing entries, fd
//! owners, wake-ups and stop requests, two threads iterating, discarding everything.

use super::*;
use std::cell::RefCell;
use std::io::Write;
use std::os::fd::AsRawFd;
use std::os::unix::net::UnixStream;
use std::sync::atomic::AtomicBool;

/// A timer payload: a name and a shared cancelled flag.
#[derive(Clone)]
struct TestTimer(&'static str, Arc<AtomicBool>);

impl Timer for TestTimer {
    fn is_cancelled(&self) -> bool {
        self.1.load(Ordering::Relaxed)
    }
    fn unscheduled(&self) {}
}

type TestDriver = Driver<&'static str, TestTimer, &'static str>;

/// Records what ran; owners named "cancelled" count as cancelled.
#[derive(Default)]
struct Recorder {
    ran: RefCell<Vec<&'static str>>,
    fail_on: Option<&'static str>,
}

impl Dispatch<&'static str, TestTimer, &'static str> for Recorder {
    type Error = &'static str;
    fn ready_entry(&self, owner: &&'static str, _side: Side) -> Option<&'static str> {
        (*owner != "cancelled").then_some(*owner)
    }
    fn timer_entry(&self, timer: TestTimer, lag: f64) -> &'static str {
        assert!(lag >= 0.0);
        timer.0
    }
    fn is_cancelled(&self, entry: &&'static str) -> bool {
        *entry == "skip"
    }
    fn blocking<F>(&self, wait: F) -> io::Result<usize>
    where
        F: FnOnce() -> io::Result<usize> + Send,
    {
        wait()
    }
    fn poll_failed(&self, err: io::Error) -> Result<(), &'static str> {
        panic!("poll failed: {err}")
    }
    fn run(&self, entry: &&'static str) -> Result<(), &'static str> {
        if Some(*entry) == self.fail_on {
            return Err("failed");
        }
        self.ran.borrow_mut().push(entry);
        Ok(())
    }
}

fn timer(name: &'static str) -> TestTimer {
    TestTimer(name, Arc::new(AtomicBool::new(false)))
}

#[test]
fn one_turn_runs_what_was_ready_then_due_timers_in_order() {
    let driver = TestDriver::new().unwrap();
    let rec = Recorder::default();
    driver.push_ready("a");
    driver.push_ready("skip");
    driver.push_timer(clock::monotonic() - 1.0, timer("t1"));
    driver.push_timer(clock::monotonic() + 3600.0, timer("later"));
    driver.push_ready("b");
    driver.turn(&rec).unwrap();
    assert_eq!(*rec.ran.borrow(), ["a", "b", "t1"]);
    assert_eq!(driver.timer_counts(), (1, 0));
}

#[test]
fn a_failing_entry_leaves_the_rest_queued_in_order() {
    let driver = TestDriver::new().unwrap();
    let rec = Recorder {
        fail_on: Some("b"),
        ..Recorder::default()
    };
    for name in ["a", "b", "c", "d"] {
        driver.push_ready(name);
    }
    assert!(matches!(
        driver.turn(&rec),
        Err(TurnError::Dispatch("failed"))
    ));
    assert_eq!(*rec.ran.borrow(), ["a"]);
    assert_eq!(
        *driver.ready_lock().iter().collect::<Vec<_>>(),
        [&"c", &"d"]
    );
}

#[test]
fn ready_fds_queue_their_owners_and_cancelled_owners_unregister() {
    let driver = TestDriver::new().unwrap();
    let rec = Recorder::default();
    let (mut a, b) = UnixStream::pair().unwrap();
    let (mut c, d) = UnixStream::pair().unwrap();
    driver.set_fd(b.as_raw_fd(), Side::Read, "reader").unwrap();
    driver
        .set_fd(d.as_raw_fd(), Side::Read, "cancelled")
        .unwrap();
    a.write_all(b"x").unwrap();
    c.write_all(b"x").unwrap();
    driver.turn(&rec).unwrap();
    assert_eq!(*rec.ran.borrow(), ["reader"]);
    assert_eq!(driver.fd_count(), 1);
    assert!(driver.with_fd(d.as_raw_fd(), Side::Read, |o| o.is_none()));
}

#[test]
fn a_wake_from_another_thread_ends_a_blocking_turn() {
    let driver = Arc::new(TestDriver::new().unwrap());
    let rec = Recorder::default();
    let waker = {
        let driver = Arc::clone(&driver);
        std::thread::spawn(move || {
            std::thread::sleep(Duration::from_millis(50));
            driver.push_ready("from thread");
            driver.wake().unwrap();
        })
    };
    // Nothing ready, no timers: without the wake this turn would wait forever.
    while rec.ran.borrow().is_empty() {
        driver.turn(&rec).unwrap();
    }
    waker.join().unwrap();
    assert_eq!(*rec.ran.borrow(), ["from thread"]);
}

#[test]
fn a_stop_request_makes_the_poll_return_at_once() {
    let driver = TestDriver::new().unwrap();
    let rec = Recorder::default();
    driver.push_timer(clock::monotonic() + 3600.0, timer("later"));
    driver.request_stop();
    driver.turn(&rec).unwrap();
    assert!(driver.take_stop());
    assert!(!driver.stop_requested());
}

#[test]
fn a_second_thread_iterating_at_once_is_refused() {
    let driver = Arc::new(TestDriver::new().unwrap());
    let guard = driver.events.lock();
    let rec = Recorder::default();
    driver.push_timer(clock::monotonic() + 3600.0, timer("later"));
    assert!(matches!(driver.turn(&rec), Err(TurnError::Busy)));
    drop(guard);
}

#[test]
fn discard_all_empties_everything() {
    let driver = TestDriver::new().unwrap();
    let (_a, b) = UnixStream::pair().unwrap();
    driver.push_ready("a");
    driver.push_timer(1.0, timer("t"));
    driver.set_fd(b.as_raw_fd(), Side::Write, "w").unwrap();
    let (ready, timers, owners) = driver.discard_all();
    assert_eq!((ready.len(), timers.len(), owners), (1, 1, vec!["w"]));
    assert_eq!(
        (
            driver.ready_len(),
            driver.timer_counts().0,
            driver.fd_count()
        ),
        (0, 0, 0)
    );
}
