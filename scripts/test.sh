#!/usr/bin/env bash
# Installs everything the tests need from this repository's own files, then runs
# linters, type checks and the whole test suite. Usage: bash scripts/test.sh [pytest args]
set -euo pipefail
cd "$(dirname "$0")/.."

PY=${PYTHON:-python3}
echo "== installing dativo with its dev extras"
"$PY" -m pip install --quiet --disable-pip-version-check -e ".[dev,bench]"

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
