"""Malformed Singer messages: each a DecodeError naming the line and what was expected.

Fed both line by line (text input) and in blocks (binary input, where the Rust scanner
routes runs of RECORD lines when ``dativo_accel`` is installed).
"""

from __future__ import annotations

import io
import json
from typing import Any

import pyarrow as pa
import pytest

from dativo_bridge.codecs.decode import MAX_NESTING, RecordDecoder
from dativo_bridge.codecs.messages import SingerInput
from dativo_bridge.errors import DecodeError
from dativo_bridge.schema import jsonschema_to_arrow

SCHEMA = {
    "type": "object",
    "properties": {
        "id": {"type": "integer"},
        "o": {"type": ["object", "null"], "properties": {"c": {"type": ["integer", "null"]}}},
        "j": {"type": ["object", "null"]},
    },
}
GOOD = '{"type":"RECORD","stream":"s","record":{"id":1}}\n'


def schema_line(**changes: Any) -> str:
    message = {"type": "SCHEMA", "stream": "s", "schema": SCHEMA, "key_properties": ["id"]}
    return json.dumps({**message, **changes}) + "\n"


class _Writers:
    def __init__(self) -> None:
        self.states: list[Any] = []
        self.rows = 0

    def schema(self, info: Any) -> None:
        pass

    def write(self, stream: str, batch: pa.RecordBatch) -> None:
        self.rows += batch.num_rows

    def state(self, value: Any) -> None:
        self.states.append(value)


def feed(data: bytes, binary: bool) -> _Writers:
    writers = _Writers()
    source: Any = (
        io.BytesIO(data) if binary else io.StringIO(data.decode("utf-8", "surrogateescape"))
    )
    SingerInput(writers).process(source)  # type: ignore[arg-type]
    return writers


DEEP_ARRAY = "[" * 100_000 + "]" * 100_000
DEEP_OBJECT = '{"c":' * 100_000 + "1" + "}" * 100_000
CASES = {
    "key_properties not a list": (schema_line(key_properties="id"), "key_properties"),
    "key_properties not strings": (schema_line(key_properties=[1]), "key_properties"),
    "key property not in the schema": (schema_line(key_properties=["nope"]), "'nope'"),
    "bookmark_properties not a list": (schema_line(bookmark_properties="id"), "bookmark"),
    "stream twice in a RECORD": (
        '{"type":"RECORD","stream":"s","stream":"t","record":{"id":1}}\n',
        "'stream' given twice",
    ),
    "stream twice, after the record": (
        '{"type":"RECORD","stream":"s","record":{"id":1},"stream":"t"}\n',
        "'stream' given twice",
    ),
    "record twice": (
        '{"type":"RECORD","stream":"s","record":{"id":1},"record":{"id":2}}\n',
        "'record' given twice",
    ),
    "property twice": ('{"type":"RECORD","stream":"s","record":{"id":1,"id":2}}\n', "twice"),
    "undeclared property twice": (
        '{"type":"RECORD","stream":"s","record":{"id":1,"z":1,"z":2}}\n',
        "twice",
    ),
    "nested property twice": (
        '{"type":"RECORD","stream":"s","record":{"id":1,"o":{"c":1,"c":2}}}\n',
        "twice",
    ),
    "stream twice in a SCHEMA": (
        schema_line().replace('"stream": "s"', '"stream": "s", "stream": "t"'),
        "'stream' given twice",
    ),
    "STATE without value": ('{"type":"STATE"}\n', "no 'value'"),
    "STATE value not an object": ('{"type":"STATE","value":[1]}\n', "not an object"),
    "STATE value null": ('{"type":"STATE","value":null}\n', "not an object"),
    "key twice in a STATE": ('{"type":"STATE","value":{"a":1,"a":2}}\n', "'a' given twice"),
    "deep array in a record": (
        '{"type":"RECORD","stream":"s","record":{"id":1,"z":' + DEEP_ARRAY + "}}\n",
        f"deeper than {MAX_NESTING}",
    ),
    "deep object in a struct": (
        '{"type":"RECORD","stream":"s","record":{"id":1,"o":' + DEEP_OBJECT + "}}\n",
        f"deeper than {MAX_NESTING}",
    ),
    "deep JSON-text value": (
        '{"type":"RECORD","stream":"s","record":{"id":1,"j":' + DEEP_OBJECT + "}}\n",
        f"deeper than {MAX_NESTING}",
    ),
    "deep STATE": ('{"type":"STATE","value":' + DEEP_OBJECT + "}\n", f"deeper than {MAX_NESTING}"),
}


