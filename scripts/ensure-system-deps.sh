#!/usr/bin/env bash
# Makes sure the servers the tests and the demo start are on this machine, and promtool, which
# checks the alert rules and the metrics format (tests/test_alerts.py).
set -euo pipefail

apt_updated=0
apt_install() {
  export DEBIAN_FRONTEND=noninteractive
  if [ "$apt_updated" = 0 ]; then apt-get update -qq; apt_updated=1; fi
  apt-get install -y -qq --no-install-recommends "$@" >/dev/null
}

if ! command -v redis-server >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "redis-server is missing: installing it from Debian's packages" >&2
    apt_install redis-server
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

# Debian's prometheus package is the one that ships promtool. Without it the alert-rule and
# metrics-format tests fail (they do not skip): install it, or run pytest with -m "not promtool".
if ! command -v promtool >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "promtool is missing: installing Debian's prometheus package, which provides it" >&2
    apt_install prometheus
    # Only promtool is wanted; the package may start a Prometheus server.
    (service prometheus stop || true) >/dev/null 2>&1
  else
    echo "WARNING: promtool is missing: the alert-rule tests will fail." >&2
    echo "WARNING: install it (Debian/Ubuntu: sudo apt-get install prometheus)." >&2
  fi
fi
