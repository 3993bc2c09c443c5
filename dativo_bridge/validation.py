"""JSON Schema constraints, checked on decoded Arrow batches with compute kernels.

A stream's SCHEMA is compiled once into :class:`RecordChecks`: a list of checks, each a
path into the batch (struct children, list items) and one or two compute kernels that
mark the values breaking one constraint. A batch costs a few kernels per constrained
property; rows are looked at one by one only to name the first bad one, and to tell a
missing property from a null one (``required`` properties whose schema admits null).

What is checked, and what is not, is listed in docs/type-mapping.md#constraints.
"""

from __future__ import annotations

import contextlib
import decimal
import json
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import orjson
import pyarrow as pa
import pyarrow.compute as pc

from dativo_bridge.errors import DecodeError, SchemaMappingError
from dativo_bridge.schema import JSON_TYPE, branches_of

#: ECMA-262 ``\\uXXXX`` escapes in a pattern, which RE2 writes ``\\x{XXXX}``.
_ECMA_UNICODE = re.compile(r"(?<!\\)((?:\\\\)*)\\u([0-9a-fA-F]{4})")

#: A step into a column: a struct child (its index) or the items of a list (None).
_Step = int | None


class RecordLines(Protocol):
    """The input lines of a batch's rows (for error messages)."""

    def number(self, row: int) -> int: ...

    def line(self, row: int) -> bytes: ...


@dataclass(frozen=True)
class _Check:
    path: str
    steps: tuple[_Step, ...]
    keyword: str
    expected: str
    #: True where a value breaks the constraint (null: not checked).
    bad: Callable[[pa.Array], pa.Array]
    #: For ``required`` with null allowed: whether the parsed record really lacks it.
    missing: Callable[[Any], bool] | None = None


def _values(batch: pa.RecordBatch, steps: Sequence[_Step]) -> tuple[pa.Array, pa.Array | None]:
    """The values at ``steps`` (the first a column index) and the row of each, when the
    path goes through list items (None: value i is row i)."""
    first = steps[0]
    assert first is not None
    arr: pa.Array = batch.column(first)
    rows: pa.Array | None = None
    for step in steps[1:]:
        if step is not None:
            arr = pc.struct_field(arr, [step])  # null where the parent is null
            continue
        start, end = arr.offsets[0].as_py(), arr.offsets[-1].as_py()
        parents = pc.list_parent_indices(arr)
        arr = arr.values.slice(start, end - start)
        rows = parents if rows is None else pc.take(rows, parents)
    return arr, rows


def _shown(value: Any) -> str:
    text = json.dumps(value, default=str, ensure_ascii=False)
    return text if len(text) <= 80 else text[:77] + "..."


