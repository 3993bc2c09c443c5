"""Stream maps and flattening on Arrow batches give what singer-sdk's own mapper gives.

Every construct is run twice on the same rows: through ``dativo_bridge.maps`` on an Arrow
batch, and through singer-sdk's ``PluginMapper`` on the rows as dicts (the batch's
``to_pylist()``, which is what the SDK's row path maps). The records must be equal; the
Arrow side must also keep each untouched property's exact type.
"""

from __future__ import annotations

import copy
import datetime as dt
import decimal
import hashlib
import logging
from typing import Any

import pyarrow as pa
import pytest
from singer_sdk.exceptions import StreamMapConfigError

from dativo_bridge.interfaces import StreamInfo
from dativo_bridge.maps import MapEvaluationError, StreamMaps, UnsupportedMap
from dativo_bridge.schema import JSON_TYPE, arrow_to_jsonschema

D = decimal.Decimal
NUMERIC = pa.decimal128(20, 4)
SCHEMA = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field("name", pa.string()),
        pa.field("price", NUMERIC),
        pa.field("qty", pa.int32()),
        pa.field("ratio", pa.float64()),
        pa.field("at", pa.timestamp("us")),
        pa.field("doc", JSON_TYPE),
        pa.field("flag", pa.bool_()),
    ]
)
ROWS: list[dict[str, Any]] = [
    {
        "id": 1,
        "name": "Ada",
        "price": D("12.3400"),
        "qty": 3,
        "ratio": 0.5,
        "at": dt.datetime(1, 1, 1),
        "doc": '{"a": 1}',
        "flag": True,
    },
    {
        "id": 2,
        "name": "",
        "price": D("99999999999999.9999"),
        "qty": 0,
        "ratio": -2.25,
        "at": dt.datetime(9999, 12, 31, 23, 59, 59, 999999),
        "doc": "null",
        "flag": False,
    },
    {
        "id": 3,
        "name": "Grace",
        "price": D("-0.0001"),
        "qty": -7,
        "ratio": 1e15 + 0.5,
        "at": dt.datetime(2024, 2, 29, 12),
        "doc": "[1, 2]",
        "flag": None,
    },
]
STREAM = StreamInfo("people", SCHEMA, ("id",))
BATCH = pa.RecordBatch.from_pylist(ROWS, schema=SCHEMA)


def sdk_records(config: dict[str, Any], info: StreamInfo, batch: pa.RecordBatch) -> dict:
    """singer-sdk's own mapper on the batch's rows: {alias: records}."""
    from singer_sdk.mapper import PluginMapper, RemoveRecordTransform

    mapper = PluginMapper(copy.deepcopy(config), logging.getLogger("test"))
    mapper.register_raw_stream_schema(
        info.name, arrow_to_jsonschema(info.schema), list(info.key_properties)
    )
    out: dict[str, list[dict[str, Any]]] = {}
    for stream_map in mapper.stream_maps[info.name]:
        if isinstance(stream_map, RemoveRecordTransform):
            continue
        records = [stream_map.transform(dict(row)) for row in batch.to_pylist()]
        out[stream_map.stream_alias] = [r for r in records if r is not None]
    return out


def arrow_records(config: dict[str, Any], info: StreamInfo, batch: pa.RecordBatch) -> dict:
    plan = StreamMaps(config).plan(info)
    return {out.name: out.apply(batch).to_pylist() for out in plan.outputs}


def outputs(config: dict[str, Any], info: StreamInfo = STREAM) -> dict[str, Any]:
    return {out.name: out for out in StreamMaps(config).plan(info).outputs}


def _null_structs_expanded(record: dict[str, Any], names: list[str], sep: str) -> dict:
    """singer-sdk's record with a null struct ``{"a": None}`` (a property its flattened
    schema does not have) written as its flattened children, as the Arrow path sends it
    (the one documented difference, docs/stream-maps.md)."""
    out: dict[str, Any] = {}
    for key, value in record.items():
        children = [n for n in names if n.startswith(key + sep)]
        if value is None and key not in names and children:
            out.update(dict.fromkeys(children))
        else:
            out[key] = value
    return {n: out[n] for n in names if n in out} | {k: v for k, v in out.items() if k not in names}


