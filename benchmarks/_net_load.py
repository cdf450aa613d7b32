"""Processes that ``net.py`` drives: the server worker, the native echo client, wrk.

Also reads a process's CPU time from ``/proc/<pid>/stat`` and builds the echo client
(``benchmarks/echo-client``, a Rust crate of its own) when it is missing or older than its
source.
"""

from __future__ import annotations

import json
import os
import selectors
import shutil
import subprocess
import sys
import tempfile
import time

from _loops import how_it_died, worker_result

HERE = os.path.dirname(os.path.abspath(__file__))
SERVERS_PY = os.path.join(HERE, "_net_servers.py")
WRK_SCRIPT = os.path.join(HERE, "wrk_check.lua")
CLIENT_BIN = os.path.join(HERE, "echo-client", "target", "release", "echo-client")
# The ceiling "loop": a native tokio echo server (tokio-echo/), run instead of a worker.
TOKIO = "tokio"
TOKIO_BIN = os.path.join(HERE, "tokio-echo", "target", "release", "tokio-echo")
READY_MARK = "@@READY@@"
WRK_MARK = "@@WRK@@"

CLK_TCK = os.sysconf("SC_CLK_TCK")


class LoadError(Exception):
    """The load generator found the server wrong (or could not run)."""


# --------------------------------------------------------------------------
# CPU time of a process
# --------------------------------------------------------------------------

def proc_cpu(pid: int):
    """CPU time of process ``pid`` and its threads, or None if it is gone:
    ``(user, system, total)`` in seconds.

    user and system come from ``/proc/<pid>/stat`` (utime, stime: clock ticks, 10 ms);
    total is the sum of ``/proc/<pid>/task/*/schedstat`` (nanoseconds of time on a CPU,
    live threads only) when the kernel has schedstat, else user + system.
    """
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: split after the last ')'.
    fields = raw[raw.rindex(b")") + 2:].split()
    # fields[0] is field 3 (state); utime and stime are fields 14 and 15.
    user, system = int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK
    total = 0
    try:
        for tid in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{tid}/schedstat", "rb") as f:
                    total += int(f.read().split()[0])
            except (OSError, IndexError, ValueError):
                pass  # a thread that just ended
    except OSError:
        return None
    return user, system, (total / 1e9 if total else user + system)


# --------------------------------------------------------------------------
# The echo client (Rust)
# --------------------------------------------------------------------------

def _newest_source_mtime(crate_dir: str) -> float:
    paths = [os.path.join(crate_dir, "Cargo.toml")]
    lock = os.path.join(crate_dir, "Cargo.lock")
    if os.path.exists(lock):
        paths.append(lock)
    for root, _dirs, files in os.walk(os.path.join(crate_dir, "src")):
        paths += [os.path.join(root, f) for f in files if f.endswith(".rs")]
    return max(os.path.getmtime(p) for p in paths)


def ensure_native(name: str, log) -> str:
    """Path of the native program ``name`` ("echo-client" or "tokio-echo", each a crate
    of its own in this directory); builds it first if missing or stale."""
    crate_dir = os.path.join(HERE, name)
    target = os.path.join(crate_dir, "target")
    binary = os.path.join(target, "release", name)
    if os.path.exists(binary) and os.path.getmtime(binary) >= _newest_source_mtime(crate_dir):
        return binary
    cargo = shutil.which("cargo") or os.path.expanduser("~/.cargo/bin/cargo")
    if not os.path.exists(cargo):
        raise SystemExit(f"error: cargo not found; it is needed to build benchmarks/{name}")
    cmd = [cargo, "build", "--release", "--quiet",
           "--manifest-path", os.path.join(crate_dir, "Cargo.toml"), "--target-dir", target]
    log("[build] " + " ".join(cmd))
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0 or not os.path.exists(binary):
        raise SystemExit(f"error: building {name} failed:\n{p.stdout}{p.stderr}")
    os.utime(binary)  # cargo may skip relinking when only mtimes changed
    return binary


def _pin(cpus):
    if not cpus:
        return None
    return lambda: os.sched_setaffinity(0, cpus)


def run_echo_client(address: str, family: str, conns: int, size: int, duration: float,
                    cpus=None, timeout: float = 10.0, close_wait: float = 1.0) -> dict:
    """Run the echo client once; return its JSON report or raise LoadError."""
    cmd = [CLIENT_BIN, "--tcp" if family == "tcp" else "--unix", address,
           "--conns", str(conns), "--size", str(size), "--duration", f"{duration:g}",
           "--timeout", f"{timeout:g}", "--close-wait", f"{close_wait:g}"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_pin(cpus),
                           timeout=duration + 3 * timeout + 30)
    except subprocess.TimeoutExpired:
        raise LoadError(f"echo client did not finish (hang?): {' '.join(cmd)}") from None
    lines = [ln for ln in p.stdout.splitlines() if ln.startswith("{")]
    if not lines:
        raise LoadError(f"echo client printed no report ({how_it_died(p.returncode)}): "
                        f"{p.stderr.strip()[-500:]}")
    rep = json.loads(lines[-1])
    if not rep.get("ok"):
        raise LoadError("echo client: " + rep.get("error", "failed"))
    if p.returncode != 0:
        raise LoadError(f"echo client reported success but exited with {p.returncode}")
    return rep