class RecordChecks:
    """The constraints of one stream's SCHEMA, compiled for its Arrow schema.

    Args:
        stream: Stream name, for errors.
        json_schema: The stream's JSON Schema (the SCHEMA message's ``schema``).
        arrow: The Arrow schema the decoder produces for it.

    Raises:
        SchemaMappingError: A constraint Dativo cannot check as written (a ``pattern``
            RE2 cannot compile, a ``required`` property that is not declared).
    """

    def __init__(self, stream: str, json_schema: Mapping[str, Any], arrow: pa.Schema) -> None:
        self.stream = stream
        self.checks: list[_Check] = []
        #: Struct paths (dotted) whose objects take no undeclared property.
        self.closed_paths: set[str] = set()
        props = json_schema.get("properties") or {}
        self.closed = json_schema.get("additionalProperties") is False
        fields = [(i, f, props.get(f.name)) for i, f in enumerate(arrow)]
        self._object(fields, json_schema, (), "")

    def __bool__(self) -> bool:
        return bool(self.checks)

    # -- compiling ------------------------------------------------------------------

    def _object(
        self,
        fields: Sequence[tuple[int, pa.Field, Any]],
        schema: Mapping[str, Any],
        steps: tuple[_Step, ...],
        prefix: str,
    ) -> None:
        required = schema.get("required") or []
        if not isinstance(required, list) or not all(isinstance(r, str) for r in required):
            raise SchemaMappingError(
                f"'required' of {prefix or 'the stream'} must be a list of property names"
            )
        names = {f.name for _, f, _ in fields}
        for name in required:
            if name not in names:
                raise SchemaMappingError(
                    f"required property '{prefix}{name}' is not declared in 'properties' "
                    "(a target keeps declared properties only)"
                )
        for index, field, prop in fields:
            path = prefix + field.name
            step = (*steps, index)
            if field.name in required:
                self._required(field, prop, step, path)
            if isinstance(prop, Mapping):
                self._property(field.type, prop, step, path)

    def _required(self, field: pa.Field, prop: Any, steps: tuple[_Step, ...], path: str) -> None:
        nullable = True
        if isinstance(prop, Mapping):
            _, nullable = branches_of(prop)
        keys = tuple(path.replace("[]", "").split("."))

        def missing(record: Any) -> bool:
            return _lacks(record, keys)

        expected = "the property (the schema lists it in 'required')"
        if not nullable:
            expected = "a value (the schema lists it in 'required' and does not allow null)"
        at: tuple[_Step, ...] = steps
        if len(steps) == 1:
            bad: Callable[[pa.Array], pa.Array] = pc.is_null
        else:
            # Checked on the parent objects: a child is missing only under a present parent.
            index, at = steps[-1], steps[:-1]

            def bad(parent: pa.Array) -> pa.Array:
                child = pc.struct_field(parent, [index])
                return pc.and_(pc.is_valid(parent), pc.is_null(child))

        self.checks.append(
            _Check(path, at, "required", expected, bad, missing if nullable else None)
        )

    def _property(
        self, dtype: pa.DataType, prop: Mapping[str, Any], steps: tuple[_Step, ...], path: str
    ) -> None:
        branches, _ = branches_of(prop)
        if len(branches) != 1 or dtype == JSON_TYPE:
            return  # several types, or free-form JSON text: not checked (documented)
        schema = branches[0]
        if pa.types.is_struct(dtype):
            if schema.get("additionalProperties") is False:
                self.closed_paths.add(path.replace("[]", ""))
            props = schema.get("properties") or {}
            children = [
                (i, dtype.field(i), props.get(dtype.field(i).name)) for i in range(dtype.num_fields)
            ]
            self._object(children, schema, steps, path + ".")
            return
        if pa.types.is_list(dtype) or pa.types.is_large_list(dtype):
            self._items(dtype, schema, steps, path)
            return
        add = self._adder(path, steps)
        if "enum" in schema or "const" in schema:
            values = list(schema["enum"]) if "enum" in schema else [schema["const"]]
            keyword = "enum" if "enum" in schema else "const"
            allowed = _value_set(dtype, values)
            if allowed is not None:
                shown = ", ".join(_shown(v) for v in values)
                add(keyword, f"one of {shown}" if keyword == "enum" else shown, _not_in(allowed))
        if pa.types.is_string(dtype) or pa.types.is_large_string(dtype):
            self._string(schema, add, path)
        elif (
            pa.types.is_integer(dtype) or pa.types.is_floating(dtype) or pa.types.is_decimal(dtype)
        ):
            self._bounds(dtype, schema, add, path)

    def _items(
        self, dtype: pa.DataType, schema: Mapping[str, Any], steps: tuple[_Step, ...], path: str
    ) -> None:
        add = self._adder(path, steps)
        _length_bounds(schema, add, "Items", "items", pc.list_value_length)
        items = schema.get("items")
        if isinstance(items, Mapping):
            self._property(dtype.value_type, items, (*steps, None), path + "[]")

    def _adder(self, path: str, steps: tuple[_Step, ...]) -> Callable[..., None]:
        def add(keyword: str, expected: str, bad: Callable[[pa.Array], pa.Array]) -> None:
            self.checks.append(_Check(path, steps, keyword, expected, bad))

        return add

    def _string(self, schema: Mapping[str, Any], add: Callable[..., None], path: str) -> None:
        _length_bounds(schema, add, "Length", "characters", pc.utf8_length)
        pattern = schema.get("pattern")
        if isinstance(pattern, str):
            re2 = _re2_pattern(pattern, path)
            add(
                "pattern",
                f"a string matching {pattern!r}",
                lambda a, p=re2: pc.invert(pc.match_substring_regex(a, p)),
            )

    def _bounds(
        self, dtype: pa.DataType, schema: Mapping[str, Any], add: Callable[..., None], path: str
    ) -> None:
        minimum, maximum = schema.get("minimum"), schema.get("maximum")
        low_ex, high_ex = schema.get("exclusiveMinimum"), schema.get("exclusiveMaximum")
        bounds: list[tuple[str, Any, bool, bool]] = []  # keyword, bound, is_low, exclusive
        if _is_number(minimum):
            bounds.append(("minimum", minimum, True, low_ex is True))  # draft 4: a flag
        if _is_number(maximum):
            bounds.append(("maximum", maximum, False, high_ex is True))
        if _is_number(low_ex):
            bounds.append(("exclusiveMinimum", low_ex, True, True))
        if _is_number(high_ex):
            bounds.append(("exclusiveMaximum", high_ex, False, True))
        for keyword, bound, is_low, exclusive in bounds:
            op = (">" if exclusive else ">=") if is_low else ("<" if exclusive else "<=")
            bad = _outside(dtype, decimal.Decimal(str(bound)), is_low, exclusive)
            add(keyword, f"a number {op} {bound}", bad)

    # -- checking -------------------------------------------------------------------

    def check(self, batch: pa.RecordBatch, lines: RecordLines) -> None:
        """Raise DecodeError for the first line (lowest number) breaking a constraint."""
        found: tuple[int, _Check, Any] | None = None
        for check in self.checks:
            arr, rows = _values(batch, check.steps)
            bad = check.bad(arr)
            if not pc.any(bad).as_py():
                continue
            for i in pc.indices_nonzero(pc.fill_null(bad, False)).to_pylist():
                row = i if rows is None else rows[i].as_py()
                if found is not None and lines.number(row) >= found[0]:
                    break
                if check.missing is not None and not check.missing(_record_of(lines.line(row))):
                    continue  # a null given, not a missing property
                found = (lines.number(row), check, arr[i].as_py())
                break
        if found is None:
            return
        number, check, value = found
        if check.keyword == "required":
            reason = "required property is missing"
            if check.missing is None:
                reason = "required property is missing or null"
        else:
            reason = f"value {_shown(value)} breaks '{check.keyword}'"
        raise DecodeError(
            reason,
            stream=self.stream,
            line_number=number,
            field=check.path,
            expected=check.expected,
        )


