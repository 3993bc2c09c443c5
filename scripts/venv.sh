# Sourced by demo.sh and test.sh: the project's virtual environment at .venv, made once
# from the system's python3 (Debian/Ubuntu's is "externally managed": nothing is
# installed into it), then first on PATH. PYTHON=... picks another interpreter for it.
PY=${PYTHON:-python3}
VENV=${DATIVO_VENV:-.venv}
if ! command -v "$PY" >/dev/null 2>&1; then
  echo "error: $PY not found; install Python 3.11 or newer (Debian/Ubuntu: apt-get install python3)" >&2
  exit 1
fi
if ! "$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then
  echo "error: $PY is Python $("$PY" -c 'import platform; print(platform.python_version())'); Dativo needs 3.11 or newer (PYTHON=python3.12 bash $0)" >&2
  exit 1
fi
if [ ! -x "$VENV/bin/python" ]; then
  if ! "$PY" -c 'import ensurepip, venv' >/dev/null 2>&1; then
    package="python3-venv"
    minor=$("$PY" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
      echo "== installing $package (python3 -m venv needs it)"
      apt-get update -qq
      DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "python$minor-venv" >/dev/null \
        || DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "$package" >/dev/null
    else
      echo "error: '$PY -m venv' is not available. Install it with:" >&2
      echo "    sudo apt-get install python$minor-venv" >&2
      exit 1
    fi
  fi
  echo "== creating the project's virtual environment in $VENV"
  "$PY" -m venv "$VENV"
fi
VENV_ABS="$(cd "$VENV" && pwd)"
export PATH="$VENV_ABS/bin:$PATH"
export VIRTUAL_ENV="$VENV_ABS"
PY="$VENV_ABS/bin/python"
PIP=("$PY" -m pip install --quiet --disable-pip-version-check)
