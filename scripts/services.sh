#!/usr/bin/env bash
# Server binaries that tests/test_libs_db.py runs for real: PostgreSQL (initdb, pg_ctl,
# postgres) and redis-server, and the openssl command the TLS tests make their
# certificates with (tests/looptest_tls.py), from Debian's packages. Called by scripts/test.sh before
# pytest. Idempotent: installs only what is missing, and only where apt-get exists and we
# are root; otherwise it says what is missing (the tests then skip, or fail when
# FERROLOOP_REQUIRE_SERVICES=1). The servers are not started here: the tests start their
# own instances on free loopback ports in temporary directories (tests/looptest_services.py).
set -euo pipefail

pg_bindir() {
    local d
    d="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
    [ -n "$d" ] && [ -x "$d/initdb" ] && [ -x "$d/pg_ctl" ] && echo "$d"
}

missing=()
pg_bindir >/dev/null || missing+=(postgresql)
command -v redis-server >/dev/null 2>&1 || missing+=(redis-server)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)

if [ "${#missing[@]}" -eq 0 ]; then
    echo "== services: postgresql ($(pg_bindir)), redis-server ($(command -v redis-server)) and openssl present"
    exit 0
fi

if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
    echo "== services: missing ${missing[*]}; no apt-get or not root, not installed" \
        "(the tests that need them will skip, or fail with FERROLOOP_REQUIRE_SERVICES=1)" >&2
    exit 0
fi

echo "== services: installing ${missing[*]} (apt-get)"
# Keep the packages' maintainer scripts from starting system-wide daemons (the tests
# start their own): invoke-rc.d honours policy-rc.d's 101 "action forbidden". Only when
# there is no policy-rc.d already, and removed again afterwards.
policy=/usr/sbin/policy-rc.d
made_policy=0
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' >"$policy"
    chmod 755 "$policy"
    made_policy=1
fi
# Nor create the system-wide "main" PostgreSQL cluster (the tests initdb their own): a
# postgresql-common drop-in, removed again afterwards.
no_cluster=/etc/postgresql-common/createcluster.d/ferroloop-no-main-cluster.conf
made_no_cluster=0
if [[ " ${missing[*]} " == *" postgresql "* ]] && [ ! -e "$no_cluster" ]; then
    mkdir -p "$(dirname "$no_cluster")"
    echo "create_main_cluster = false" >"$no_cluster"
    made_no_cluster=1
fi
cleanup() {
    if [ "$made_policy" = 1 ]; then rm -f "$policy"; fi
    if [ "$made_no_cluster" = 1 ]; then rm -f "$no_cluster"; fi
}
trap cleanup EXIT
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
pg_bindir >/dev/null || { echo "error: postgresql installed but no initdb found" >&2; exit 1; }
command -v redis-server >/dev/null 2>&1 || { echo "error: redis-server not found after install" >&2; exit 1; }
command -v openssl >/dev/null 2>&1 || { echo "error: openssl not found after install" >&2; exit 1; }
echo "== services: postgresql ($(pg_bindir)), redis-server ($(command -v redis-server)) and openssl installed"