# ---------------------------------------------------------------------------


def _length_bounds(
    schema: Mapping[str, Any],
    add: Callable[..., None],
    keyword: str,
    unit: str,
    length: Callable[[pa.Array], pa.Array],
) -> None:
    """The ``min<keyword>``/``max<keyword>`` checks (Length: characters, Items: items)."""
    lo, hi = schema.get(f"min{keyword}"), schema.get(f"max{keyword}")
    if _is_number(lo):
        add(f"min{keyword}", f"at least {lo} {unit}", lambda a, n=lo: pc.less(length(a), n))
    if _is_number(hi):
        add(f"max{keyword}", f"at most {hi} {unit}", lambda a, n=hi: pc.greater(length(a), n))


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value)


def _lacks(record: Any, keys: Sequence[str]) -> bool:
    """Whether the parsed ``record`` lacks the property at ``keys`` under a present parent
    (list items: any item lacking it)."""
    values = [record]
    for depth, key in enumerate(keys):
        nxt = []
        for value in values:
            for item in value if isinstance(value, list) else [value]:
                if not isinstance(item, dict):
                    continue
                if key not in item:
                    return True
                nxt.append(item[key])
        values = nxt
        if depth == len(keys) - 1:
            return False
    return False


def _record_of(line: bytes) -> Any:
    try:
        message = orjson.loads(line)
    except orjson.JSONDecodeError:
        message = json.loads(line)
    return message.get("record") if isinstance(message, dict) else None


def _re2_pattern(pattern: str, path: str) -> str:
    """``pattern`` in RE2 syntax, refused when RE2 cannot compile it."""
    re2 = _ECMA_UNICODE.sub(lambda m: m.group(1) + "\\x{" + m.group(2) + "}", pattern)
    try:
        pc.match_substring_regex(pa.array([""], pa.string()), re2)
    except pa.ArrowInvalid as exc:
        raise SchemaMappingError(
            f"property '{path}': pattern {pattern!r} cannot be checked: {exc} (Dativo checks "
            "patterns with RE2, which has no lookaround or backreferences; set "
            "validate_records to false to load without checks)"
        ) from None
    return re2