def assert_same(config: dict[str, Any], info: StreamInfo = STREAM, batch: Any = BATCH) -> dict:
    ours = arrow_records(config, info, batch)
    theirs = sdk_records(config, info, batch)
    sep = config.get("flattening_separator", "__")
    for name, out in outputs(config, info).items():
        names = out.info.schema.names
        theirs[name] = [_null_structs_expanded(r, names, sep) for r in theirs.get(name, [])]
        ours[name] = [{n: r[n] for n in names} for r in ours[name]]
    assert ours == theirs
    return ours


def test_no_maps_is_the_identity() -> None:
    maps = StreamMaps({})
    assert maps.is_identity
    (out,) = maps.plan(STREAM).outputs
    assert out.info.schema == SCHEMA
    assert out.apply(BATCH).equals(BATCH)
    assert not StreamMaps({"flattening_enabled": True, "flattening_max_depth": 1}).is_identity


def test_property_alias_keeps_the_exact_type_and_schema() -> None:
    config = {"stream_maps": {"people": {"cost": "price", "when": "at", "body": "_['doc']"}}}
    records = assert_same(config)
    assert [r["cost"] for r in records["people"]] == [r["price"] for r in ROWS]
    out = outputs(config)["people"]
    assert out.info.schema.field("cost").type == NUMERIC
    assert out.info.schema.field("when").type == pa.timestamp("us")
    assert out.info.schema.field("body").type == JSON_TYPE
    props = out.json_schema["properties"]
    assert props["cost"] == props["price"]
    assert props["cost"]["precision"] == 20 and props["cost"]["scale"] == 4
    assert props["when"]["x-arrow-type"] == "timestamp[us]"


@pytest.mark.parametrize("removed", [None, "__NULL__"])
def test_removing_properties(removed: str | None) -> None:
    config = {"stream_maps": {"people": {"price": removed, "doc": removed}}}
    assert_same(config)
    assert outputs(config)["people"].info.schema.names == [
        "id",
        "name",
        "qty",
        "ratio",
        "at",
        "flag",
    ]


def test_else_null_keeps_only_the_named_properties_and_the_keys() -> None:
    config = {"stream_maps": {"people": {"__else__": None, "id": "id", "cost": "price"}}}
    assert_same(config)
    out = outputs(config)["people"]
    assert out.info.schema.names == ["id", "cost"]
    assert out.info.key_properties == ("id",)


def test_removing_a_key_property_is_refused_as_the_sdk_refuses_it() -> None:
    with pytest.raises(StreamMapConfigError, match="Removing key property"):
        StreamMaps({"stream_maps": {"people": {"id": None}}}).plan(STREAM)


@pytest.mark.parametrize(
    ("alias", "expected"),
    [("customers", "customers"), ("__stream_name__ + '_v2'", "people_v2")],
)
def test_stream_alias(alias: str, expected: str) -> None:
    config = {"stream_maps": {"people": {"__alias__": alias, "price": None}}}
    assert set(assert_same(config)) == {expected}


@pytest.mark.parametrize(
    "rule", ["True", "name", "flag", "price", "not flag", "qty > 0 and name", "name or flag"]
)
def test_filter_keeps_the_rows_python_finds_true(rule: str) -> None:
    assert_same({"stream_maps": {"people": {"__filter__": rule}}})


def test_filter_and_key_properties() -> None:
    config = {
        "stream_maps": {
            "people": {"__filter__": "qty > 0 or name == 'Grace'", "__key_properties__": ["name"]}
        }
    }
    records = assert_same(config)
    assert [r["id"] for r in records["people"]] == [1, 3]
    assert outputs(config)["people"].info.key_properties == ("name",)


def test_source_copies_a_stream_and_null_removes_one() -> None:
    config = {
        "stream_maps": {
            "people": None,
            "people_copy": {"__source__": "people", "__else__": "__NULL__", "id": "id"},
            "people_names": {"__source__": "people", "who": "name.upper()"},
        }
    }
    records = assert_same(config)
    assert set(records) == {"people_copy", "people_names"}
    assert records["people_copy"] == [{"id": 1}, {"id": 2}, {"id": 3}]