@pytest.mark.parametrize("binary", [True, False], ids=["blocks", "lines"])
@pytest.mark.parametrize("case", list(CASES), ids=list(CASES))
def test_malformed_message_names_the_line(case: str, binary: bool) -> None:
    line, expected = CASES[case]
    head = "" if line.startswith('{"type": "SCHEMA"') else schema_line() + GOOD
    data = (head + line + GOOD).encode()
    with pytest.raises(DecodeError) as info:
        feed(data, binary)
    assert info.value.line_number == head.count("\n") + 1, str(info.value)
    assert expected in str(info.value)
    assert info.value.expected, str(info.value)


@pytest.mark.parametrize("binary", [True, False], ids=["blocks", "lines"])
def test_invalid_utf8_in_a_property_name(binary: bool) -> None:
    bad = b'{"type":"RECORD","stream":"s","record":{"id":1,"\xff":2}}\n'
    with pytest.raises(DecodeError, match="invalid UTF-8") as info:
        feed((schema_line() + GOOD).encode() + bad, binary)
    assert info.value.line_number == 3
    bad_schema = schema_line().encode().replace(b'"id": {', b'"i\xffd": {', 1)
    with pytest.raises(DecodeError, match="invalid UTF-8") as info:
        feed(bad_schema, binary)
    assert info.value.line_number == 1


def test_good_messages_still_pass() -> None:
    state = '{"type":"STATE","value":{"bookmarks":{}}}\n'
    nested = '{"type":"RECORD","stream":"s","record":{"id":2,"o":{"c":1},"j":{"a":1,"a":2}}}\n'
    writers = feed((schema_line() + GOOD + nested + state).encode(), True)
    assert (writers.rows, writers.states) == (2, [{"bookmarks": {}}])


@pytest.mark.parametrize("accelerate", [True, False], ids=["rust", "python"])
def test_decoder_refuses_deep_nesting_and_duplicates(accelerate: bool) -> None:
    d = RecordDecoder("s", jsonschema_to_arrow(SCHEMA), ["id"], accelerate=accelerate)
    deep = b'{"record":{"id":1,"z":' + DEEP_ARRAY.encode() + b"}}"
    with pytest.raises(DecodeError, match="deeper") as info:
        d.decode([GOOD.encode(), deep], [5, 6])
    assert info.value.line_number == 6
    with pytest.raises(DecodeError, match="twice") as info:
        d.decode([GOOD.encode(), b'{"stream":"a","stream":"b","record":{"id":1}}'], [5, 6])
    assert info.value.line_number == 6
    with pytest.raises(Exception, match="not in the schema"):
        RecordDecoder("s", jsonschema_to_arrow(SCHEMA), ["nope"], accelerate=accelerate)


@pytest.mark.parametrize("accelerate", [False, True])
def test_a_duplicate_key_before_malformed_json_is_a_decode_error(accelerate: bool) -> None:
    """The duplicate-key hook fires on the inner object before the parser reaches the
    broken number: still one DecodeError naming the line (was a bare JSONDecodeError)."""
    schema = pa.schema([("id", pa.int64(), False), ("v", pa.list_(pa.int32()))])
    decoder = RecordDecoder("s", schema, ["id"], accelerate=accelerate)
    line = b'{"type":"RECORD","record":{"id":1,"v":[{"a":1,"a":2}],"w":-01}}\n'
    with pytest.raises(DecodeError, match="malformed JSON") as caught:
        decoder.decode([line], [7])
    assert "line 7" in str(caught.value)
