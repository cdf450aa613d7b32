//! Echo load generator for `benchmarks/net.py`.
//!
//! Opens N connections (TCP or Unix) to an echo server and, on each one, keeps exactly
//! one message in flight: send a message of `--size` bytes, wait until all of its echo
//! has come back, compare it byte for byte with what was sent, repeat until `--duration`
//! has passed.  Consecutive messages differ (each is a different window of a random
//! pattern, shifted by the connection number and the message number), so a server that
//! loses, duplicates, reorders or corrupts bytes, or mixes connections up, is caught.
//! At the end every connection half-closes; the server must then send no extra byte, and
//! should close the connection within `--close-wait` (counted in `not_closed` if not).
//!
//! Prints one JSON object on stdout: `{"ok": true, "messages": .., "bytes": ..,
//! "duration_s": .., "latency_us": {"p50": .., "p99": ..}, ...}`, or `{"ok": false,
//! "error": ".."}` with exit status 2 when anything was wrong.
//!
//! Plain std threads and non-blocking sockets with `poll(2)` (so a large message never
//! deadlocks against a server that stops reading while its own echo is unread).

use std::io::{self, ErrorKind, Read, Write};
use std::net::{Shutdown, TcpStream};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixStream;
use std::process::exit;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Barrier};
use std::thread;
use std::time::{Duration, Instant};

const USAGE: &str =
    "usage: echo-client (--tcp HOST:PORT | --unix PATH) [--conns N] [--size BYTES] \
[--duration SECONDS] [--timeout SECONDS] [--close-wait SECONDS] [--no-close-check]";

/// Extra pattern bytes beyond one message: the number of distinct message windows.
const WINDOWS: usize = 4093;

enum Target {
    Tcp(String),
    Unix(String),
}

struct Args {
    target: Target,
    conns: usize,
    size: usize,
    duration: Duration,
    timeout: Duration,
    close_wait: Duration,
    close_check: bool,
}

enum Sock {
    Tcp(TcpStream),
    Unix(UnixStream),
}

impl Sock {
    fn connect(target: &Target) -> io::Result<Sock> {
        Ok(match target {
            Target::Tcp(addr) => {
                let s = TcpStream::connect(addr.as_str())?;
                s.set_nodelay(true)?;
                Sock::Tcp(s)
            }
            Target::Unix(path) => Sock::Unix(UnixStream::connect(path)?),
        })
    }
    fn fd(&self) -> RawFd {
        match self {
            Sock::Tcp(s) => s.as_raw_fd(),
            Sock::Unix(s) => s.as_raw_fd(),
        }
    }
    fn set_nonblocking(&self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.set_nonblocking(true),
            Sock::Unix(s) => s.set_nonblocking(true),
        }
    }
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.read(buf),
            Sock::Unix(s) => s.read(buf),
        }
    }
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            Sock::Tcp(s) => s.write(buf),
            Sock::Unix(s) => s.write(buf),
        }
    }
    fn shutdown_write(&self) -> io::Result<()> {
        match self {
            Sock::Tcp(s) => s.shutdown(Shutdown::Write),
            Sock::Unix(s) => s.shutdown(Shutdown::Write),
        }
    }
}

fn fail(msg: &str) -> ! {
    println!("{{\"ok\": false, \"error\": {}}}", json_str(msg));
    exit(2);
}

fn json_str(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('"');
    for c in s.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if (c as u32) < 0x20 => out.push_str(&format!("\\u{:04x}", c as u32)),
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

fn parse_size(s: &str) -> Option<usize> {
    let s = s.trim().to_ascii_lowercase();
    let (num, mul) = if let Some(n) = s.strip_suffix("ki").or_else(|| s.strip_suffix('k')) {
        (n, 1024)
    } else if let Some(n) = s.strip_suffix("mi").or_else(|| s.strip_suffix('m')) {
        (n, 1024 * 1024)
    } else {
        (s.as_str(), 1)
    };
    num.parse::<usize>().ok().map(|n| n * mul)
}

fn parse_secs(s: &str) -> Option<Duration> {
    let v: f64 = s.parse().ok()?;
    if v.is_finite() && v > 0.0 {
        Some(Duration::from_secs_f64(v))
    } else {
        None
    }
}

fn parse_args() -> Args {
    let mut target = None;
    let mut conns = 1;
    let mut size = 1024;
    let mut duration = Duration::from_secs(5);
    let mut timeout = Duration::from_secs(10);
    let mut close_wait = Duration::from_secs(1);
    let mut close_check = true;
    let mut it = std::env::args().skip(1);
    while let Some(a) = it.next() {
        let mut val = |name: &str| {
            it.next()
                .unwrap_or_else(|| fail(&format!("{name} needs a value; {USAGE}")))
        };
        match a.as_str() {
            "--tcp" => target = Some(Target::Tcp(val("--tcp"))),
            "--unix" => target = Some(Target::Unix(val("--unix"))),
            "--conns" | "-c" => {
                conns = val("--conns")
                    .parse()
                    .ok()
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| fail("bad --conns"))
            }
            "--size" | "-s" => {
                size = parse_size(&val("--size"))
                    .filter(|&n| n > 0)
                    .unwrap_or_else(|| fail("bad --size"))
            }
            "--duration" | "-d" => {
                duration = parse_secs(&val("--duration")).unwrap_or_else(|| fail("bad --duration"))
            }
            "--timeout" => {
                timeout = parse_secs(&val("--timeout")).unwrap_or_else(|| fail("bad --timeout"))
            }
            "--close-wait" => {
                close_wait =
                    parse_secs(&val("--close-wait")).unwrap_or_else(|| fail("bad --close-wait"))
            }
            "--no-close-check" => close_check = false,
            "-h" | "--help" => {
                eprintln!("{USAGE}");
                exit(0);
            }
            other => fail(&format!("unknown argument {other:?}; {USAGE}")),
        }
    }
    let target = target.unwrap_or_else(|| fail(USAGE));
    Args {
        target,
        conns,
        size,
        duration,
        timeout,
        close_wait,
        close_check,
    }
}

