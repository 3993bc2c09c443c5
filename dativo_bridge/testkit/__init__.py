"""Dativo's conformance suite for readers and writers (docs/testkit.md).

The same checks run three ways: :func:`run_reader_checks` / :func:`run_writer_checks`
from Python, ``dativo test-plugin MODULE:CLASS --config FILE`` from the command line, and
the pytest plugin's fixtures (``dativo_check_reader``, ``dativo_check_writer``).
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from dativo_bridge.testkit.readers import READER_CHECKS, LateRows, run_reader_checks
    from dativo_bridge.testkit.report import CheckResult, Report
    from dativo_bridge.testkit.visible import ReadBack
    from dativo_bridge.testkit.writers import WRITER_CHECKS, run_writer_checks

#: Where each export lives; imported on first use (PEP 562), so that `dativo --help` and
#: `dativo init`, which import dativo_bridge.testkit.cli and .scaffold, do not pay for the
#: checks (pyarrow, jsonschema: ~0.2 s).
_EXPORTS = {
    "READER_CHECKS": "dativo_bridge.testkit.readers",
    "LateRows": "dativo_bridge.testkit.readers",
    "run_reader_checks": "dativo_bridge.testkit.readers",
    "CheckResult": "dativo_bridge.testkit.report",
    "Report": "dativo_bridge.testkit.report",
    "ReadBack": "dativo_bridge.testkit.visible",
    "WRITER_CHECKS": "dativo_bridge.testkit.writers",
    "run_writer_checks": "dativo_bridge.testkit.writers",
}


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "READER_CHECKS",
    "WRITER_CHECKS",
    "CheckResult",
    "LateRows",
    "ReadBack",
    "Report",
    "run_reader_checks",
    "run_writer_checks",
]
