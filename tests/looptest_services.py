"""Real servers for the library tests (``test_libs_db.py``): PostgreSQL and Redis; and the
test certificates of the TLS library tests (``test_libs_db.py``, ``test_libs_http.py``).

Each is started once per pytest session by a fixture and stopped (and its directory
removed) at the end of the session; the servers themselves are ``looptest_servers``'
(free loopback ports, throw-away directories, nothing system-wide touched).

The binaries come from Debian's packages (``scripts/services.sh`` installs them in CI).
When they are missing, the tests that need them are skipped with the reason, except when
``FERROLOOP_REQUIRE_SERVICES=1`` (set by ``scripts/test.sh``): then they fail.

``postgres_tls_server`` is a second cluster with ``ssl=on``: its certificate and key
(``server.crt``/``server.key`` in its data directory, the key mode 0600 and owned by the
user postgres runs as) come from ``tls_certs``. The plain ``postgres_server`` stays
without TLS, so that ``ssl="prefer"`` there still means "the server declines".

``tls_certs`` (session-scoped) is the test PKI of ``looptest_tls.make_certs`` (made with
the ``openssl`` command in a temporary directory): a test CA, a server certificate for
``localhost`` (subjectAltName ``DNS:localhost,IP:127.0.0.1``) signed by it, and a second
CA no client trusts; ``looptest_tls.client_context``/``server_context`` make the contexts.

Deliberately unusual module name (see ``looptest_support``).
"""

from __future__ import annotations

import os
import shutil

import pytest

from looptest_servers import PostgresServer, RedisServer, postgres_bindir

REQUIRE_SERVICES = os.environ.get("FERROLOOP_REQUIRE_SERVICES") == "1"


def service_unavailable(reason):
    """Skip the test (developer machine), or fail it when services are required (CI)."""
    if REQUIRE_SERVICES:
        pytest.fail(f"{reason} (FERROLOOP_REQUIRE_SERVICES=1: the services are required)",
                    pytrace=False)
    pytest.skip(f"{reason} (scripts/services.sh installs the servers)")


# --------------------------------------------------------------- test certificates


@pytest.fixture(scope="session")
def tls_certs(tmp_path_factory):
    """The session's test PKI, made by ``looptest_tls.make_certs`` (``openssl``): paths
    ``ca``, ``server_cert``/``server_key`` (localhost), ``other_ca`` (trusted by nobody)."""
    import looptest_tls  # here: the rest of this module does not need it

    if looptest_tls.OPENSSL is None:
        service_unavailable("the openssl command (to make the test certificates) not found")
    return looptest_tls.make_certs(tmp_path_factory.mktemp("tls-certs"))


def _started_postgres(certs=None):
    bindir = postgres_bindir()
    if bindir is None:
        service_unavailable("PostgreSQL server binaries (initdb, pg_ctl) not found")
    server = PostgresServer(bindir, certs=certs)
    try:
        server.start()
    except BaseException:
        server.stop()
        raise
    return server


@pytest.fixture(scope="session")
def postgres_server():
    """The session's PostgreSQL server (started on first use, stopped at the end); no TLS."""
    server = _started_postgres()
    yield server
    server.stop()


@pytest.fixture(scope="session")
def postgres_tls_server(tls_certs):
    """A second session PostgreSQL server, with ``ssl=on`` (certificate: ``tls_certs``)."""
    server = _started_postgres(certs=tls_certs)
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