/// Deterministic pseudo-random bytes (xorshift64*), never all equal.
fn pattern(len: usize) -> Vec<u8> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    let mut v = Vec::with_capacity(len + 8);
    while v.len() < len {
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        v.extend_from_slice(&x.wrapping_mul(0x2545_F491_4F6C_DD1D).to_le_bytes());
    }
    v.truncate(len);
    v
}

/// Wait until `fd` is readable (and writable too if `want_write`); error on timeout.
fn wait(fd: RawFd, want_write: bool, timeout: Duration) -> Result<(bool, bool), String> {
    let mut pfd = libc::pollfd {
        fd,
        events: libc::POLLIN | if want_write { libc::POLLOUT } else { 0 },
        revents: 0,
    };
    let ms = timeout.as_millis().min(i32::MAX as u128) as i32;
    loop {
        // SAFETY: `pfd` is a valid pollfd for the duration of the call and nfds is 1.
        let r = unsafe { libc::poll(&mut pfd, 1, ms) };
        if r < 0 {
            let e = io::Error::last_os_error();
            if e.kind() == ErrorKind::Interrupted {
                continue;
            }
            return Err(format!("poll failed: {e}"));
        }
        if r == 0 {
            return Err(format!("no progress for {:.1} s", timeout.as_secs_f64()));
        }
        let readable = pfd.revents & (libc::POLLIN | libc::POLLHUP | libc::POLLERR) != 0;
        let writable = pfd.revents & (libc::POLLOUT | libc::POLLERR) != 0;
        return Ok((readable, writable));
    }
}

/// Send `msg`, read back exactly `msg.len()` bytes into `rbuf` and check them.
fn round_trip(
    sock: &mut Sock,
    msg: &[u8],
    rbuf: &mut [u8],
    timeout: Duration,
) -> Result<(), String> {
    let n = msg.len();
    let (mut sent, mut got) = (0usize, 0usize);
    let fd = sock.fd();
    while got < n {
        if sent < n {
            match sock.write(&msg[sent..]) {
                Ok(k) => sent += k,
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("send failed after {sent} of {n} bytes: {e}")),
            }
        }
        let (readable, _) = wait(fd, sent < n, timeout)
            .map_err(|e| format!("{e} (sent {sent} of {n} bytes, echo {got} of {n})"))?;
        if readable {
            match sock.read(&mut rbuf[got..n]) {
                Ok(0) => {
                    return Err(format!(
                        "server closed the connection after {got} of {n} echo bytes"
                    ))
                }
                Ok(k) => got += k,
                Err(e)
                    if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
                Err(e) => return Err(format!("receive failed after {got} of {n} echo bytes: {e}")),
            }
        }
    }
    if rbuf[..n] != *msg {
        let i = (0..n).find(|&i| rbuf[i] != msg[i]).unwrap_or(0);
        let hi = (i + 8).min(n);
        return Err(format!(
            "echo differs from what was sent at byte {i} of {n}: expected {:02x?}, got {:02x?}",
            &msg[i..hi],
            &rbuf[i..hi]
        ));
    }
    Ok(())
}

/// Half-close, then expect no byte after the last echo, and (within `wait_for`) the server's
/// EOF.  Extra bytes or a reset are errors; `Ok(false)` means the server did not close
/// the connection in time (reported, not fatal: it is a leak, not a wrong echo).
fn close_check(sock: &mut Sock, rbuf: &mut [u8], wait_for: Duration) -> Result<bool, String> {
    sock.shutdown_write()
        .map_err(|e| format!("shutdown(SHUT_WR) failed: {e}"))?;
    let mut extra = 0usize;
    let deadline = Instant::now() + wait_for;
    let mut closed = false;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        if left.is_zero() || wait(sock.fd(), false, left).is_err() {
            break;
        }
        match sock.read(rbuf) {
            Ok(0) => {
                closed = true;
                break;
            }
            Ok(k) => extra += k,
            Err(e) if e.kind() == ErrorKind::WouldBlock || e.kind() == ErrorKind::Interrupted => {}
            Err(e) => return Err(format!("after the client's EOF, reading failed: {e}")),
        }
    }
    if extra > 0 {
        return Err(format!(
            "server sent {extra} unexpected bytes after the last echo"
        ));
    }
    Ok(closed)
}

