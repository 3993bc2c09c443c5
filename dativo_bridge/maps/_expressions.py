"""Stream-map expressions compiled to Arrow compute, with singer-sdk's (Python's) meaning.

singer-sdk evaluates a map expression per record with simpleeval; here the same
expression, parsed with :mod:`ast` (never evaluated), becomes a function from a record
batch to an Arrow array. Python's semantics are kept where they differ from Arrow's:
``/`` is true division, ``==`` treats two nulls as equal, ``and``/``or`` return one of their
operands and evaluate the right one only where Python would, ``int()``/``str()``/``md5()``
run Python's own functions on the column's values. Where Python would raise (``None + 1``,
``None < 1``, ``md5(None)``), the compiled expression raises :class:`MapEvaluationError`
for that row, as singer-sdk's row path fails the sync.

Anything else the syntax allows raises :class:`Unsupported` at compile time: that stream
then takes singer-sdk's row path (see dativo_bridge.maps).
"""

from __future__ import annotations

import ast
import decimal
from collections.abc import Callable
from typing import Any, cast

import pyarrow as pa
import pyarrow.compute as pc
from singer_sdk.mapper import md5, sha256

from dativo_bridge.maps._values import (
    Compiled,
    MapEvaluationError,
    Scope,
    Unsupported,
    Value,
    broadcast,
    is_number,
    is_python_exact,
    is_text,
    literal,
    widened,
)

_CONTEXT_NAMES = ("_", "record", "config", "__stream_name__", "__original_stream_name__", "fake")
_ARITHMETIC: dict[type[ast.operator], str] = {
    ast.Add: "add_checked",
    ast.Sub: "subtract_checked",
    ast.Mult: "multiply_checked",
    ast.Div: "divide_checked",
}
_ORDERING: dict[type[ast.cmpop], str] = {
    ast.Lt: "less",
    ast.LtE: "less_equal",
    ast.Gt: "greater",
    ast.GtE: "greater_equal",
}
#: Functions run on each value with Python (same values as singer-sdk's records have).
_PYTHON_FUNCTIONS: dict[str, tuple[Callable[[Any], Any], pa.DataType]] = {
    "str": (str, pa.string()),
    "int": (int, pa.int64()),
    "float": (float, pa.float64()),
    "bool": (bool, pa.bool_()),
    "md5": (md5, pa.string()),
    "sha256": (sha256, pa.string()),
}
_STRING_METHODS: dict[str, pa.DataType] = {
    "upper": pa.string(),
    "lower": pa.string(),
    "strip": pa.string(),
    "lstrip": pa.string(),
    "rstrip": pa.string(),
    "title": pa.string(),
    "capitalize": pa.string(),
    "replace": pa.string(),
    "startswith": pa.bool_(),
    "endswith": pa.bool_(),
}


