"""The conformance suite as a pytest plugin (registered through the ``pytest11`` entry
point, so it is active wherever dativo is installed).

Fixtures for plugin authors::

    def test_my_reader(dativo_check_reader):
        dativo_check_reader(MyReader, {"station": "OSL"})

    def test_my_writer(dativo_check_writer, tmp_path):
        dativo_check_writer(MyWriter, {"path": str(tmp_path)})

Each runs the checks and fails the test with the report (every check, the failed ones
with their first differing rows) when one fails; it returns the report otherwise.
``--dativo-budget SECONDS`` and ``--dativo-max-rows N`` change the limits for a session.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from dativo_bridge.testkit.report import Report


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("dativo", "Dativo conformance suite")
    group.addoption(
        "--dativo-budget",
        type=float,
        default=60.0,
        help="seconds after which the suite starts no further check (default 60)",
    )
    group.addoption(
        "--dativo-max-rows",
        type=int,
        default=10_000,
        help="rows the reader checks read per stream (default 10000)",
    )


def _finish(report: Report) -> Report:
    if not report.ok:
        pytest.fail(report.text(), pytrace=False)
    return report


@pytest.fixture
def dativo_check_reader(request: pytest.FixtureRequest) -> Callable[..., Report]:
    """``check(reader_cls, config, **options)``: run the reader checks; options as
    :func:`dativo_bridge.testkit.run_reader_checks` takes them."""
    from dativo_bridge.testkit import run_reader_checks

    def check(reader_cls: type, config: Mapping[str, Any], **options: Any) -> Report:
        options.setdefault("budget_seconds", request.config.getoption("--dativo-budget"))
        options.setdefault("max_rows", request.config.getoption("--dativo-max-rows"))
        return _finish(run_reader_checks(reader_cls, config, **options))

    return check


@pytest.fixture
def dativo_check_writer(request: pytest.FixtureRequest) -> Callable[..., Report]:
    """``check(writer_cls, config, **options)``: run the writer checks; options as
    :func:`dativo_bridge.testkit.run_writer_checks` takes them (``read_back=...``)."""
    from dativo_bridge.testkit import run_writer_checks

    def check(writer_cls: type, config: Mapping[str, Any], **options: Any) -> Report:
        options.setdefault("budget_seconds", request.config.getoption("--dativo-budget"))
        return _finish(run_writer_checks(writer_cls, config, **options))

    return check
