"""Shared helpers for the end-to-end tests: console scripts, projects, Parquet reads."""

from __future__ import annotations

import fcntl
import json
import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.dataset as ds
import yaml

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[2]


def script(name: str) -> str:
    """Absolute path of a console script installed next to this Python."""
    path = BIN / name
    assert path.exists(), f"{name} is not installed next to {sys.executable}"
    return str(path)


def env() -> dict[str, str]:
    """The environment for child processes, with this Python's bin first on PATH."""
    return {**os.environ, "PATH": f"{BIN}{os.pathsep}{os.environ.get('PATH', '')}"}


def write_project(directory: Path, extractors: list[dict], loaders: list[dict]) -> Path:
    """A minimal meltano.yml with the given plugins and a `test` environment."""
    data = {
        "version": 1,
        "default_environment": "test",
        "environments": [{"name": "test"}],
        "plugins": {"extractors": extractors, "loaders": loaders},
    }
    path = directory / "meltano.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def dativo_run(
    project: Path, tap: str, target: str, *args: str, check: bool = True, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """Run `dativo run` in the project's directory and return the completed process."""
    done = subprocess.run(
        [script("dativo"), "run", tap, target, "--project", str(project), *args],
        capture_output=True,
        text=True,
        cwd=project.parent,
        env=env(),
        timeout=timeout,
        check=False,
    )
    if check and done.returncode != 0:
        raise AssertionError(f"dativo run failed ({done.returncode}):\n{done.stderr[-4000:]}")
    return done


def read_parquet_dir(path: Path) -> pa.Table:
    """Every visible Parquet file under ``path`` (hidden and in-progress files ignored)."""
    files = sorted(
        str(p)
        for p in path.rglob("*.parquet")
        if not any(part.startswith((".", "_")) for part in p.relative_to(path).parts)
    )
    assert files, f"no Parquet files under {path}"
    return ds.dataset(files, format="parquet").to_table()


def states_in(output: str) -> list[Any]:
    """The state values a target printed (one bare JSON object per line)."""
    return [json.loads(line) for line in output.splitlines() if line.startswith("{")]


def pipe(
    command: str, cwd: Path, extra_env: dict[str, str] | None = None, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    """Run a shell pipeline (``tap ... | target ...``) and assert it succeeded."""
    done = subprocess.run(
        ["bash", "-o", "pipefail", "-c", command],
        cwd=cwd,
        env={**env(), **(extra_env or {})},
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    assert done.returncode == 0, f"{command}\n{done.stderr[-3000:]}"
    return done


def peer_venv(requirement: str, executable: str, *more: str) -> Path:
    """A plugin or tool from PyPI in its own venv under .dativo/test-venvs (cached), so
    versions never clash with ours. Returns the path of ``executable``."""
    name = re.split(r"[<>=\[]", requirement)[0]
    home = REPO / ".dativo" / "test-venvs" / name
    exe = home / "bin" / executable
    home.parent.mkdir(parents=True, exist_ok=True)
    # Two test workers (or two sessions) may want the same venv at once: one builds it,
    # the other waits and uses it.
    with open(home.parent / f"{name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not exe.exists():
            _build_venv(home, requirement, *more)
    assert exe.exists(), f"{requirement} did not install {executable}"
    return exe


def _build_venv(home: Path, requirement: str, *more: str) -> None:
    """With uv when the set-up installed it (scripts/test.sh: about ten times faster than
    pip on an empty cache, and its files are hard links into uv's cache), else venv + pip."""
    uv = BIN / "uv"
    if uv.exists():
        base = [str(uv), "--quiet"]
        subprocess.run(
            [*base, "venv", "--seed", "--python", sys.executable, "--clear", str(home)],
            check=True,
            timeout=300,
        )
        install = [*base, "pip", "install", "--python", str(home / "bin" / "python")]
        subprocess.run([*install, requirement, *more], check=True, timeout=900)
        return
    import venv

    venv.create(home, with_pip=True, clear=True)
    pip = [str(home / "bin" / "python"), "-m", "pip", "install", "--quiet"]
    subprocess.run(
        [*pip, "--disable-pip-version-check", requirement, *more], check=True, timeout=900
    )
