"""Dativo's conformance suite for readers and writers (docs/testkit.md).

The same checks run three ways: :func:`run_reader_checks` / :func:`run_writer_checks`
from Python, ``dativo test-plugin MODULE:CLASS --config FILE`` from the command line, and
the pytest plugin's fixtures (``dativo_check_reader``, ``dativo_check_writer``).
"""

from __future__ import annotations

from dativo_bridge.testkit.readers import READER_CHECKS, LateRows, run_reader_checks
from dativo_bridge.testkit.report import CheckResult, Report
from dativo_bridge.testkit.visible import ReadBack
from dativo_bridge.testkit.writers import WRITER_CHECKS, run_writer_checks

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
