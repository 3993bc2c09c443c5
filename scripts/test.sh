#!/usr/bin/env bash
# Installs everything the tests need from this repository's own files, then runs
# linters, type checks and the whole test suite. Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
echo "== installing dativo with its dev extras"
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[dev,bench]"

# The TLS tests need a PostgreSQL built with OpenSSL (pgserver's is not): Debian's package.
if [ -z "${DATIVO_TEST_PG_BIN:-}" ] && ! ls /usr/lib/postgresql/*/bin/postgres >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== installing PostgreSQL from apt (for the TLS tests)"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends postgresql >/dev/null
  else
    echo "note: no system PostgreSQL: the TLS tests will be skipped (apt-get install postgresql)"
  fi
fi

echo "== ruff"
dirs=$(ls -d dativo_bridge taps targets tests bench 2>/dev/null || true)
"$PY" -m ruff check $dirs
"$PY" -m ruff format --check $dirs

echo "== mypy"
"$PY" -m mypy

echo "== rust_accel: rustfmt, clippy, cargo test"
export PYO3_PYTHON="$(command -v "$PY")"
(cd rust_accel && cargo fmt --check && cargo clippy --all-targets -j 2 -- -D warnings \
  && cargo test -j 2)
echo "== rust_accel: install dativo-accel (optional extension), check its stub"
"$PY" -m pip install --quiet --disable-pip-version-check ./rust_accel
"$PY" -m mypy.stubtest dativo_accel

echo "== pytest"
"$PY" -m pytest -q -p no:cacheprovider "$@"