def test_else_null_for_streams_drops_unmapped_streams_and_wildcards_match() -> None:
    other = StreamInfo("orders", SCHEMA, ("id",))
    config = {"stream_maps": {"__else__": None, "peo*": {"price": None}}}
    assert set(assert_same(config)) == {"people"}
    assert StreamMaps(config).plan(other).outputs == []


@pytest.mark.parametrize(
    "expression",
    [
        "id * 2 + 1",
        "qty - id",
        "id / 2",
        "ratio * 2",
        "price + 1",
        "price - price",
        "-qty",
        "qty >= 0",
        "0 < qty < 5",
        "name == 'Ada'",
        "name != None",
        "flag == None",
        "flag is None",
        "name is not None",
        "not flag",
        "not name",
        "flag and flag",
        "qty or id",
        "name or 'nobody'",
        "name and name + '!'",
        "'big' if price > 100 else 'small'",
        "name + '-' + str(id)",
        "str(price)",
        "str(flag)",
        "str(ratio)",
        "int(ratio)",
        "int(price)",
        "float(price)",
        "float(qty)",
        "bool(qty)",
        "md5(name)",
        "sha256(str(id))",
        "name.lower()",
        "name.replace('a', 'o')",
        "name.startswith('G')",
        "name in ('Ada', 'Grace')",
        "name not in ['Ada', None]",
        "qty in (3, 0)",
        "'a' in name",
        "'r' not in name",
        "record['name']",
        "_['qty'] + 1",
        "config['prefix'] + name",
        "config['nested']['n'] * id",
        "__stream_name__",
        "'constant'",
        "42",
        "None",
        "True",
    ],
)
def test_computed_property_equals_the_sdk(expression: str) -> None:
    config = {
        "stream_maps": {"people": {"out": expression, "price2": "price"}},
        "stream_map_config": {"prefix": "p-", "nested": {"n": 3}},
    }
    assert_same(config)


def test_self_is_the_property_being_mapped() -> None:
    assert_same({"stream_maps": {"people": {"qty": "self * 10", "name": "md5(self)"}}})


def test_integer_arithmetic_is_pythons_not_int32s() -> None:
    batch = pa.RecordBatch.from_pylist(
        [{"id": 1, "qty": 2**31 - 1, "ratio": 0.1}, {"id": 2, "qty": -(2**31)}], schema=SCHEMA
    )
    records = assert_same(
        {"stream_maps": {"people": {"a": "qty * 1000", "b": "-qty", "c": "qty + 1"}}},
        batch=batch,
    )
    assert records["people"][0]["a"] == (2**31 - 1) * 1000


def test_computed_properties_are_typed_from_arrow() -> None:
    config = {"stream_maps": {"people": {"a": "qty * 2", "b": "price + 1", "c": "str(id)"}}}
    schema = outputs(config)["people"].info.schema
    assert pa.types.is_integer(schema.field("a").type)
    assert schema.field("b").type == pa.decimal128(24, 4)
    assert schema.field("c").type == pa.string()


def test_md5_is_the_sdks_hash_of_the_text() -> None:
    records = assert_same({"stream_maps": {"people": {"h": "md5(name)"}}})
    assert records["people"][0]["h"] == hashlib.md5(b"Ada").hexdigest()


@pytest.mark.parametrize(
    ("expression", "batch"),
    [
        ("name + '!'", pa.RecordBatch.from_pylist([{"id": 1, "name": None}], schema=SCHEMA)),
        ("qty + 1", pa.RecordBatch.from_pylist([{"id": 1, "qty": None}], schema=SCHEMA)),
        ("qty < 1", pa.RecordBatch.from_pylist([{"id": 1, "qty": None}], schema=SCHEMA)),
        ("md5(name)", pa.RecordBatch.from_pylist([{"id": 1, "name": None}], schema=SCHEMA)),
        ("id / qty", pa.RecordBatch.from_pylist([{"id": 1, "qty": 0}], schema=SCHEMA)),
        ("int(name)", pa.RecordBatch.from_pylist([{"id": 1, "name": "x"}], schema=SCHEMA)),
    ],
)
def test_an_expression_that_fails_in_python_fails_here(expression: str, batch: Any) -> None:
    config = {"stream_maps": {"people": {"out": expression}}}
    with pytest.raises(Exception):  # noqa: B017 - the SDK raises Python's own error
        sdk_records(config, STREAM, batch)
    (out,) = StreamMaps(config).plan(STREAM).outputs
    with pytest.raises(MapEvaluationError, match="people"):
        out.apply(batch)


