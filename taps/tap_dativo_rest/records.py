"""Records -> Arrow: schema inference from a sample, and page-to-batch conversion that
validates every value against the stream's Arrow schema, with dead letters."""

from __future__ import annotations

import json
import logging
import re
import threading
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import IO, Any

import orjson
import pyarrow as pa

from dativo_bridge.codecs.values import (
    BadValue,
    batch_from_columns,
    expected_type,
    value_converter,
)
from dativo_bridge.errors import ReadError
from dativo_bridge.schema import ANY_JSON_TYPES, json_type_of

logger = logging.getLogger("dativo.rest")

_DATE_TIME = re.compile(
    r"^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}(:\d{2}(\.\d{1,9})?)?(Z|[+-]\d{2}:?\d{2})?$"
)
_DATE = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_TIMESTAMP_CHECK = value_converter(pa.timestamp("us", tz="UTC"), "sample")
_DATE_CHECK = value_converter(pa.date32(), "sample")


def _kind(value: Any) -> str:
    kind = json_type_of(value)
    return "any" if kind == "null" else kind


def _all_parse(values: Iterable[str], pattern: re.Pattern[str], check: Any) -> bool:
    try:
        return all(pattern.match(v) and check(v) is not None for v in values)
    except BadValue:
        return False


def infer_property(values: Sequence[Any]) -> dict[str, Any]:
    """A nullable JSON Schema for a property from sample values (see docs/rest-tap.md).

    Booleans, integers, numbers (integers mixed with floats too) and strings map to their
    JSON Schema type; strings that all look like ISO 8601 date-times or dates get that
    format; arrays get ``items`` inferred from all their elements; objects, mixed types
    and properties only ever null in the sample become free-form JSON.
    """
    present = [v for v in values if v is not None]
    kinds = {_kind(v) for v in present}
    if not kinds or "any" in kinds:
        return {"type": list(ANY_JSON_TYPES)}
    if kinds == {"boolean"}:
        return {"type": ["boolean", "null"]}
    if kinds == {"integer"}:
        return {"type": ["integer", "null"]}
    if kinds <= {"integer", "number"}:
        return {"type": ["number", "null"]}
    if kinds == {"string"}:
        prop: dict[str, Any] = {"type": ["string", "null"]}
        if _all_parse(present, _DATE_TIME, _TIMESTAMP_CHECK):
            prop["format"] = "date-time"
        elif _all_parse(present, _DATE, _DATE_CHECK):
            prop["format"] = "date"
        return prop
    if kinds == {"array"}:
        items = [item for value in present for item in value]
        return {"type": ["array", "null"], "items": infer_property(items)}
    if kinds == {"object"}:
        return {"type": ["object", "null"]}
    return {"type": list(ANY_JSON_TYPES)}


def infer_jsonschema(
    records: Sequence[Mapping[str, Any]], key_properties: Sequence[str] = ()
) -> dict[str, Any]:
    """A JSON Schema for records like ``records``: properties in first-seen order, every
    property nullable except the key properties.

    Raises:
        ReadError: If the sample has no records or no properties.
    """
    names: dict[str, None] = {}
    for record in records:
        for name in record:
            names.setdefault(name, None)
    if not names:
        raise ReadError("the sample has no records (or only empty ones) to infer a schema from")
    props: dict[str, Any] = {}
    for name in names:
        prop = infer_property([r.get(name) for r in records])
        if name in key_properties and isinstance(prop["type"], list) and len(prop["type"]) == 2:
            prop["type"] = prop["type"][0]
        props[name] = prop
    return {"type": "object", "properties": props}


class DeadLetters:
    """Appends rejected records to a JSON-lines file: ``{"stream", "record", "reason"}``."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        self.count = 0
        self._fh: IO[bytes] | None = None
        self._lock = threading.Lock()

    def write(self, stream: str, record: Any, reason: str) -> None:
        """Append one rejected record."""
        line = {"stream": stream, "record": record, "reason": reason}
        try:
            data = orjson.dumps(line)
        except TypeError:  # e.g. integers beyond 64 bits
            data = json.dumps(line, ensure_ascii=False).encode()
        with self._lock:
            if self._fh is None:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                self._fh = open(self.path, "ab")  # noqa: SIM115 - kept open across pages
            self._fh.write(data + b"\n")
            self._fh.flush()
            self.count += 1

    def close(self) -> None:
        """Close the file."""
        if self._fh is not None:
            self._fh.close()
            self._fh = None


def _shown(value: Any) -> str:
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


class BatchBuilder:
    """Builds one Arrow batch of ``schema`` per page of records.

    A record fits when it is a JSON object, every key property has a value, every
    non-nullable property has a value, and each value fits its Arrow type. Properties
    not in the schema are dropped (with one warning per stream).

    Args:
        stream: Stream name, for messages.
        schema: The Arrow schema of the batches (may be a column subset).
        key_properties: Properties that must have a value.
        dead_letters: Where records that do not fit go; None makes them an error.
    """

    def __init__(
        self,
        stream: str,
        schema: pa.Schema,
        key_properties: Sequence[str] = (),
        dead_letters: DeadLetters | None = None,
    ) -> None:
        self.stream = stream
        self.schema = schema
        self.keys = [k for k in key_properties if k in schema.names]
        self.required = [f.name for f in schema if not f.nullable and f.name not in self.keys]
        self.dead_letters = dead_letters
        self.rejected = 0
        self._converters = [(f.name, value_converter(f.type, f.name)) for f in schema]
        self._declared = set(schema.names)
        self._warned = False

    def _reason(self, record: Any) -> tuple[str | None, list[Any]]:
        if not isinstance(record, dict):
            return f"record is not a JSON object: {_shown(record)}", []
        for key in self.keys:
            if record.get(key) is None:
                return f"property '{key}': key property has no value", []
        for name in self.required:
            if record.get(name) is None:
                return f"property '{name}': no value for a property that is not nullable", []
        row = []
        try:
            for name, conv in self._converters:
                row.append(conv(record.get(name)))
        except BadValue as bad:
            return (
                f"property '{bad.path}': value {_shown(bad.value)} does not fit type "
                f"{bad.dtype} (expected {expected_type(bad.dtype)})",
                [],
            )
        if not self._warned and not self._declared.issuperset(record):
            self._warned = True
            extra = sorted(k for k in record if k not in self._declared)
            logger.warning(
                "stream '%s': records carry properties not in the schema, which are dropped: %s",
                self.stream,
                ", ".join(extra),
            )
        return None, row

    def build(
        self, records: Sequence[Any], *, first_index: int = 0, where: str = ""
    ) -> pa.RecordBatch:
        """One batch from one page's records.

        Args:
            records: The page's records (decoded JSON).
            first_index: 0-based index of the page's first record within the stream's read.
            where: Context for messages, e.g. ``page 3 (GET https://...)``.

        Raises:
            ReadError: A record does not fit and there is no dead-letter file.
        """
        columns: list[list[Any]] = [[] for _ in self._converters]
        for offset, record in enumerate(records):
            reason, row = self._reason(record)
            if reason is not None:
                index = first_index + offset
                if self.dead_letters is None:
                    place = f", {where}" if where else ""
                    raise ReadError(
                        f"stream '{self.stream}', record index {index}{place}: {reason} "
                        "(set 'dead_letter_path' to divert such records instead)"
                    )
                self.dead_letters.write(self.stream, record, f"record index {index}: {reason}")
                self.rejected += 1
                continue
            for values, value in zip(columns, row, strict=True):
                values.append(value)
        return batch_from_columns(self.schema, columns)
