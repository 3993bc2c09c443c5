"""Schemas: declared, or inferred once from the first page and then fixed; records that do
not fit are an error naming stream, record and property, or go to the dead-letter file."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from dativo_bridge.errors import ConfigError, DativoError
from dativo_bridge.schema import JSON_TYPE
from tap_dativo_rest.records import infer_property

from .common import SERVER, config, read_all, stream
from .server import make_order

pytestmark = pytest.mark.integration

INFERRED = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        ("updated_at", pa.timestamp("us", tz="UTC")),
        ("amount", pa.float64()),
        ("status", pa.string()),
        ("paid", pa.bool_()),
        ("tags", pa.list_(pa.string())),
        ("customer", JSON_TYPE),
        ("note", pa.string()),
    ]
)


def _inferred(path: str = "/all", **settings: Any) -> dict[str, Any]:
    return {**stream(path, **settings), "schema": None}


def test_schema_is_inferred_once_from_the_first_page() -> None:
    before = len(SERVER.state.requests_to("/all"))
    result = read_all(config(_inferred()))
    assert result.streams[0].schema == INFERRED
    assert len(SERVER.state.requests_to("/all")) - before == 2  # the sample, then the read
    row = result.table().to_pylist()[0]
    assert row["updated_at"].isoformat() == "2024-01-01T01:00:00+00:00"
    assert json.loads(row["customer"]) == {"name": "customer 1", "vip": False}
    assert row["tags"] == ["t1"]


def _drift_dataset() -> str:
    records = [make_order(i) for i in range(1, 9)]
    records[4]["coupon"] = "SPRING"  # a property the first page did not have
    records[5]["amount"] = "12.50"  # a string where the sample had numbers
    SERVER.state.set_dataset("drift", records)
    return "drift"


def _drift_config(**settings: Any) -> dict[str, Any]:
    pagination = {"type": "cursor", "next_path": "$.next_cursor", "param": "cursor"}
    params = {"ds": _drift_dataset(), "limit": 4}
    return config(_inferred("/cursor", params=params, pagination=pagination), **settings)


def test_inferred_schema_is_fixed_and_a_misfit_is_an_error() -> None:
    with pytest.raises(DativoError) as failure:
        read_all(_drift_config())
    message = str(failure.value)
    assert message.startswith("stream 'orders', record index 5, page 2 (GET http://127.0.0.1:")
    assert (
        "property 'amount': value \"12.50\" does not fit type double (expected number)" in message
    )
    assert "dead_letter_path" in message


def test_dead_letter_file_takes_the_misfits_and_the_read_goes_on(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    dead = tmp_path / "dead" / "letters.jsonl"
    with caplog.at_level(logging.WARNING, logger="dativo.rest"):
        result = read_all(_drift_config(dead_letter_path=str(dead)))
    assert result.ids() == [1, 2, 3, 4, 5, 7, 8]
    assert "coupon" not in result.table().column_names
    assert "properties not in the schema, which are dropped: coupon" in caplog.text
    assert "1 record(s) did not fit the schema" in caplog.text
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert letters == [
        {
            "stream": "orders",
            "record": {**make_order(6), "amount": "12.50"},
            "reason": "record index 5: property 'amount': value \"12.50\" does not fit type "
            "double (expected number)",
        }
    ]


BAD_RECORDS: list[tuple[Any, str]] = [
    ({**make_order(2), "id": "two"}, "property 'id': value \"two\" does not fit type int64"),
    (
        {k: v for k, v in make_order(3).items() if k != "id"},
        "property 'id': key property has no value",
    ),
    (
        {**make_order(4), "updated_at": "yesterday"},
        "property 'updated_at': value \"yesterday\" does not fit type timestamp[us, tz=UTC]",
    ),
    (
        {k: v for k, v in make_order(5).items() if k != "updated_at"},
        "property 'updated_at': no value for a property that is not nullable",
    ),
    (42, "record is not a JSON object: 42"),
    (
        {**make_order(6), "customer": {"name": "x", "vip": "yes"}},
        "property 'customer.vip': value \"yes\" does not fit type bool",
    ),
    ({**make_order(7), "tags": ["a", 1]}, "property 'tags[]': value 1 does not fit type string"),
]


def test_declared_schema_misfits_each_get_a_reason(tmp_path: Path) -> None:
    SERVER.state.set_dataset("bad", [make_order(1), *(r for r, _ in BAD_RECORDS), make_order(8)])
    params = {"ds": "bad", "sort": "none"}
    with pytest.raises(
        DativoError, match=r"record index 1, page 1 .*: property 'id': value \"two\""
    ):
        read_all(config(stream("/all", params=params)))

    dead = tmp_path / "dead.jsonl"
    result = read_all(config(stream("/all", params=params), dead_letter_path=str(dead)))
    assert result.ids() == [1, 8]
    letters = [json.loads(line) for line in dead.read_text().splitlines()]
    assert [letter["record"] for letter in letters] == [r for r, _ in BAD_RECORDS]
    for index, (letter, (_, reason)) in enumerate(zip(letters, BAD_RECORDS, strict=True), 1):
        assert letter["stream"] == "orders"
        assert letter["reason"].startswith(f"record index {index}: {reason}"), letter["reason"]


def test_inference_needs_records_on_the_first_page() -> None:
    SERVER.state.set_dataset("empty", [])
    with pytest.raises(
        DativoError, match=r"cannot infer a schema, the first page of .* has no records"
    ):
        read_all(config(_inferred(params={"ds": "empty"})))


def test_keys_must_be_schema_properties() -> None:
    with pytest.raises(
        ConfigError, match="'updated' \\(a primary or replication key\\) is not a property"
    ):
        read_all(config(stream("/all", replication_key="updated")))
    with pytest.raises(ConfigError, match="give a 'schema' or set 'infer_schema': true"):
        read_all(config({**_inferred(), "infer_schema": False}))


@pytest.mark.parametrize(
    ("values", "expected"),
    [
        ([1, None, 3], {"type": ["integer", "null"]}),
        ([1, 2.5], {"type": ["number", "null"]}),
        ([True, False], {"type": ["boolean", "null"]}),
        (["2024-02-29", "2024-03-01"], {"type": ["string", "null"], "format": "date"}),
        (
            ["2024-02-29T10:00:00Z", "2024-03-01T10:00:00.123+02:00"],
            {"type": ["string", "null"], "format": "date-time"},
        ),
        (["2024-02-29T10:00:00Z", "not a date"], {"type": ["string", "null"]}),
        ([[1, 2], [3]], {"type": ["array", "null"], "items": {"type": ["integer", "null"]}}),
        ([1, "one"], {"type": ["object", "array", "string", "number", "boolean", "null"]}),
        ([None, None], {"type": ["object", "array", "string", "number", "boolean", "null"]}),
        ([{"a": 1}], {"type": ["object", "null"]}),
    ],
)
def test_inference_rules(values: list[Any], expected: dict[str, Any]) -> None:
    assert infer_property(values) == expected
