"""The README's commands, run verbatim in a copy of the repository."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import BIN, REPO
from .test_meltano import COPY, meltano  # noqa: F401 - the meltano venv fixture

BLOCK = re.compile(r"<!-- readme-test -->\n```(\w+)\n(.*?)```", re.DOTALL)


def readme_blocks() -> list[tuple[str, str]]:
    """(language, code) of every block marked for testing, in README order."""
    return BLOCK.findall((REPO / "README.md").read_text())


def test_readme_has_the_three_ways() -> None:
    languages = [language for language, _ in readme_blocks()]
    assert languages == ["bash", "bash", "bash", "python"]


@pytest.fixture()
def checkout(tmp_path: Path) -> Path:
    root = tmp_path / "dativo"
    root.mkdir()
    for name in COPY:
        source = REPO / name
        if source.is_dir():
            shutil.copytree(
                source, root / name, ignore=shutil.ignore_patterns("__pycache__", "*.egg-info")
            )
        else:
            shutil.copy2(source, root / name)
    return root


def test_readme_commands_run(checkout: Path, meltano: Path) -> None:  # noqa: F811
    env = {k: v for k, v in os.environ.items() if not k.startswith("MELTANO_")}
    env["PATH"] = os.pathsep.join([str(BIN), str(meltano.parent), env.get("PATH", "")])
    for language, code in readme_blocks():
        if language == "bash":
            command = ["bash", "-euo", "pipefail", "-c", code]
        else:
            command = [sys.executable, "-c", code]
        done = subprocess.run(
            command, cwd=checkout, env=env, capture_output=True, text=True, timeout=900, check=False
        )
        assert done.returncode == 0, f"README block failed:\n{code}\n{done.stderr[-3000:]}"
    output = checkout / "output"
    for expected in (
        "parquet/orders",
        "pipe/orders",
        "python/orders",
        "iceberg/singer",
        "jsonl/orders.jsonl",
    ):
        assert (output / expected).exists(), expected
    assert len((output / "jsonl" / "orders.jsonl").read_text().splitlines()) == 5
