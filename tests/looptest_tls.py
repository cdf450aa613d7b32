"""Helpers for the TLS tests (``test_tls.py``, ``test_tls_failures.py``): test
certificates, shared protocols, and the ``certs`` and ``kind`` fixtures (the test modules
load this module as a pytest plugin, ``pytest_plugins``).

The certificates are made with the ``openssl`` command line (no third-party Python
package needed), once per test session, in a temporary directory:

* ``ca``: the test CA every client context trusts;
* ``server``: a certificate for ``localhost`` (subjectAltName ``DNS:localhost`` and
  ``IP:127.0.0.1``) signed by ``ca``;
* ``client``: a client certificate signed by ``ca`` (for ``CERT_REQUIRED`` servers);
* ``other_ca``: a second, self-signed CA that no client trusts by default.

EC P-256 keys: generating them takes milliseconds (RSA keys would take a noticeable
part of a second each on a slow VM). The extensions (basicConstraints, keyUsage, key
identifiers) are the ones OpenSSL's strict X.509 checks want, which Python 3.13's
``create_default_context`` turns on (``VERIFY_X509_STRICT``).

Deliberately unusual module name (see ``looptest_support``) so that it cannot clash
with modules of other test directories.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import shutil
import socket
import ssl
import subprocess
import sys
import types

import pytest

from looptest_net import Recorder, unix_path
from looptest_services import service_unavailable

OPENSSL = shutil.which("openssl") or (
    "/usr/bin/openssl" if os.path.exists("/usr/bin/openssl") else None
)

CLIENT_CN = "ferroloop test client"

_CA_EXT = """\
basicConstraints = critical, CA:true
keyUsage = critical, keyCertSign, cRLSign
subjectKeyIdentifier = hash
"""

_SERVER_EXT = """\
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = serverAuth
subjectAltName = DNS:localhost, IP:127.0.0.1
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""

_CLIENT_EXT = """\
basicConstraints = critical, CA:false
keyUsage = critical, digitalSignature
extendedKeyUsage = clientAuth
subjectKeyIdentifier = hash
authorityKeyIdentifier = keyid
"""


def _openssl(directory, *args):
    done = subprocess.run(
        [OPENSSL, *args],
        check=False,  # failures are raised below, with openssl's message
        cwd=directory,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        timeout=60,
    )
    if done.returncode != 0:
        raise RuntimeError(f"openssl {' '.join(args[:2])} failed:\n{done.stderr}")


def _self_signed_ca(directory, name, cn):
    _openssl(
        directory,
        "req", "-x509", "-new", "-nodes", "-newkey", "ec",
        "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", f"{name}.key", "-out", f"{name}.pem",
        "-days", "3650", "-subj", f"/CN={cn}",
        "-extensions", "v3_ca", "-config", _req_config(directory),
    )  # fmt: skip


def _req_config(directory):
    # A minimal config of our own: the system's openssl.cnf may be absent or odd.
    path = directory / "req.cnf"
    if not path.exists():
        path.write_text(
            "[req]\ndistinguished_name = dn\nprompt = no\n[dn]\n[v3_ca]\n" + _CA_EXT
        )
    return str(path)


def _signed(directory, name, cn, ext, ca="ca"):
    (directory / f"{name}.ext").write_text(ext)
    _openssl(
        directory,
        "req", "-new", "-nodes", "-newkey", "ec",
        "-pkeyopt", "ec_paramgen_curve:prime256v1",
        "-keyout", f"{name}.key", "-out", f"{name}.csr",
        "-subj", f"/CN={cn}", "-config", _req_config(directory),
    )  # fmt: skip
    _openssl(
        directory,
        "x509", "-req", "-in", f"{name}.csr",
        "-CA", f"{ca}.pem", "-CAkey", f"{ca}.key", "-CAcreateserial",
        "-out", f"{name}.pem", "-days", "3650", "-extfile", f"{name}.ext",
    )  # fmt: skip


def make_certs(directory):
    """Create the test PKI in ``directory``; returns a namespace of file paths."""
    _self_signed_ca(directory, "ca", "ferroloop test CA")
    _self_signed_ca(directory, "other_ca", "untrusted test CA")
    _signed(directory, "server", "localhost", _SERVER_EXT)
    _signed(directory, "client", CLIENT_CN, _CLIENT_EXT)
    return types.SimpleNamespace(
        ca=str(directory / "ca.pem"),
        other_ca=str(directory / "other_ca.pem"),
        server_cert=str(directory / "server.pem"),
        server_key=str(directory / "server.key"),
        client_cert=str(directory / "client.pem"),
        client_key=str(directory / "client.key"),
    )


def server_context(certs, *, require_client_cert=False):
    ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ctx.load_cert_chain(certs.server_cert, certs.server_key)
    if require_client_cert:
        ctx.verify_mode = ssl.CERT_REQUIRED
        ctx.load_verify_locations(certs.ca)
    return ctx


def client_context(certs, *, trust="ca", client_cert=False):
    """A client context trusting only ``certs.<trust>`` (hostname checks on)."""
    ctx = ssl.create_default_context(
        ssl.Purpose.SERVER_AUTH, cafile=getattr(certs, trust)
    )
    if client_cert:
        ctx.load_cert_chain(certs.client_cert, certs.client_key)
    return ctx