class Compiler:
    """Compiles one expression of one stream (singer-sdk's ``CustomStreamMap._eval``)."""

    def __init__(self, scope: Scope) -> None:
        self.scope = scope
        self._empty = pa.RecordBatch.from_pylist([], schema=scope.schema)

    # -- entry points --------------------------------------------------------------

    def compile(self, source: str) -> Compiled:
        """Compile ``source`` (Unsupported if it has no Arrow form)."""
        return self._typed(self._node(self._parse(source)))

    @staticmethod
    def _parse(source: str) -> ast.AST:
        try:
            body = ast.parse(source).body
        except SyntaxError as exc:
            raise Unsupported(f"not a Python expression ({exc.msg})") from None
        if len(body) != 1 or not isinstance(body[0], ast.Expr):
            raise Unsupported("not a single expression")
        return body[0].value

    def compile_truth(self, source: str) -> Compiled:
        """Compile ``source`` for its truth only (a ``__filter__``): ``and``/``or``/``not``
        then combine truth values, so their operands may be of any types."""
        return self._typed(self._truth_node(self._parse(source)))

    def _truth_node(self, node: ast.AST) -> Compiled:
        if isinstance(node, ast.BoolOp):
            result = self._truth_node(node.values[0])
            for value in node.values[1:]:
                truth = self._truth_node(value)
                if isinstance(node.op, ast.And):
                    result = self._choose(result, truth, result)
                else:
                    result = self._choose(result, result, truth)
            return result
        if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.Not):
            inner = self._truth_node(node.operand)
            return Compiled(lambda b: pc.invert(inner.evaluate(b)), pa.bool_())
        return self.truth(self._typed(self._node(node)))

    def truth(self, compiled: Compiled) -> Compiled:
        """Python's truthiness of a value, as a non-null boolean array."""
        dtype = compiled.dtype
        evaluate = compiled.evaluate
        if pa.types.is_boolean(dtype):
            return Compiled(lambda b: pc.fill_null(evaluate(b), False), pa.bool_())
        if is_number(dtype):
            zero = pa.scalar(0, type=pa.int64())
            if pa.types.is_decimal(dtype):
                zero = pa.scalar(decimal.Decimal(0), type=dtype)

            def number(b: pa.RecordBatch) -> Value:
                return pc.fill_null(pc.not_equal(evaluate(b), zero), False)

            return Compiled(number, pa.bool_())
        if is_text(dtype):
            return Compiled(
                lambda b: pc.fill_null(pc.greater(pc.utf8_length(evaluate(b)), 0), False),
                pa.bool_(),
            )
        if pa.types.is_null(dtype):
            return Compiled(lambda b: pa.scalar(False), pa.bool_())
        raise Unsupported(f"the truth value of a {dtype} value")

    # -- helpers -------------------------------------------------------------------

    def _typed(self, compiled: Compiled) -> Compiled:
        """Check the compiled expression on an empty batch, which also gives its type."""
        try:
            value = compiled.evaluate(self._empty)
        except (
            pa.ArrowNotImplementedError,
            pa.ArrowInvalid,
            pa.ArrowTypeError,
            MapEvaluationError,  # on no rows: the types do not combine
        ) as exc:
            raise Unsupported(str(exc).splitlines()[0]) from None
        if value.type != compiled.dtype:
            return Compiled(compiled.evaluate, value.type, compiled.field)
        return compiled

    def _fail(self, message: str) -> MapEvaluationError:
        scope = self.scope
        where = f" (property '{scope.property_name}')" if scope.property_name else ""
        return MapEvaluationError(
            f"stream '{scope.stream_name}': stream map expression {scope.expression!r}{where}: "
            f"{message}, as singer-sdk's evaluation fails there"
        )

    def _no_nulls(self, value: Value, what: str) -> None:
        if isinstance(value, pa.Scalar):
            if not value.is_valid:
                raise self._fail(f"{what} is None")
            return
        if value.null_count:
            row = pc.index(pc.is_null(value), True).as_py()
            raise self._fail(f"{what} is None in row {row} of the batch")

    def _column(self, name: str) -> Compiled:
        index = self.scope.schema.get_field_index(name)
        if index < 0:
            raise Unsupported(f"name '{name}' is not a property of the stream")
        field = self.scope.schema.field(index)
        return Compiled(lambda b: b.column(index), field.type, field)

    # -- nodes ---------------------------------------------------------------------

    def _node(self, node: ast.AST) -> Compiled:
        if isinstance(node, ast.Constant):
            return literal(node.value)
        if isinstance(node, ast.Name):
            return self._name(node.id)
        if isinstance(node, ast.Subscript):
            return self._subscript(node)
        if isinstance(node, ast.BinOp):
            return self._binop(node)
        if isinstance(node, ast.UnaryOp):
            return self._unary(node)
        if isinstance(node, ast.BoolOp):
            return self._boolop(node)
        if isinstance(node, ast.Compare):
            return self._compare(node)
        if isinstance(node, ast.IfExp):
            return self._ifexp(node)
        if isinstance(node, ast.Call):
            return self._call(node)
        raise Unsupported(f"{type(node).__name__} expressions")

    def _name(self, name: str) -> Compiled:
        scope = self.scope
        if name == "self":
            if scope.property_name is not None and scope.property_name in scope.schema.names:
                return self._column(scope.property_name)
            raise Unsupported("'self' of a property that is not in the record")
        if name == "__stream_name__":
            return literal(scope.stream_alias)
        if name == "__original_stream_name__":
            return literal(scope.stream_name)
        if name in _CONTEXT_NAMES:
            raise Unsupported(f"'{name}' as a value")
        return self._column(name)

    def _subscript(self, node: ast.Subscript) -> Compiled:
        key = node.slice
        if not isinstance(key, ast.Constant) or not isinstance(key.value, str | int):
            raise Unsupported("a subscript that is not a constant key")
        path: list[Any] = [key.value]
        base = node.value
        while isinstance(base, ast.Subscript):
            inner = base.slice
            if not isinstance(inner, ast.Constant):
                raise Unsupported("a subscript that is not a constant key")
            path.insert(0, inner.value)
            base = base.value
        if isinstance(base, ast.Name) and base.id == "config":
            value: Any = self.scope.map_config
            for part in path:
                try:
                    value = value[part]
                except (KeyError, IndexError, TypeError):
                    raise Unsupported(f"config{path!r} is not in stream_map_config") from None
            return literal(value)
        if not isinstance(base, ast.Name) or not all(isinstance(p, str) for p in path):
            raise Unsupported("this subscript")
        if base.id in ("_", "record"):
            compiled = self._column(path[0])
            path = path[1:]
        else:
            compiled = self._name(base.id)
        for key in path:  # a child of a struct (a dict in singer-sdk's record)
            compiled = self._child(compiled, key)
        return compiled

    def _child(self, parent: Compiled, key: str) -> Compiled:
        dtype = parent.dtype
        if not pa.types.is_struct(dtype) or dtype.get_field_index(key) < 0:
            raise Unsupported(f"['{key}'] of a {dtype} value")
        index = dtype.get_field_index(key)

        def child(b: pa.RecordBatch) -> Value:
            value = parent.evaluate(b)
            self._no_nulls(value, f"the object whose '{key}' is read")
            return pc.struct_field(value, [index])

        field = dtype.field(index)
        if parent.field is None:
            return Compiled(child, field.type)
        return Compiled(child, field.type, field.with_nullable(True))

    def _binop(self, node: ast.BinOp) -> Compiled:
        left = self._node(node.left)
        right = self._node(node.right)
        op = type(node.op)
        if op is ast.Add and is_text(left.dtype) and is_text(right.dtype):

            def concat(b: pa.RecordBatch) -> Value:
                lv, rv = left.evaluate(b), right.evaluate(b)
                self._no_nulls(lv, "an operand of +")
                self._no_nulls(rv, "an operand of +")
                return pc.binary_join_element_wise(lv, rv, "")

            return self._typed(Compiled(concat, pa.string()))
        if op not in _ARITHMETIC:
            raise Unsupported(f"the operator {type(node.op).__name__}")
        for side in (left, right):
            if not is_number(side.dtype):
                raise Unsupported(f"arithmetic on {side.dtype}")
        decimals = pa.types.is_decimal(left.dtype) or pa.types.is_decimal(right.dtype)
        floats = pa.types.is_floating(left.dtype) or pa.types.is_floating(right.dtype)
        if decimals and (floats or op is ast.Div):
            raise Unsupported("Decimal division, or Decimal with float (Python's rules differ)")
        function = _ARITHMETIC[op]

        def arithmetic(b: pa.RecordBatch) -> Value:
            lv, rv = left.evaluate(b), right.evaluate(b)
            self._no_nulls(lv, "an operand")
            self._no_nulls(rv, "an operand")
            if op is ast.Div:  # Python's true division
                lv, rv = pc.cast(lv, pa.float64()), pc.cast(rv, pa.float64())
            else:  # Python's int and float, not an int32 that overflows
                lv, rv = widened(lv), widened(rv)
            try:
                return pc.call_function(function, [lv, rv])
            except pa.ArrowInvalid as exc:
                raise self._fail(str(exc).splitlines()[0]) from None

        compiled = self._typed(Compiled(arithmetic, pa.float64()))
        if pa.types.is_decimal(compiled.dtype):
            precision = decimal.getcontext().prec
            if compiled.dtype.precision > precision:  # Python rounds to its context
                raise Unsupported(f"a Decimal result beyond {precision} digits")
        return compiled

    def _unary(self, node: ast.UnaryOp) -> Compiled:
        operand = self._node(node.operand)
        if isinstance(node.op, ast.Not):
            truth = self.truth(operand)
            return Compiled(lambda b: pc.invert(truth.evaluate(b)), pa.bool_())
        if isinstance(node.op, ast.USub) and is_number(operand.dtype):

            def negate(b: pa.RecordBatch) -> Value:
                value = operand.evaluate(b)
                self._no_nulls(value, "the operand of -")
                try:
                    return pc.negate_checked(widened(value))
                except pa.ArrowInvalid as exc:
                    raise self._fail(str(exc).splitlines()[0]) from None

            return self._typed(Compiled(negate, operand.dtype))
        if isinstance(node.op, ast.UAdd) and is_number(operand.dtype):
            return operand
        raise Unsupported(f"the operator {type(node.op).__name__}")

    def _same_type(self, a: Compiled, b: Compiled) -> pa.DataType:
        if a.dtype == b.dtype or pa.types.is_null(b.dtype):
            return a.dtype
        if pa.types.is_null(a.dtype):
            return b.dtype
        if pa.types.is_integer(a.dtype) and pa.types.is_integer(b.dtype):
            return pa.int64()  # Python's int either way
        raise Unsupported(f"operands of different types ({a.dtype}, {b.dtype})")

    def _choose(self, where: Compiled, then: Compiled, other: Compiled) -> Compiled:
        """``then`` where ``where`` is true, ``other`` elsewhere; each evaluated only on the
        rows that take it (as Python evaluates only the branch it takes)."""
        dtype = self._same_type(then, other)

        def choose(b: pa.RecordBatch) -> Value:
            mask = pc.fill_null(broadcast(where.evaluate(b), b.num_rows), False)
            unmask = pc.invert(mask)
            taken, others = b.filter(mask), b.filter(unmask)
            picked = broadcast(then.evaluate(taken), taken.num_rows).cast(dtype)
            rest = broadcast(other.evaluate(others), others.num_rows).cast(dtype)
            out = pc.replace_with_mask(pa.nulls(b.num_rows, dtype), mask, picked)
            return pc.replace_with_mask(out, unmask, rest)

        return Compiled(choose, dtype)

    def _boolop(self, node: ast.BoolOp) -> Compiled:
        values = [self._node(v) for v in node.values]
        result = values[0]
        for value in values[1:]:
            truth = self.truth(result)
            if isinstance(node.op, ast.And):  # x and y: y where x is true, else x
                result = self._choose(truth, value, result)
            else:  # x or y: x where x is true, else y
                result = self._choose(truth, result, value)
        return self._typed(result)

    def _ifexp(self, node: ast.IfExp) -> Compiled:
        test = self.truth(self._node(node.test))
        return self._typed(self._choose(test, self._node(node.body), self._node(node.orelse)))

    def _comparable(self, a: Compiled, b: Compiled) -> None:
        if pa.types.is_null(a.dtype) or pa.types.is_null(b.dtype):
            return
        if is_number(a.dtype) and is_number(b.dtype):
            if pa.types.is_boolean(a.dtype) != pa.types.is_boolean(b.dtype):
                raise Unsupported("comparing booleans with numbers")
            mixed = {pa.types.is_decimal(a.dtype), pa.types.is_floating(b.dtype)}
            mixed_r = {pa.types.is_decimal(b.dtype), pa.types.is_floating(a.dtype)}
            if mixed == {True} or mixed_r == {True}:
                raise Unsupported("comparing Decimal with float (Python compares exactly)")
            return
        if is_text(a.dtype) and is_text(b.dtype):
            return
        if pa.types.is_boolean(a.dtype) and pa.types.is_boolean(b.dtype):
            return
        raise Unsupported(f"comparing {a.dtype} with {b.dtype}")

    def _compare_pair(self, op: ast.cmpop, left: Compiled, right: Compiled) -> Compiled:
        if isinstance(op, ast.Is | ast.IsNot):
            if not (isinstance(right, Compiled) and pa.types.is_null(right.dtype)):
                raise Unsupported("'is' with anything but None")
            test = pc.is_null if isinstance(op, ast.Is) else pc.is_valid
            return Compiled(lambda b: test(broadcast(left.evaluate(b), b.num_rows)), pa.bool_())
        self._comparable(left, right)
        if isinstance(op, ast.Eq | ast.NotEq):
            negate = isinstance(op, ast.NotEq)

            def equal(b: pa.RecordBatch) -> Value:
                lv = broadcast(left.evaluate(b), b.num_rows)
                rv = broadcast(right.evaluate(b), b.num_rows)
                if pa.types.is_null(lv.type) or pa.types.is_null(rv.type):
                    same = pc.and_(pc.is_null(lv), pc.is_null(rv))
                else:  # None == None is True; None == x is False
                    same = pc.if_else(
                        pc.and_(pc.is_valid(lv), pc.is_valid(rv)),
                        pc.equal(lv, rv),
                        pc.and_(pc.is_null(lv), pc.is_null(rv)),
                    )
                return pc.invert(same) if negate else same

            return self._typed(Compiled(equal, pa.bool_()))
        if type(op) in _ORDERING:
            if pa.types.is_null(left.dtype) or pa.types.is_null(right.dtype):
                raise Unsupported("ordering against None")
            function = _ORDERING[type(op)]

            def order(b: pa.RecordBatch) -> Value:
                lv, rv = left.evaluate(b), right.evaluate(b)
                self._no_nulls(lv, "an operand of a comparison")
                self._no_nulls(rv, "an operand of a comparison")
                return pc.call_function(function, [lv, rv])

            return self._typed(Compiled(order, pa.bool_()))
        raise Unsupported(f"the comparison {type(op).__name__}")

    def _membership(self, item: ast.AST, container: ast.AST, negate: bool) -> Compiled:
        """``x in (literals...)`` and ``'text' in column``."""
        if isinstance(container, ast.Tuple | ast.List | ast.Set):
            if not all(isinstance(e, ast.Constant) for e in container.elts):
                raise Unsupported("'in' a collection of anything but literals")
            values = [cast(ast.Constant, e).value for e in container.elts]
            left = self._node(item)
            if is_text(left.dtype) and all(isinstance(v, str | None) for v in values):
                kind = pa.string()
            elif pa.types.is_integer(left.dtype) and all(
                v is None or (isinstance(v, int) and not isinstance(v, bool)) for v in values
            ):
                kind = pa.int64()
            else:
                raise Unsupported(f"'in' on {left.dtype} with these literals")
            value_set = pa.array(values, kind)

            def member(b: pa.RecordBatch) -> Value:
                value = pc.cast(broadcast(left.evaluate(b), b.num_rows), kind)
                found = pc.is_in(value, value_set=value_set, skip_nulls=False)
                return pc.invert(found) if negate else found

            return self._typed(Compiled(member, pa.bool_()))
        text = self._node(container)
        needle = item.value if isinstance(item, ast.Constant) else None
        if not (is_text(text.dtype) and isinstance(needle, str)):
            raise Unsupported("'in' other than in a tuple of literals or a string literal in text")

        def contains(b: pa.RecordBatch) -> Value:
            value = text.evaluate(b)
            self._no_nulls(value, "the right side of 'in'")
            found = pc.match_substring(value, needle)
            return pc.invert(found) if negate else found

        return self._typed(Compiled(contains, pa.bool_()))

    def _compare(self, node: ast.Compare) -> Compiled:
        if len(node.ops) == 1 and isinstance(node.ops[0], ast.In | ast.NotIn):
            return self._membership(
                node.left, node.comparators[0], isinstance(node.ops[0], ast.NotIn)
            )
        operands = [self._node(node.left)] + [self._node(c) for c in node.comparators]
        parts = [
            self._compare_pair(op, operands[i], operands[i + 1]) for i, op in enumerate(node.ops)
        ]
        result = parts[0]
        for part in parts[1:]:  # a < b < c is (a < b) and (b < c), lazily
            result = self._choose(result, part, result)
        return result

    def _call(self, node: ast.Call) -> Compiled:
        if node.keywords:
            raise Unsupported("keyword arguments")
        func = node.func
        if isinstance(func, ast.Name) and func.id in _PYTHON_FUNCTIONS:
            if func.id in self.scope.schema.names:  # a property shadows the function
                raise Unsupported(f"{func.id}() where '{func.id}' is a property")
            if len(node.args) != 1:
                raise Unsupported(f"{func.id}() with {len(node.args)} arguments")
            function, dtype = _PYTHON_FUNCTIONS[func.id]
            return self._per_value(node.args[0], function, dtype, f"{func.id}()")
        if isinstance(func, ast.Attribute) and func.attr in _STRING_METHODS:
            args = []
            for arg in node.args:
                if not isinstance(arg, ast.Constant) or not isinstance(arg.value, str):
                    raise Unsupported(f".{func.attr}() with arguments that are not strings")
                args.append(arg.value)
            name = func.attr
            subject = self._node(func.value)
            if not is_text(subject.dtype):
                raise Unsupported(f".{name}() of a {subject.dtype} value")
            return self._per_value(
                func.value,
                lambda v: getattr(v, name)(*args),
                _STRING_METHODS[name],
                f".{name}()",
            )
        raise Unsupported("this function call")

    def _per_value(
        self, arg: ast.AST, function: Callable[[Any], Any], dtype: pa.DataType, what: str
    ) -> Compiled:
        """Python's ``function`` on each value of ``arg`` (only for types whose Python
        values are those singer-sdk's records carry)."""
        inner = self._node(arg)
        if not is_python_exact(inner.dtype):
            raise Unsupported(f"{what} of a {inner.dtype} value")

        def per_value(b: pa.RecordBatch) -> Value:
            value = inner.evaluate(b)
            values = [value.as_py()] if isinstance(value, pa.Scalar) else value.to_pylist()
            out = []
            for i, v in enumerate(values):
                try:
                    out.append(function(v))
                except (TypeError, ValueError, AttributeError, OverflowError) as exc:
                    raise self._fail(f"{what} failed in row {i} ({exc})") from None
            try:
                result = pa.array(out, type=dtype)
            except (pa.ArrowInvalid, OverflowError) as exc:
                raise self._fail(f"{what} gave a value beyond {dtype} ({exc})") from None
            return result[0] if isinstance(value, pa.Scalar) else result

        return Compiled(per_value, dtype)


__all__ = ["Compiler"]