def test_the_right_operand_is_evaluated_only_where_python_does() -> None:
    batch = pa.RecordBatch.from_pylist(
        [{"id": 1, "name": None}, {"id": 2, "name": "x"}], schema=SCHEMA
    )
    assert_same({"stream_maps": {"people": {"out": "name and name + '!'"}}}, batch=batch)
    assert_same(
        {"stream_maps": {"people": {"out": "name + '!' if name is not None else None"}}},
        batch=batch,
    )
    assert_same({"stream_maps": {"people": {"out": "name + '?' if name else 'none'"}}}, batch=batch)


@pytest.mark.parametrize(
    "expression",
    [
        "datetime.datetime.now()",
        "fake.name()",
        "json.dumps(doc)",
        "qty // 2",
        "qty % 2",
        "qty ** 2",
        "price / 2",
        "price + ratio",
        "price * qty",
        "flag and qty",
        "name is not None and name + '!'",
        "at > '2020-01-01'",
        "str(at)",
        "name[0]",
        "name in ('Ada', 1)",
        "name in other_names",
        "flag in (True,)",
        "[id, qty]",
        "missing_property",
        "config['absent']",
        "record",
        "x = 1",
    ],
)
def test_what_arrow_cannot_do_is_reported_with_the_stream_and_expression(expression: str) -> None:
    with pytest.raises(UnsupportedMap) as caught:
        StreamMaps({"stream_maps": {"people": {"out": expression}}}).plan(STREAM)
    assert caught.value.stream == "people"
    assert caught.value.expression == expression
    assert "people" in str(caught.value) and expression in str(caught.value)


NESTED = pa.schema(
    [
        pa.field("id", pa.int64(), nullable=False),
        pa.field(
            "addr",
            pa.struct(
                [
                    ("city", pa.string()),
                    ("zip", NUMERIC),
                    ("geo", pa.struct([("lat", pa.float64()), ("seen", pa.timestamp("us"))])),
                ]
            ),
        ),
        pa.field("tags", pa.list_(pa.string())),
        pa.field("amounts", pa.list_(NUMERIC)),
    ]
)
NESTED_ROWS = [
    {
        "id": 1,
        "addr": {"city": "Zürich", "zip": D("8000.0000"), "geo": {"lat": 47.4, "seen": None}},
        "tags": ["a", "é"],
        "amounts": [D("1.5000"), None],
    },
    {"id": 2, "addr": {"city": None, "zip": None, "geo": None}, "tags": [], "amounts": None},
]
NESTED_STREAM = StreamInfo("places", NESTED, ("id",))
NESTED_BATCH = pa.RecordBatch.from_pylist(NESTED_ROWS, schema=NESTED)


@pytest.mark.parametrize("depth", [1, 2, 3])
def test_flattening_equals_the_sdk_and_keeps_leaf_types(depth: int) -> None:
    config = {"flattening_enabled": True, "flattening_max_depth": depth}
    assert_same(config, NESTED_STREAM, NESTED_BATCH)
    schema = outputs(config, NESTED_STREAM)["places"].info.schema
    assert schema.field("addr__zip").type == NUMERIC
    assert schema.field("tags").type == pa.string()
    if depth == 1:
        assert schema.field("addr__geo").type == pa.string()
    else:
        assert schema.field("addr__geo__seen").type == pa.timestamp("us")


