#!/usr/bin/env bash
# Builds Dativo's distributions into dist/ (or --out DIR):
#   dativo        the sdist, and the wheel built from that sdist (python -m build)
#   accel         dativo-accel (rust_accel/), one wheel per interpreter, by maturin
# Both by default; name one to build only it.
#
# dativo-accel wheels are manylinux_2_28 by default: maturin links them through zig (the
# `ziglang` package) against glibc 2.28's symbols, so they install on glibc 2.28 or newer
# whatever the build host's glibc is. --native links against the host's glibc instead
# (no zig; maturin tags the wheel with the oldest manylinux its symbols allow, e.g.
# manylinux_2_34 on Debian 12) and shares rust_accel/target with `pip install ./rust_accel`
# and `cargo test --release`, so it compiles nothing they have compiled.
# --abi3 builds one wheel for CPython 3.11 and later (the stable ABI), whose Singer
# encoder is slower on large batches (docs/packaging.md has the figures).
#
# Usage: bash scripts/build_wheels.sh [--out DIR] [--native] [--abi3] [--interpreter PY]... [dativo] [accel]
# PYTHON=... names the Python that runs build and maturin (default: python3 on PATH; it
# needs build, maturin and ziglang: pip install -e ".[wheels]"). The wheels are for it unless
# --interpreter names others. CARGO_TARGET_DIR defaults to .dativo/wheel-build/target
# for the zig builds (kept between runs: a rebuild compiles only what changed).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)

usage() { sed -n 's/^# Usage: //p' "$0" >&2; exit 2; }
OUT=dist NATIVE=0 ABI3=0 INTERPRETERS=() PARTS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --out) [ $# -ge 2 ] || usage; OUT=$2; shift 2 ;;
    --native) NATIVE=1; shift ;;
    --abi3) ABI3=1; shift ;;
    --interpreter) [ $# -ge 2 ] || usage; INTERPRETERS+=("$2"); shift 2 ;;
    dativo|accel) PARTS+=("$1"); shift ;;
    *) echo "build_wheels.sh: unknown argument '$1'" >&2; usage ;;
  esac
done
[ ${#PARTS[@]} -gt 0 ] || PARTS=(dativo accel)
PY=${PYTHON:-python3}
[ ${#INTERPRETERS[@]} -gt 0 ] || INTERPRETERS=("$PY")
mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)

for part in "${PARTS[@]}"; do
  if [ "$part" = dativo ]; then
    echo "== dativo: sdist and wheel (python -m build)"
    "$PY" -m build --outdir "$OUT" "$ROOT"
    continue
  fi
  args=(build --release --out "$OUT")
  for interpreter in "${INTERPRETERS[@]}"; do args+=(--interpreter "$interpreter"); done
  if [ "$ABI3" = 1 ]; then args+=(--features abi3); fi
  if [ "$NATIVE" = 1 ]; then
    echo "== dativo-accel: maturin, linked against this host's glibc ($(ldd --version | head -1))"
    (cd rust_accel && "$PY" -m maturin "${args[@]}")
  else
    echo "== dativo-accel: maturin --zig, manylinux_2_28"
    if ! "$PY" -c 'import ziglang' 2>/dev/null; then
      echo "build_wheels.sh: zig is missing for the manylinux_2_28 build: $PY -m pip install ziglang, or pip install -e \".[wheels]\" (or use --native)" >&2
      exit 1
    fi
    # maturin runs zig as `python3 -m ziglang`: put this Python's directory first on PATH.
    bin=$("$PY" -c 'import os, sys; print(os.path.dirname(sys.executable))')
    export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/.dativo/wheel-build/target}
    (cd rust_accel && PATH="$bin:$PATH" "$PY" -m maturin "${args[@]}" --zig --compatibility manylinux_2_28)
  fi
done
ls -l "$OUT"
