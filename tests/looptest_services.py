"""Real servers for the library tests (``test_libs_db.py``): PostgreSQL and Redis.

Each is started once per pytest session by a fixture, on a free loopback port and with
its Unix socket in a fresh temporary directory, and stopped (and its directory removed)
at the end of the session. Nothing system-wide is touched: no system service is used,
the servers run with throw-away data directories and never write to disk beyond them.

The binaries come from Debian's packages (``scripts/services.sh`` installs them in CI).
When they are missing, the tests that need them are skipped with the reason, except when
``FERROLOOP_REQUIRE_SERVICES=1`` (set by ``scripts/test.sh``): then they fail.

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

import pytest

REQUIRE_SERVICES = os.environ.get("FERROLOOP_REQUIRE_SERVICES") == "1"
START_TIMEOUT = 30.0


def free_port():
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def service_unavailable(reason):
    """Skip the test (developer machine), or fail it when services are required (CI)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (FERROLOOP_REQUIRE_SERVICES=1: the services are required)",
                    pytrace=False)
    pytest.skip(f"{reason} (scripts/services.sh installs the servers)")


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
    """A throw-away PostgreSQL cluster: ``host``/``port`` (TCP) and ``socket_dir`` (Unix)."""

    user = "postgres"
    database = "postgres"
    host = "127.0.0.1"

    def __init__(self, bindir):
        self.bindir = bindir
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
        last = None
        for _ in range(3):  # a free port may be taken before postgres binds it: retry
            self.port = free_port()
            options = (f"-c listen_addresses={self.host} -p {self.port} -k {self.socket_dir} "
                       "-c fsync=off -c synchronous_commit=off -c full_page_writes=off "
                       "-c max_connections=60")
            try:
                self._run("pg_ctl", "-D", self.datadir, "-l", self.log, "-w", "-t",
                          str(int(START_TIMEOUT)), "-o", options, "start")
            except RuntimeError as exc:
                last = exc
                continue
            _wait_for(self._accepts_tcp, "postgres", log=self.log)
            return self
        raise last

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


@pytest.fixture(scope="session")
def postgres_server():
    """The session's PostgreSQL server (started on first use, stopped at the end)."""
    bindir = postgres_bindir()
    if bindir is None:
        service_unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
    server = PostgresServer(bindir)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()


@pytest.fixture(scope="session")
def redis_server():
    """The session's redis-server (started on first use, stopped at the end)."""
    binary = shutil.which("redis-server")
    if binary is None:
        service_unavailable("redis-server not found")
    server = RedisServer(binary)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    yield server
    server.stop()
