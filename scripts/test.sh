#!/usr/bin/env bash
# The README's second command. Installs everything the tests need from this repository's
# own files into the project's virtual environment (.venv: dativo with its dev extras and
# meltano from PyPI; on Debian/Ubuntu as root, PostgreSQL from apt for the TLS tests),
# builds the Rust extension once, then runs ruff, mypy, rustfmt, clippy, the Rust tests
# and the whole pytest suite (about 1,780 tests, on one pytest-xdist worker per core; the
# third-party plugins it tests against go into their own venvs under .dativo/test-venvs,
# once, with uv). About 15 minutes on 2 cores the first time (install ~1.5 min, the Rust
# crate ~4, the suite ~9), less after.
# Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
phase() { echo "== $1 (at ${SECONDS}s)"; }

phase "installing dativo with its dev extras, and meltano"
"${PIP[@]}" -e ".[dev,bench]" "meltano>=4,<5" uv

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

phase "ruff"
dirs=$(ls -d dativo_bridge taps targets tests bench 2>/dev/null || true)
"$PY" -m ruff check $dirs
"$PY" -m ruff format --check $dirs

phase "mypy"
"$PY" -m mypy

# The crate is compiled once in the release profile: `cargo test --release` and maturin's
# release build share every dependency's build, and clippy checks in the same profile
# so the build scripts (ring's C code) run once and no debug tree is made (~270 MB).
phase "rust_accel: rustfmt, clippy, cargo test"
export PYO3_PYTHON="$PY"
(cd rust_accel && cargo fmt --check && cargo clippy --all-targets --release -j 2 -- -D warnings \
  && cargo test --release -j 2)
phase "rust_accel: install dativo-accel (optional extension), check its stub"
"${PIP[@]}" ./rust_accel
"$PY" -m mypy.stubtest dativo_accel

# One pytest-xdist worker per core (at most 4; DATIVO_TEST_WORKERS=N to choose, 0 for
# none). Each worker starts its own PostgreSQL and S3 servers; external ones
# (DATIVO_TEST_PG_DSN, DATIVO_TEST_S3_ENDPOINT) are shared, so the suite then runs in one
# process unless DATIVO_TEST_WORKERS says otherwise.
workers=${DATIVO_TEST_WORKERS:-}
if [ -z "$workers" ]; then
  if [ -n "${DATIVO_TEST_PG_DSN:-}${DATIVO_TEST_S3_ENDPOINT:-}" ]; then
    workers=0
  else
    workers=$(nproc 2>/dev/null || echo 2)
    [ "$workers" -gt 4 ] && workers=4
  fi
fi
phase "pytest ($workers workers)"
"$PY" -m pytest -q -p no:cacheprovider --durations=25 -n "$workers" --dist loadfile "$@"