struct ConnResult {
    messages: u64,
    latencies_ns: Vec<u64>,
    started: Instant,
    finished: Instant,
    closed: Option<bool>,
}

fn run_conn(
    id: usize,
    args: &Args,
    pat: &[u8],
    barrier: &Barrier,
    stop: &AtomicBool,
) -> Result<ConnResult, String> {
    let conn = Sock::connect(&args.target).and_then(|s| s.set_nonblocking().map(|_| s));
    barrier.wait(); // every thread reaches the barrier, connected or not
    let mut sock = conn.map_err(|e| format!("connect failed: {e}"))?;
    let size = args.size;
    let mut rbuf = vec![0u8; size.max(65536)];
    let mut latencies_ns = Vec::with_capacity(1 << 16);
    let started = Instant::now();
    let deadline = started + args.duration;
    let mut finished = started;
    let mut seq: usize = 0;
    while !stop.load(Ordering::Relaxed) {
        let off = (seq.wrapping_mul(7919) + id.wrapping_mul(104_729)) % WINDOWS;
        let msg = &pat[off..off + size];
        let t0 = Instant::now();
        round_trip(&mut sock, msg, &mut rbuf, args.timeout)
            .map_err(|e| format!("message {seq}: {e}"))?;
        finished = Instant::now();
        latencies_ns.push((finished - t0).as_nanos() as u64);
        seq += 1;
        if finished >= deadline {
            break;
        }
    }
    let closed = if args.close_check {
        Some(close_check(&mut sock, &mut rbuf, args.close_wait)?)
    } else {
        None
    };
    Ok(ConnResult {
        messages: seq as u64,
        latencies_ns,
        started,
        finished,
        closed,
    })
}

fn percentile(sorted: &[u64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)] as f64 / 1000.0
}

fn main() {
    let args = Arc::new(parse_args());
    let pat = Arc::new(pattern(args.size + WINDOWS));
    let barrier = Arc::new(Barrier::new(args.conns));
    let stop = Arc::new(AtomicBool::new(false));
    let handles: Vec<_> = (0..args.conns)
        .map(|id| {
            let (args, pat, barrier, stop) =
                (args.clone(), pat.clone(), barrier.clone(), stop.clone());
            thread::Builder::new()
                .name(format!("conn-{id}"))
                .spawn(move || {
                    let r = run_conn(id, &args, &pat, &barrier, &stop);
                    if r.is_err() {
                        stop.store(true, Ordering::Relaxed); // the others stop early
                    }
                    r
                })
                .unwrap_or_else(|e| fail(&format!("cannot start a thread: {e}")))
        })
        .collect();
    let mut results = Vec::with_capacity(args.conns);
    let mut errors = Vec::new();
    for (id, h) in handles.into_iter().enumerate() {
        match h.join() {
            Ok(Ok(r)) => results.push(r),
            Ok(Err(e)) => errors.push(format!("connection {id}: {e}")),
            Err(_) => errors.push(format!("connection {id}: thread panicked")),
        }
    }
    if !errors.is_empty() {
        fail(&errors.join("; "));
    }
    let start = results
        .iter()
        .map(|r| r.started)
        .min()
        .expect("at least one connection");
    let end = results
        .iter()
        .map(|r| r.finished)
        .max()
        .expect("at least one connection");
    let secs = (end - start).as_secs_f64();
    let messages: u64 = results.iter().map(|r| r.messages).sum();
    let not_closed = results.iter().filter(|r| r.closed == Some(false)).count();
    let per_conn: Vec<String> = results.iter().map(|r| r.messages.to_string()).collect();
    let mut lat: Vec<u64> = results.into_iter().flat_map(|r| r.latencies_ns).collect();
    lat.sort_unstable();
    if messages == 0 {
        fail("no message completed");
    }
    println!(
        "{{\"ok\": true, \"target\": {}, \"conns\": {}, \"size\": {}, \"messages\": {}, \"bytes\": {}, \
\"duration_s\": {:.6}, \"messages_per_s\": {:.1}, \"per_conn_messages\": [{}], \
\"latency_us\": {{\"p50\": {:.1}, \"p90\": {:.1}, \"p99\": {:.1}, \"p999\": {:.1}, \"max\": {:.1}}}, \
\"close_checked\": {}, \"not_closed\": {}, \"close_wait_s\": {}}}",
        json_str(&match &args.target {
            Target::Tcp(a) => format!("tcp:{a}"),
            Target::Unix(p) => format!("unix:{p}"),
        }),
        args.conns,
        args.size,
        messages,
        messages * args.size as u64,
        secs,
        messages as f64 / secs,
        per_conn.join(", "),
        percentile(&lat, 50.0),
        percentile(&lat, 90.0),
        percentile(&lat, 99.0),
        percentile(&lat, 99.9),
        lat.last().copied().unwrap_or(0) as f64 / 1000.0,
        args.close_check,
        not_closed,
        args.close_wait.as_secs_f64()
    );
}