def _value_set(dtype: pa.DataType, values: Sequence[Any]) -> pa.Array | None:
    """The enum values a column of ``dtype`` can hold, as an array of its type (None:
    not checked for this type)."""
    kept: list[Any] = []
    for v in values:
        if v is None:
            continue
        if pa.types.is_boolean(dtype):
            if isinstance(v, bool):
                kept.append(v)
        elif pa.types.is_integer(dtype):
            if isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer():
                kept.append(int(v))
        elif pa.types.is_floating(dtype):
            if isinstance(v, int | float) and not isinstance(v, bool):
                kept.append(float(v))
        elif pa.types.is_decimal(dtype):
            if isinstance(v, int | float | str) and not isinstance(v, bool):
                with contextlib.suppress(decimal.InvalidOperation):
                    kept.append(decimal.Decimal(str(v)))
        elif (
            pa.types.is_string(dtype)
            or pa.types.is_large_string(dtype)
            or pa.types.is_timestamp(dtype)
            or pa.types.is_date(dtype)
            or pa.types.is_time(dtype)
        ):
            if isinstance(v, str):
                kept.append(v)
        else:
            return None
    if pa.types.is_decimal(dtype):
        out = []
        quantum = decimal.Decimal(1).scaleb(-dtype.scale)
        for d in kept:
            exact = d.is_finite() and d == d.quantize(quantum, rounding=decimal.ROUND_DOWN)
            if exact and len(d.quantize(quantum).as_tuple().digits) <= dtype.precision:
                out.append(d.quantize(quantum))
        return pa.array(out, dtype)
    if pa.types.is_integer(dtype):
        info = (
            (0, 2**dtype.bit_width - 1)
            if pa.types.is_unsigned_integer(dtype)
            else (-(2 ** (dtype.bit_width - 1)), 2 ** (dtype.bit_width - 1) - 1)
        )
        return pa.array([v for v in kept if info[0] <= v <= info[1]], dtype)
    if pa.types.is_timestamp(dtype) or pa.types.is_date(dtype) or pa.types.is_time(dtype):
        out = []
        for text in kept:
            try:  # compared as values: "…Z" and "…+00:00" are one instant
                out.append(pc.cast(pa.array([text.replace("Z", "+00:00")]), dtype)[0])
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                continue
        return pa.array([s.as_py() for s in out], dtype)
    return pa.array(kept, dtype)


def _not_in(allowed: pa.Array) -> Callable[[pa.Array], pa.Array]:
    def bad(arr: pa.Array) -> pa.Array:
        return pc.and_kleene(pc.invert(pc.is_in(arr, value_set=allowed)), pc.is_valid(arr))

    return bad


def _outside(
    dtype: pa.DataType, bound: decimal.Decimal, is_low: bool, exclusive: bool
) -> Callable[[pa.Array], pa.Array]:
    """True where a value is below (``is_low``) or above the bound."""
    if pa.types.is_floating(dtype):
        scalar: Any = float(bound)
    else:
        # Integers and decimals hold multiples of 10**-scale: the bound rounded to one
        # compares exactly (x >= b <=> x >= ceil(b); x > b <=> x > floor(b); ...).
        scale = dtype.scale if pa.types.is_decimal(dtype) else 0
        quantum = decimal.Decimal(1).scaleb(-scale)
        up = (is_low and not exclusive) or (not is_low and exclusive)
        rounded = bound.quantize(
            quantum, rounding=decimal.ROUND_CEILING if up else decimal.ROUND_FLOOR
        )
        if pa.types.is_integer(dtype):
            whole = int(rounded)
            if -(2**63) <= whole < 2**63:
                scalar = pa.scalar(whole, pa.int64())
            elif 0 <= whole < 2**64:
                scalar = pa.scalar(whole, pa.uint64())
            else:
                scalar = float(whole)
        else:
            digits = len(rounded.as_tuple().digits)
            scalar = pa.scalar(rounded, pa.decimal256(max(digits, scale, 1), scale))
    if is_low:
        kernel = pc.less_equal if exclusive else pc.less
    else:
        kernel = pc.greater_equal if exclusive else pc.greater

    def bad(arr: pa.Array) -> pa.Array:
        return kernel(arr, scalar)

    return bad
