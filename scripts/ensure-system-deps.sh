#!/usr/bin/env bash
# Makes sure the servers the tests and the demo start are on this machine.
set -euo pipefail

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "redis-server is missing: installing it from Debian's packages" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq --no-install-recommends redis-server >/dev/null
    # The package starts a system-wide instance on 6379; the tests and demo start their own.
    (service redis-server stop || true) >/dev/null 2>&1
  else
    echo "redis-server is missing: install it (Debian/Ubuntu: sudo apt-get install redis-server)" >&2
    exit 1
  fi
fi

if ! command -v pg_config >/dev/null 2>&1 || [ ! -x "$(pg_config --bindir)/postgres" ]; then
  if ! command -v postgres >/dev/null 2>&1 && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
    echo "PostgreSQL server binaries are missing: install them (Debian/Ubuntu: sudo apt-get install postgresql)" >&2
    exit 1
  fi
fi
