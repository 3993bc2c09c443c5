"""Every pagination style end to end against the local server: all rows, in order, in the
expected pages, with the expected requests."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pyarrow as pa
import pytest

from dativo_bridge.errors import ConfigError, DativoError
from dativo_bridge.schema import jsonschema_to_arrow

from .common import SERVER, config, read_all, stream
from .server import ORDERS_SCHEMA, make_order

pytestmark = pytest.mark.integration

ALL_IDS = list(range(1, 26))

# (stream settings, rows per batch, how the pages were requested)
STYLES: dict[str, tuple[dict[str, Any], list[int], list[dict[str, str]]]] = {
    "none": (
        {"path": "/all", "pagination": {"type": "none"}},
        [25],
        [{}],
    ),
    "page_until_empty": (
        {"path": "/page", "pagination": {"type": "page"}},
        [10, 10, 5, 0],
        [{"page": "1"}, {"page": "2"}, {"page": "3"}, {"page": "4"}],
    ),
    "page_until_short": (
        {
            "path": "/page",
            "pagination": {"type": "page", "start": 1, "size_param": "per_page", "size": 10},
        },
        [10, 10, 5],
        [{"page": str(p), "per_page": "10"} for p in (1, 2, 3)],
    ),
    "offset_until_short": (
        {
            "path": "/offset",
            "records_path": "$.items[*]",
            "pagination": {"type": "offset", "limit": 10},
        },
        [10, 10, 5],
        [{"offset": str(o), "limit": "10"} for o in (0, 10, 20)],
    ),
    "offset_until_total": (
        {
            "path": "/offset",
            "records_path": "$.items[*]",
            "pagination": {
                "type": "offset",
                "param": "offset",
                "limit_param": "limit",
                "limit": 5,
                "total_path": "$.total",
            },
        },
        [5, 5, 5, 5, 5],  # stops at total=25 without asking for an empty sixth page
        [{"offset": str(o), "limit": "5"} for o in (0, 5, 10, 15, 20)],
    ),
    "cursor": (
        {
            "path": "/cursor",
            "params": {"limit": 10},
            "pagination": {"type": "cursor", "next_path": "$.next_cursor", "param": "cursor"},
        },
        [10, 10, 5],
        [{"limit": "10"}, {"limit": "10", "cursor": "MTA="}, {"limit": "10", "cursor": "MjA="}],
    ),
    "link_header": (
        {"path": "/link", "records_path": "$[*]", "pagination": {"type": "link"}},
        [10, 10, 5],
        [{}, {"page": "2"}, {"page": "3"}],
    ),
    "next_url_relative": (
        {
            "path": "/next_url",
            "records_path": "$.results[*]",
            "pagination": {"type": "next_url", "next_path": "$.links.next"},
        },
        [10, 10, 5],
        [{}, {"page": "2"}, {"page": "3"}],
    ),
}


@pytest.mark.parametrize("style", list(STYLES))
def test_pagination_style_reads_every_record_once(style: str) -> None:
    settings, sizes, queries = STYLES[style]
    ds = f"pag-{style}"
    SERVER.state.set_dataset(ds, [make_order(i) for i in ALL_IDS])
    params = {**settings.get("params", {}), "ds": ds}
    result = read_all(config(stream(**{**settings, "params": params})))

    assert [b.num_rows for b in result.batches["orders"]] == sizes
    assert result.ids() == ALL_IDS
    sent = [r.query for r in SERVER.state.log if r.query.get("ds") == ds]
    assert [{k: v for k, v in q.items() if k != "ds"} for q in sent] == queries


def test_batches_have_the_declared_arrow_schema_and_values() -> None:
    result = read_all(config(stream("/all")))
    expected = jsonschema_to_arrow(ORDERS_SCHEMA)
    assert result.streams[0].schema == expected
    table = result.table()
    assert table.schema.field("updated_at").type == pa.timestamp("us", tz="UTC")
    assert table.schema.field("customer").type == pa.struct(
        [("name", pa.string()), ("vip", pa.bool_())]
    )
    row = table.slice(3, 1).to_pylist()[0]  # order 4
    assert row == {
        **make_order(4),
        "updated_at": dt.datetime(2024, 1, 1, 4, tzinfo=dt.UTC),
    }


def test_link_and_next_url_keep_params_resend_the_first_request_params() -> None:
    # The server's next links carry the query, so keep_params must not duplicate them.
    settings = {"type": "next_url", "next_path": "$.links.next", "keep_params": True}
    result = read_all(
        config(
            stream(
                "/next_url",
                records_path="$.results[*]",
                params={"per_page": 20},
                pagination=settings,
            )
        )
    )
    assert result.ids() == ALL_IDS
    assert [b.num_rows for b in result.batches["orders"]] == [20, 5]


def test_a_repeated_cursor_stops_with_an_error_instead_of_looping() -> None:
    cfg = config(
        stream(
            "/same_cursor",
            pagination={"type": "cursor", "next_path": "$.next_cursor", "param": "cursor"},
        )
    )
    with pytest.raises(DativoError, match="same cursor 'again' twice"):
        read_all(cfg)
    assert len(SERVER.state.requests_to("/same_cursor")) == 2


@pytest.mark.parametrize(
    ("pagination", "message"),
    [
        ({"type": "cursor", "param": "cursor"}, "needs 'next_path'"),
        ({"type": "cursor", "next_path": "$.next"}, "needs 'param'"),
        ({"type": "scroll"}, "unknown pagination type 'scroll'"),
    ],
)
def test_incomplete_pagination_settings_are_config_errors(
    pagination: dict[str, Any], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        read_all(config(stream("/all", pagination=pagination)))
