"""A records_path that matches nothing on every page is a warning naming the stream and the
path (once per stream), or an error with require_records_path; an empty array at the path
is an empty stream, not a warning."""

from __future__ import annotations

import logging

import pytest

from dativo_bridge.errors import DativoError

from .common import config, read_all, stream

PAGED = {"type": "page", "param": "page", "size_param": "per_page", "size": 10}


def _warnings(caplog: pytest.LogCaptureFixture) -> list[str]:
    return [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]


def test_a_path_that_matches_nothing_warns_once_naming_stream_and_path(
    caplog: pytest.LogCaptureFixture,
) -> None:
    cfg = config(stream("/page", records_path="$.results[*]", pagination=PAGED))
    with caplog.at_level(logging.WARNING, logger="dativo.rest"):
        read = read_all(cfg)
    assert read.table().num_rows == 0
    [warning] = [w for w in _warnings(caplog) if "records_path" in w]
    assert "stream 'orders'" in warning
    assert "$.results[*]" in warning
    assert "matched nothing" in warning


def test_require_records_path_makes_it_an_error() -> None:
    cfg = config(stream("/page", records_path="$.results[*]", pagination=PAGED))
    cfg["require_records_path"] = True
    with pytest.raises(DativoError, match=r"stream 'orders': records_path \$\.results\[\*\]"):
        read_all(cfg)


def test_the_stream_setting_wins_over_the_global_one(caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(
        stream(
            "/page",
            records_path="$.results[*]",
            pagination=PAGED,
            require_records_path=False,
        ),
        require_records_path=True,
    )
    with caplog.at_level(logging.WARNING, logger="dativo.rest"):
        read_all(cfg)
    assert any("matched nothing" in w for w in _warnings(caplog))


def test_an_empty_array_at_the_path_is_an_empty_stream(caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(stream("/page", params={"ds": "no-such-rows"}, pagination=PAGED))
    cfg["require_records_path"] = True
    with caplog.at_level(logging.WARNING, logger="dativo.rest"):
        read = read_all(cfg)
    assert read.table().num_rows == 0
    assert not [w for w in _warnings(caplog) if "records_path" in w]


def test_a_path_that_matches_rows_does_not_warn(caplog: pytest.LogCaptureFixture) -> None:
    cfg = config(stream("/page", pagination=PAGED))
    with caplog.at_level(logging.WARNING, logger="dativo.rest"):
        read = read_all(cfg)
    assert read.table().num_rows > 0
    assert not [w for w in _warnings(caplog) if "records_path" in w]
