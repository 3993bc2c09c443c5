"""Markers by directory: every test under tests/integration/ is `integration`, every test
under tests/e2e/ is `e2e`. A directory whose marker the `-m` expression deselects is not
even collected, so `pytest -m "not integration and not e2e"` starts no server."""

from __future__ import annotations

from pathlib import Path

import pytest
from _pytest.mark.expression import Expression


def deselected(config: pytest.Config, marker: str) -> bool:
    """True when the run's ``-m`` expression excludes tests carrying only ``marker``."""
    expression = config.getoption("markexpr", "") or ""
    if not expression:
        return False
    return not Expression.compile(expression).evaluate(lambda name, **_: name == marker)


def mark_directory(items: list[pytest.Item], directory: Path, marker: str) -> None:
    """Add ``marker`` to the collected items under ``directory``."""
    for item in items:
        if directory in Path(str(item.path)).parents:
            item.add_marker(getattr(pytest.mark, marker))
