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

echo "== pytest"
"$PY" -m pytest -q -p no:cacheprovider "$@"