def test_flattened_names_follow_the_sdks_separator_and_key_length() -> None:
    config = {
        "flattening_enabled": True,
        "flattening_max_depth": 2,
        "flattening_separator": ".",
        "flattening_max_key_length": 10,
    }
    # (row 0: a null struct's shortened name is not its children's prefix)
    records = assert_same(config, NESTED_STREAM, NESTED_BATCH.slice(0, 1))
    assert "add.geo.lat" in records["places"][0]


def test_maps_then_flattening() -> None:
    config = {
        "stream_maps": {"places": {"where": "addr", "addr": None, "n": "id + 1"}},
        "flattening_enabled": True,
        "flattening_max_depth": 1,
    }
    assert_same(config, NESTED_STREAM, NESTED_BATCH)
    assert "where__city" in outputs(config, NESTED_STREAM)["places"].info.schema.names


def test_a_null_struct_flattens_to_null_children() -> None:
    # Documented difference: singer-sdk sends {"addr": null} (a property its flattened
    # schema does not have); the Arrow path sends each flattened child as null.
    batch = pa.RecordBatch.from_pylist([{"id": 9, "addr": None}], schema=NESTED)
    config = {"flattening_enabled": True, "flattening_max_depth": 1}
    (row,) = arrow_records(config, NESTED_STREAM, batch)["places"]
    assert row == {
        "id": 9,
        "addr__city": None,
        "addr__zip": None,
        "addr__geo": None,
        "tags": None,
        "amounts": None,
    }


def test_from_mapper_restores_the_else_the_sdk_took_out() -> None:
    from singer_sdk.mapper import PluginMapper

    config = {"stream_maps": {"__else__": None, "people": {"price": None}}}
    mapper = PluginMapper(config, logging.getLogger("test"))
    assert "__else__" not in config["stream_maps"]  # the SDK's mapper popped it
    maps = StreamMaps.from_mapper(mapper)
    assert maps.plan(StreamInfo("orders", SCHEMA, ("id",))).outputs == []
    assert [o.name for o in maps.plan(STREAM).outputs] == ["people"]


def test_a_map_that_leaves_no_property_is_left_to_the_sdk() -> None:
    info = StreamInfo("people", SCHEMA, ())
    with pytest.raises(UnsupportedMap, match="no property"):
        StreamMaps({"stream_maps": {"people": {"__else__": None}}}).plan(info)


def test_the_config_given_is_not_modified() -> None:
    config = {"stream_maps": {"__else__": None, "people": {"price": None}}}
    StreamMaps(config).plan(STREAM)
    assert config == {"stream_maps": {"__else__": None, "people": {"price": None}}}


def test_a_struct_child_is_read_as_singer_sdk_reads_a_dict() -> None:
    config = {
        "stream_maps": {
            "places": {
                "city": "record['addr']['city']",
                "zip": "addr['zip']",
                "lat2": "_['addr']['geo']['lat'] * 2",
            }
        }
    }
    first = NESTED_BATCH.slice(0, 1)
    records = assert_same(config, NESTED_STREAM, first)
    assert records["places"][0]["lat2"] == 94.8
    schema = outputs(config, NESTED_STREAM)["places"].info.schema
    assert schema.field("zip").type == NUMERIC  # the child's exact type
    # row 2's geo is None: Python fails on None['lat'], and so does the Arrow path
    with pytest.raises(TypeError):
        sdk_records(config, NESTED_STREAM, NESTED_BATCH)
    (out,) = StreamMaps(config).plan(NESTED_STREAM).outputs
    with pytest.raises(MapEvaluationError, match="'lat' is read"):
        out.apply(NESTED_BATCH)


def test_mapped_streams_keep_the_readers_row_estimate() -> None:
    """The progress display's % and ETA come from SchemaEvent.expected_rows: a stream
    alias or a copy must not drop it."""
    from dativo_bridge.events import SchemaEvent
    from dativo_bridge.maps import map_events

    config = {"stream_maps": {"people": {"__alias__": "persons"}, "copy": {"__source__": "people"}}}
    events = list(map_events(iter([SchemaEvent(STREAM, 1234)]), StreamMaps(config)))
    assert {e.stream.name: e.expected_rows for e in events} == {"persons": 1234, "copy": 1234}
