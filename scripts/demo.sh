#!/usr/bin/env bash
# The README's first command: creates the project's virtual environment at .venv (dativo
# and meltano, from this checkout and PyPI; about a minute), then runs the demo job:
# demo/orders.csv into Parquet, in process. Usage: bash scripts/demo.sh [dativo run options]
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/venv.sh
echo "== installing dativo (this checkout) and meltano into $VENV"
"${PIP[@]}" -e . "meltano>=4,<5" uv
echo "== the demo: dativo run tap-dativo-csv target-dativo-parquet --full-refresh"
"$VENV_ABS/bin/dativo" run tap-dativo-csv target-dativo-parquet --full-refresh "$@"
cat <<MSG

Done. For every other command in the README, activate the environment first:

    source $VENV/bin/activate

MSG
