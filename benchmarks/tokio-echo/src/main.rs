//! The ceiling of `benchmarks/net.py`'s echo cells: the least a server can do per
//! message, written with tokio on one thread (a current-thread runtime, as an asyncio
//! loop is one thread). Each connection reads into a 256 KiB buffer and writes back what
//! it read; at EOF it closes. No protocol objects, no Python: what is left is the
//! kernel's work and tokio's.
//!
//! Speaks `_net_servers.py`'s worker protocol, so `net.py` runs it like a loop's server:
//! `tokio-echo tcp` or `tokio-echo unix PATH`; prints `@@READY@@{"address": .., "pid": ..}`
//! once listening, serves until its stdin closes, then prints
//! `@@RESULT@@{"ok": true, "bytes": .., "conns": .., ...}` (bytes received, connections
//! accepted) and exits.

use std::io::Read;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpSocket, UnixListener};
use tokio::sync::Notify;

const BUF_SIZE: usize = 256 * 1024;
const BACKLOG: u32 = 1024;

#[derive(Default)]
struct Counters {
    bytes: AtomicU64,
    conns: AtomicU64,
    lost_with_error: AtomicU64,
}

async fn echo<S: AsyncRead + AsyncWrite + Unpin>(mut stream: S, counters: Arc<Counters>) {
    counters.conns.fetch_add(1, Ordering::Relaxed);
    let mut buf = vec![0u8; BUF_SIZE];
    loop {
        match stream.read(&mut buf).await {
            Ok(0) => return, // EOF: dropping the stream closes it
            Ok(n) => {
                counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
                if stream.write_all(&buf[..n]).await.is_err() {
                    counters.lost_with_error.fetch_add(1, Ordering::Relaxed);
                    return;
                }
            }
            Err(_) => {
                counters.lost_with_error.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
}

fn fail(message: String) -> ! {
    println!("@@RESULT@@{{\"ok\": false, \"error\": {message:?}}}");
    std::process::exit(1);
}

async fn serve(family: &str, path: Option<String>, counters: Arc<Counters>, stop: Arc<Notify>) {
    let accepting = async {
        match family {
            "tcp" => {
                let socket = TcpSocket::new_v4().unwrap_or_else(|e| fail(format!("socket: {e}")));
                socket.set_reuseaddr(true).unwrap_or_else(|e| fail(format!("SO_REUSEADDR: {e}")));
                socket
                    .bind("127.0.0.1:0".parse().expect("a literal address"))
                    .unwrap_or_else(|e| fail(format!("bind: {e}")));
                let listener = socket.listen(BACKLOG).unwrap_or_else(|e| fail(format!("listen: {e}")));
                let address = listener.local_addr().unwrap_or_else(|e| fail(format!("getsockname: {e}")));
                println!("@@READY@@{{\"address\": \"{address}\", \"pid\": {}}}", std::process::id());
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            let _ = stream.set_nodelay(true);
                            tokio::spawn(echo(stream, counters.clone()));
                        }
                        Err(e) => fail(format!("accept: {e}")),
                    }
                }
            }
            _ => {
                let path = path.unwrap_or_else(|| fail("unix needs a socket path".into()));
                let _ = std::fs::remove_file(&path);
                let listener = UnixListener::bind(&path).unwrap_or_else(|e| fail(format!("bind: {e}")));
                println!("@@READY@@{{\"address\": {path:?}, \"pid\": {}}}", std::process::id());
                loop {
                    match listener.accept().await {
                        Ok((stream, _)) => {
                            tokio::spawn(echo(stream, counters.clone()));
                        }
                        Err(e) => fail(format!("accept: {e}")),
                    }
                }
            }
        }
    };
    tokio::select! {
        _ = accepting => {}
        _ = stop.notified() => {}
    }
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    let family = args.first().map(String::as_str).unwrap_or("");
    if family != "tcp" && family != "unix" {
        fail(format!("usage: tokio-echo (tcp | unix PATH), got {args:?}"));
    }
    let counters = Arc::new(Counters::default());
    let stop = Arc::new(Notify::new());
    // The parent closing our stdin is the signal to stop (as for _net_servers.py).
    let stopper = stop.clone();
    std::thread::spawn(move || {
        let _ = std::io::stdin().read_to_end(&mut Vec::new());
        stopper.notify_one();
    });
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .unwrap_or_else(|e| fail(format!("runtime: {e}")));
    runtime.block_on(serve(family, args.get(1).cloned(), counters.clone(), stop));
    drop(runtime);
    println!(
        "@@RESULT@@{{\"ok\": true, \"bytes\": {}, \"conns\": {}, \"requests\": 0, \"bad_requests\": 0, \
\"lost_with_error\": {}, \"contract\": [], \"handler_errors\": [], \"version\": \"tokio 1 (current_thread)\"}}",
        counters.bytes.load(Ordering::Relaxed),
        counters.conns.load(Ordering::Relaxed),
        if counters.lost_with_error.load(Ordering::Relaxed) > 0 { "[\"a connection ended with an I/O error\"]" } else { "[]" },
    );
}
