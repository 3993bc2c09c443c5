#!/usr/bin/env bash
# Installs dativo and runs the demo job: the sample CSV into Parquet, in process.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m pip install --quiet --disable-pip-version-check -e .
dativo run tap-dativo-csv target-dativo-parquet --full-refresh "$@"