class HashingBuffered(asyncio.BufferedProtocol):
    """A ``BufferedProtocol`` that hashes everything it receives (small buffer on
    purpose: many ``get_buffer``/``buffer_updated`` rounds)."""

    def __init__(self, loop, expect, size=8 * 1024):
        self.buf = bytearray(size)
        self.expect = expect
        self.digest = hashlib.sha256()
        self.received = 0
        self.get_buffer_calls = 0
        self.complete = loop.create_future()
        self.lost = loop.create_future()

    def connection_made(self, transport):
        self.transport = transport

    def get_buffer(self, sizehint):
        self.get_buffer_calls += 1
        return self.buf

    def buffer_updated(self, nbytes):
        self.digest.update(memoryview(self.buf)[:nbytes])
        self.received += nbytes
        if self.received >= self.expect and not self.complete.done():
            self.complete.set_result(None)

    def eof_received(self):
        return None

    def connection_lost(self, exc):
        if not self.lost.done():
            self.lost.set_result(exc)


class RawTLS:
    """One end of a TLS connection driven by hand: an ``ssl.SSLObject`` over a plain
    non-blocking socket, moved with the loop's ``sock_*`` coroutines.

    It lets a test do what a well-behaved TLS stack never does: stop after the
    handshake, half-close the TCP connection without a ``close_notify`` alert, etc.
    """

    def __init__(self, loop, sock, ctx, *, server_side, server_hostname=None):
        self.loop = loop
        self.sock = sock
        self.incoming = ssl.MemoryBIO()
        self.outgoing = ssl.MemoryBIO()
        self.obj = ctx.wrap_bio(
            self.incoming,
            self.outgoing,
            server_side=server_side,
            server_hostname=None if server_side else server_hostname,
        )

    async def flush(self):
        data = self.outgoing.read()
        if data:
            await self.loop.sock_sendall(self.sock, data)

    async def handshake(self):
        while True:
            try:
                self.obj.do_handshake()
                break
            except ssl.SSLWantReadError:
                await self.flush()
                data = await self.loop.sock_recv(self.sock, 65536)
                if not data:
                    raise ConnectionResetError(
                        "peer closed during the handshake"
                    ) from None
                self.incoming.write(data)
        await self.flush()

    async def send(self, data):
        self.obj.write(data)
        await self.flush()

    async def send_close_notify(self):
        try:
            self.obj.unwrap()  # queues our close_notify; the peer's is not awaited
        except ssl.SSLWantReadError:
            pass
        await self.flush()

    async def drain_until_eof(self):
        """Read (and discard) raw bytes until the peer closes; returns how it ended:
        ``"eof"`` or the name of the error."""
        try:
            while await self.loop.sock_recv(self.sock, 65536):
                pass
        except OSError as exc:
            return type(exc).__name__
        return "eof"


# ------------------------------------------------------------------- for the tests

#: The marks both TLS test modules carry (``pytestmark``).
TLS_TEST_MARKS = []
if sys.version_info < (3, 11):
    # 3.9/3.10's SSLProtocol marks the application transport closed only when the
    # application calls close(): a TLS connection that the peer ended warns "unclosed
    # transport" when collected (3.11's rewrite marks it in connection_lost). Both loops
    # use asyncio's SSLProtocol; the warning of ferroloop's own transports (their repr
    # is not this one) is still an error.
    TLS_TEST_MARKS.append(
        pytest.mark.filterwarnings(
            r"ignore:unclosed transport <asyncio\.sslproto\._SSLProtocolTransport"
            r":ResourceWarning"
        )
    )


@pytest.fixture(scope="session")
def certs(tmp_path_factory):
    if OPENSSL is None:
        service_unavailable("the openssl command line is needed to make the test certificates")
    return make_certs(tmp_path_factory.mktemp("tls-certs"))


@pytest.fixture(params=["tcp", "unix"])
def kind(request):
    return request.param


async def tls_server(loop, factory, certs, kind="tcp", tmp_path=None, **kwargs):
    """A TLS server; returns it and a ``connect(factory, **kwargs)`` coroutine function
    for TLS clients trusting the test CA."""
    ctx = kwargs.pop("ssl", None) or server_context(certs)
    if kind == "tcp":
        server = await loop.create_server(factory, "127.0.0.1", 0, ssl=ctx, **kwargs)
        addr = server.sockets[0].getsockname()

        def connect(client_factory, **kw):
            kw.setdefault("ssl", client_context(certs))
            kw.setdefault("server_hostname", "localhost")
            return loop.create_connection(client_factory, *addr, **kw)

    else:
        path = unix_path(tmp_path)
        server = await loop.create_unix_server(factory, path, ssl=ctx, **kwargs)

        def connect(client_factory, **kw):
            kw.setdefault("ssl", client_context(certs))
            kw.setdefault("server_hostname", "localhost")
            return loop.create_unix_connection(client_factory, path, **kw)

    return server, connect


class Served:
    """Protocol factory for a server: makes ``Recorder``s and keeps them. asyncio makes
    the protocol before the handshake, so a failed handshake leaves one that never got
    ``connection_made``: ``connected`` are the others."""

    def __init__(self, loop):
        self.loop = loop
        self.made = []

    def __call__(self):
        self.made.append(Recorder(self.loop))
        return self.made[-1]

    @property
    def connected(self):
        return [pr for pr in self.made if pr.transport is not None]


def raw_listener():
    """A plain (non-TLS) listening socket on loopback, for misbehaving peers."""
    lsn = socket.create_server(("127.0.0.1", 0))
    lsn.setblocking(False)
    return lsn
