"""What importing a part of Dativo loads: the runner and the codecs run without singer-sdk
(a reader or writer run in process does not pay for it)."""

from __future__ import annotations

import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    "statement",
    [
        "from dativo_bridge import run",
        "import dativo_bridge.codecs.messages",
        "import dativo_bridge.codecs.values",
    ],
)
def test_import_does_not_load_singer_sdk(statement: str) -> None:
    code = f"import sys\n{statement}\nprint(sorted(m for m in sys.modules if m.startswith('singer_sdk')))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "[]"
