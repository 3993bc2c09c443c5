"""Every test here is marked `e2e` (see tests/markers.py)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.markers import deselected, mark_directory

HERE = Path(__file__).parent


def pytest_ignore_collect(collection_path: Path, config: pytest.Config) -> bool | None:
    if deselected(config, "e2e") and HERE in (collection_path, *collection_path.parents):
        return True
    return None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    mark_directory(items, HERE, "e2e")