# --------------------------------------------------------------------------
# wrk
# --------------------------------------------------------------------------

def wrk_path():
    return shutil.which("wrk")


def run_wrk(address: str, conns: int, threads: int, duration: float, cpus=None,
            scheme: str = "http") -> dict:
    """Run wrk with wrk_check.lua once against ``scheme://address/``; return its summary
    or raise LoadError.

    Any socket error, timeout, non-2xx status or wrong body is an error.
    """
    wrk = wrk_path()
    if wrk is None:
        raise LoadError("wrk not found (apt-get install wrk)")
    secs = max(1, int(round(duration)))  # wrk takes whole seconds
    cmd = [wrk, f"-t{threads}", f"-c{conns}", f"-d{secs}s", "--timeout", "5s",
           "-s", WRK_SCRIPT, f"{scheme}://{address}/"]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, preexec_fn=_pin(cpus),
                           timeout=secs + 60)
    except subprocess.TimeoutExpired:
        raise LoadError("wrk did not finish (hang?)") from None
    line = next((ln for ln in reversed(p.stdout.splitlines()) if ln.startswith(WRK_MARK)), None)
    if p.returncode != 0 or line is None:
        raise LoadError(f"wrk failed ({how_it_died(p.returncode)}): "
                        f"{(p.stderr or p.stdout).strip()[-500:]}")
    rep = json.loads(line[len(WRK_MARK):])
    errs = {k: rep[k] for k in ("connect_errors", "read_errors", "write_errors",
                                "status_errors", "timeouts", "bad_responses") if rep[k]}
    if errs:
        detail = ", ".join(f"{k}={v}" for k, v in errs.items())
        if rep.get("first_bad"):
            detail += f"; first bad response: {rep['first_bad']}"
        raise LoadError(f"wrk saw errors: {detail}")
    if rep["requests"] <= 0:
        raise LoadError("wrk completed no request")
    rep["duration_s"] = rep.pop("duration_us") / 1e6
    rep["requests_per_s"] = rep["requests"] / rep["duration_s"]
    return rep


# --------------------------------------------------------------------------
# The server worker
# --------------------------------------------------------------------------

class ServerProc:
    """One server worker process (``_net_servers.py``, or the tokio echo server for the
    ``TOKIO`` loop) and its life cycle."""

    def __init__(self, loop: str, kind: str, family: str, cpus=None):
        self.tmpdir = tempfile.mkdtemp(prefix="ferroloop-net-")
        self.stderr = open(os.path.join(self.tmpdir, "stderr.txt"), "w+")
        if loop == TOKIO:
            args = [TOKIO_BIN, family]
        else:
            args = [sys.executable, SERVERS_PY, loop, kind, family]
        if family == "unix":
            args.append(os.path.join(self.tmpdir, "echo.sock"))
        self.proc = subprocess.Popen(args, cwd=HERE, stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr,
                                     preexec_fn=_pin(cpus))
        self.pid = self.proc.pid
        self._out = b""

    def wait_ready(self, timeout: float = 30.0) -> dict:
        """The READY report ({"address": ...}), or the worker's result if it ended."""
        deadline = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        with selectors.DefaultSelector() as sel:
            sel.register(fd, selectors.EVENT_READ)
            while True:
                idx = self._out.find(READY_MARK.encode())
                nl = self._out.find(b"\n", idx) if idx >= 0 else -1
                if nl >= 0:
                    line = self._out[idx + len(READY_MARK):nl]
                    self._out = self._out[:idx] + self._out[nl + 1:]
                    return {"ready": True, **json.loads(line)}
                left = deadline - time.monotonic()
                if left <= 0:
                    self.kill()
                    return {"ok": False, "error": f"server not ready within {timeout:.0f} s",
                            "traceback": self.stderr_tail() or None}
                if not sel.select(left):
                    continue
                chunk = os.read(fd, 65536)
                if not chunk:  # the worker ended before it was ready
                    return self._final(self.proc.wait())
                self._out += chunk

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stop(self, timeout: float = 15.0) -> dict:
        """Close its stdin (the signal to stop) and return its final report."""
        try:
            out, _ = self.proc.communicate(input=b"", timeout=timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            return {"ok": False, "error": f"server did not stop within {timeout:.0f} s "
                    "of its stdin closing (hang?)", "traceback": self.stderr_tail()}
        self._out += out or b""
        return self._final(self.proc.returncode)

    def _final(self, returncode: int) -> dict:
        res = worker_result(self._out.decode(errors="replace"))
        if res is not None:
            return res
        err = self.stderr_tail()
        key = next((ln.strip() for ln in err.splitlines()
                    if "Fatal Python error" in ln or "panicked" in ln), None)
        return {"ok": False, "error": f"server died ({how_it_died(returncode)})"
                + (f": {key}" if key else ""), "traceback": err or None}

    def stderr_tail(self, lines: int = 25) -> str:
        try:
            self.stderr.flush()
            self.stderr.seek(0)
            return "\n".join(self.stderr.read().strip().splitlines()[-lines:])
        except (OSError, ValueError):
            return ""

    def kill(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def close(self):
        self.kill()
        for f in (self.proc.stdin, self.proc.stdout):
            if f is not None:
                f.close()
        self.stderr.close()
        shutil.rmtree(self.tmpdir, ignore_errors=True)
