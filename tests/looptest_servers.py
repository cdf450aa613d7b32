"""Throw-away PostgreSQL and Redis servers on loopback, without pytest: used by the library
tests' fixtures (``looptest_services``) and by the main job's I/O patterns
(``benchmarks/seed_demo.py``).

Each server runs on a free loopback port with its Unix socket and data in a fresh
temporary directory, removed again by ``stop()``; nothing system-wide is touched. The
binaries come from Debian's packages (``scripts/services.sh`` installs them).

PostgreSQL refuses to run as root; as root, ``initdb`` and ``pg_ctl`` run as the
``postgres`` user (``runuser``), which owns the temporary directory. The cluster trusts
every local and loopback connection (user ``postgres``, no password).

Deliberately unusual module name (see ``looptest_support``).
"""

from __future__ import annotations

import glob
import os
import pwd
import re
import shutil
import socket
import subprocess
import tempfile
import time

START_TIMEOUT = 30.0


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _version_key(path):
    return [int(n) for n in re.findall(r"\d+", path)]


def postgres_bindir():
    """Directory with initdb/pg_ctl/postgres, or None (newest Debian version wins)."""
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version_key)
    pg_ctl = shutil.which("pg_ctl")
    if pg_ctl:
        candidates.insert(0, os.path.dirname(os.path.realpath(pg_ctl)))
    for d in reversed(candidates):
        if all(os.access(os.path.join(d, b), os.X_OK) for b in ("initdb", "pg_ctl", "postgres")):
            return d
    return None


def _wait_for(predicate, what, timeout=START_TIMEOUT, log=None):
    deadline = time.monotonic() + timeout
    while True:
        try:
            if predicate():
                return
        except OSError:
            pass
        if time.monotonic() > deadline:
            text = ""
            if log and os.path.exists(log):
                with open(log, errors="replace") as f:
                    text = f.read()[-4000:]
            raise RuntimeError(f"{what} not ready after {timeout}s\n{text}")
        time.sleep(0.05)


class PostgresServer:
    """A throw-away PostgreSQL cluster: ``host``/``port`` (TCP) and ``socket_dir`` (Unix);
    with ``ssl=on`` and ``certs``' server certificate when ``certs`` (``tls_certs``) is
    given."""

    user = "postgres"
    database = "postgres"
    host = "127.0.0.1"

    def __init__(self, bindir, certs=None):
        self.bindir = bindir
        self.certs = certs
        self._owner = None  # (uid, gid) postgres runs as, when root
        self.tmp = tempfile.mkdtemp(prefix="ferroloop-pg-")  # /tmp: reachable by postgres
        self.datadir = os.path.join(self.tmp, "data")
        self.socket_dir = self.tmp
        self.log = os.path.join(self.tmp, "postgres.log")
        self.port = None
        self._as_user = []
        if os.geteuid() == 0:
            # initdb and postgres refuse to run as root: run them as the postgres user.
            try:
                pw = pwd.getpwnam("postgres")
            except KeyError:
                raise RuntimeError("running as root and there is no 'postgres' user") from None
            self._owner = (pw.pw_uid, pw.pw_gid)
            os.chown(self.tmp, pw.pw_uid, pw.pw_gid)
            runuser = shutil.which("runuser")
            if runuser is None:
                raise RuntimeError("running as root and runuser(1) is missing")
            self._as_user = [runuser, "-u", "postgres", "--"]

    def _run(self, *args, timeout=60):
        cmd = self._as_user + [os.path.join(self.bindir, args[0]), *args[1:]]
        proc = subprocess.run(cmd, cwd=self.tmp, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True, timeout=timeout)
        if proc.returncode != 0:
            raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stdout}")
        return proc.stdout

    def start(self):
        self._run("initdb", "-D", self.datadir, "-U", self.user, "-A", "trust", "-E", "UTF8",
                  "--locale=C", "--no-sync")
        tls = ""
        if self.certs is not None:
            self._install_certificate()
            tls = " -c ssl=on"
        last = None
        for _ in range(3):  # a free port may be taken before postgres binds it: retry
            self.port = free_port()
            options = (f"-c listen_addresses={self.host} -p {self.port} -k {self.socket_dir} "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                       "-c max_connections=60" + tls)
            try:
                self._run("pg_ctl", "-D", self.datadir, "-l", self.log, "-w", "-t",
                          str(int(START_TIMEOUT)), "-o", options, "start")
            except RuntimeError as exc:
                last = exc
                continue
            _wait_for(self._accepts_tcp, "postgres", log=self.log)
            return self
        raise last

    def _install_certificate(self):
        """``server.crt``/``server.key`` in the data directory (postgres's defaults for
        ``ssl_cert_file``/``ssl_key_file``); postgres refuses a key file that is not owned
        by its user or is readable by others."""
        for src, name, mode in ((self.certs.server_cert, "server.crt", 0o644),
                                (self.certs.server_key, "server.key", 0o600)):
            dst = os.path.join(self.datadir, name)
            shutil.copyfile(src, dst)
            os.chmod(dst, mode)
            if self._owner is not None:
                os.chown(dst, *self._owner)

    def _accepts_tcp(self):
        with socket.create_connection((self.host, self.port), timeout=1):
            return True

    @property
    def socket_path(self):
        return os.path.join(self.socket_dir, f".s.PGSQL.{self.port}")

    def stop(self):
        try:
            if os.path.exists(os.path.join(self.datadir, "postmaster.pid")):
                self._run("pg_ctl", "-D", self.datadir, "-m", "fast", "-w", "-t", "30", "stop")
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)


class RedisServer:
    """A redis-server without persistence: ``host``/``port`` and ``unix_path``."""

    host = "127.0.0.1"

    def __init__(self, binary):
        self.binary = binary
        self.tmp = tempfile.mkdtemp(prefix="ferroloop-redis-")
        self.unix_path = os.path.join(self.tmp, "redis.sock")
        self.log = os.path.join(self.tmp, "redis.log")
        self.port = None
        self.proc = None

    def start(self):
        for _ in range(3):  # retry if the free port was taken meanwhile
            self.port = free_port()
            self.proc = subprocess.Popen(
                [self.binary, "--port", str(self.port), "--bind", self.host,
                 "--save", "", "--appendonly", "no", "--dir", self.tmp,
                 "--unixsocket", self.unix_path, "--unixsocketperm", "700",
                 "--daemonize", "no", "--logfile", self.log],
                stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
            )
            try:
                _wait_for(self._pong, "redis-server", timeout=10, log=self.log)
                return self
            except RuntimeError:
                if self.proc.poll() is None:
                    raise
                self.proc = None  # exited (port in use?): try another port
        raise RuntimeError("redis-server did not start:\n" + open(self.log).read()[-4000:])

    def _pong(self):
        if self.proc.poll() is not None:
            raise RuntimeError(f"redis-server exited with {self.proc.returncode}")
        with socket.create_connection((self.host, self.port), timeout=1) as s:
            s.sendall(b"PING\r\n")
            return s.recv(64) == b"+PONG\r\n"

    def stop(self):
        try:
            if self.proc is not None and self.proc.poll() is None:
                self.proc.terminate()
                try:
                    self.proc.wait(10)
                except subprocess.TimeoutExpired:
                    self.proc.kill()
                    self.proc.wait()
        finally:
            shutil.rmtree(self.tmp, ignore_errors=True)
