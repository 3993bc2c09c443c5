"""A plugin's settings, validated against its ``config_jsonschema`` and defaulted, once.

Every path that opens a reader or a writer (the singer-sdk CLI, `dativo run`, the Python
API ``run()``) passes its settings through :func:`validated` first, so a plugin sees the
same settings whichever way it runs. Invariants:

- Defaults live only in the JSON Schema (``"default"``); code reads the defaulted config
  and never carries a second default. The target-side settings every Dativo target has
  (``checkpoint_rows`` ...) are defined once, in :data:`TARGET_COMMON_SETTINGS`.
- A default fills a setting that is absent (not one that is null), at the top level and
  inside nested objects and array items that are present; an absent object is not created
  unless the schema gives the object itself a default. Defaults are copied, never shared.
- The caller's mapping is never changed: a new dict is returned.
- The draft is singer-sdk's (JSON Schema 2020-12), so both accept the same settings.
- A malformed setting is one ConfigError line naming the plugin, the setting's path and
  what was expected. It never contains a setting's value (which may be a secret): only
  the schema's words and the kind of value that was given.
- Importing it costs no pyarrow (a plugin's ``--about`` builds its settings from here).
"""

from __future__ import annotations

import copy
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from dativo_bridge.batch_settings import BATCH_CLEANUP_SETTING
from dativo_bridge.errors import ConfigError

if TYPE_CHECKING:
    from jsonschema.exceptions import ValidationError

# jsonschema (~60 ms to import) is imported by validated(), its one user: the modules that
# only read this module's constants (delivery, the runner) do not pay for it.

#: Commit (and release STATE) after this many rows / seconds, unless a setting says otherwise.
CHECKPOINT_ROWS = 1_000_000
CHECKPOINT_SECONDS = 300.0

#: Settings every Dativo target understands, on top of its writer's own.
TARGET_COMMON_SETTINGS: dict[str, Any] = {
    "checkpoint_rows": {
        "type": "integer",
        "default": CHECKPOINT_ROWS,
        "description": "Commit (and release STATE) after this many rows.",
    },
    "checkpoint_seconds": {
        "type": "number",
        "default": CHECKPOINT_SECONDS,
        "description": "... or after this many seconds.",
    },
    "batch_rows": {
        "type": "integer",
        "default": 100_000,
        "description": "RECORD lines decoded into Arrow per batch.",
    },
    "batch_size_rows": {
        "type": "integer",
        "minimum": 1,
        "title": "Batch Size Rows",
        "description": "singer-sdk's name for batch_rows: when set, RECORD lines decoded "
        "into Arrow per batch (giving both with different values is refused at start).",
    },
    "batch_cleanup": BATCH_CLEANUP_SETTING,
    "validate_records": {
        "type": "boolean",
        "default": True,
        "title": "Validate Records",
        "description": "Whether to validate the schema of the incoming streams: check each "
        "record against the JSON Schema constraints of its SCHEMA (enum, const, "
        "minLength/maxLength, pattern, minimum/maximum and exclusive bounds, required, "
        "additionalProperties false). False skips these checks for speed; types are "
        "always checked.",
    },
}


#: Load methods by singer-sdk's names, with Dativo's older ``append`` as an alias.
_LOAD_METHOD_ALIASES = {"append-only": "append"}

#: singer-sdk target settings a Dativo target does not implement unless its own
#: ``config_jsonschema`` lists them (target-dativo-iceberg lists ``hard_delete``): a true
#: value (or a non-empty map) refuses the run at start, never ignored (issue 16).
REFUSED_TARGET_SETTINGS: dict[str, str] = {
    "add_record_metadata": "the _sdc_* metadata columns are not written by Dativo targets",
    "hard_delete": "this target does not delete rows marked with _sdc_deleted_at; "
    "target-dativo-iceberg does, with load_method upsert",
    "stream_maps": "Dativo targets do not apply stream maps: apply them in the tap",
    "flattening_enabled": "Dativo targets do not flatten records: flatten in the tap",
}


def load_method(config: Mapping[str, Any], supported: Sequence[str], plugin: str) -> str:
    """The ``load_method`` setting in Dativo's words (``append-only`` is ``append``).

    Raises:
        ConfigError: A method the writer does not support.
    """
    given = str(config.get("load_method", "append-only"))
    method = _LOAD_METHOD_ALIASES.get(given, given)
    if method not in supported:
        names = ", ".join("append-only" if m == "append" else m for m in supported)
        hint = " (upsert replaces rows by key: target-dativo-iceberg does it)"
        raise ConfigError(
            f"{plugin}: load_method {given!r} is not supported; use one of {names}"
            + (hint if given == "upsert" else "")
        )
    return method


def hard_delete_refusal(plugin: str, method: str) -> str:
    """The refusal of ``hard_delete: true`` under a load method other than upsert."""
    return (
        f"{plugin}: setting 'hard_delete' is not supported with load_method {method!r}: "
        "rows are deleted by key, so it needs load_method upsert"
    )


def check_target_settings(
    config: Mapping[str, Any], schema: Mapping[str, Any], plugin: str
) -> None:
    """Refuse, before anything runs, the singer-sdk settings a target does not honour:
    those of :data:`REFUSED_TARGET_SETTINGS` its schema does not list, ``hard_delete``
    without ``load_method: upsert``, a ``load_method`` its schema does not list, and
    ``batch_size_rows`` contradicting ``batch_rows``.

    Raises:
        ConfigError: Naming the setting and why.
    """
    method = config.get("load_method")
    props = schema.get("properties") or {}
    for key, reason in REFUSED_TARGET_SETTINGS.items():
        if config.get(key) and key not in props:
            raise ConfigError(f"{plugin}: setting '{key}' is not supported ({reason})")
    if config.get("hard_delete") and method != "upsert":
        raise ConfigError(hard_delete_refusal(plugin, str(method or "append-only")))
    if method is not None:
        allowed = (props.get("load_method") or {}).get("enum")
        if allowed is None:
            raise ConfigError(f"{plugin}: setting 'load_method' is not supported")
        supported = [_LOAD_METHOD_ALIASES.get(m, m) for m in allowed]
        load_method(config, list(dict.fromkeys(supported)), plugin)
    size, rows = config.get("batch_size_rows"), config.get("batch_rows")
    if size is not None and rows is not None and size != rows:
        raise ConfigError(
            f"{plugin}: batch_size_rows ({size}) and batch_rows ({rows}) disagree; "
            "they are one setting: give one"
        )


def target_batch_rows(config: Mapping[str, Any]) -> int:
    """RECORD lines decoded per batch: ``batch_size_rows`` (singer-sdk's name) if given,
    else ``batch_rows``."""
    size = config.get("batch_size_rows")
    return int(size if size is not None else config["batch_rows"])


def with_settings(schema: Mapping[str, Any], extra: Mapping[str, Any]) -> dict[str, Any]:
    """``schema`` with the properties of ``extra`` added where it does not define them."""
    merged = dict(schema)
    props = dict(merged.get("properties") or {})
    for key, value in extra.items():
        props.setdefault(key, value)
    merged["properties"] = props
    return merged


def target_schema(writer_schema: Mapping[str, Any]) -> dict[str, Any]:
    """A writer's settings as its target has them: its own plus :data:`TARGET_COMMON_SETTINGS`."""
    return with_settings(writer_schema, TARGET_COMMON_SETTINGS)


def with_defaults(schema: Mapping[str, Any], config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with the schema's defaults filled in (nothing is validated)."""
    filled = copy.deepcopy(dict(config))
    _fill(schema, filled)
    return filled


def validated(
    schema: Mapping[str, Any], config: Mapping[str, Any], *, plugin: str | None = None
) -> dict[str, Any]:
    """``config`` checked against ``schema`` and with its defaults filled in.

    Args:
        schema: The plugin's ``config_jsonschema``.
        config: The settings as given (not changed).
        plugin: The plugin's name, for the error message.

    Returns:
        A new dict: the settings with every default of the schema filled in.

    Raises:
        ConfigError: A setting is missing or malformed (one line, no setting values).
    """
    from jsonschema import Draft202012Validator

    filled = with_defaults(schema, config)
    errors = list(Draft202012Validator(dict(schema)).iter_errors(filled))
    if errors:
        raise ConfigError(_message(errors, plugin))
    return filled


def _fill(schema: Any, value: Any) -> None:
    if not isinstance(schema, Mapping):
        return
    for part in schema.get("allOf") or ():
        _fill(part, value)
    if isinstance(value, dict):
        props = schema.get("properties")
        if isinstance(props, Mapping):
            for key, sub in props.items():
                if key not in value and isinstance(sub, Mapping) and "default" in sub:
                    value[key] = copy.deepcopy(sub["default"])
                if key in value:
                    _fill(sub, value[key])
    elif isinstance(value, list):
        items = schema.get("items")
        if isinstance(items, Mapping):
            for item in value:
                _fill(items, item)


_KINDS = {
    "string": "a string",
    "integer": "an integer",
    "number": "a number",
    "boolean": "true or false",
    "array": "a list",
    "object": "a mapping",
    "null": "null",
}


_KIND_WORDS = {
    "null": "null",
    "boolean": "true or false",
    "integer": "an integer",
    "number": "a number",
    "string": "a string",
    "array": "a list",
    "object": "a mapping",
}


def _kind(value: Any) -> str:
    from dativo_bridge.schema import json_type_of  # imports pyarrow: only for an error

    kind = json_type_of(value)
    if kind == "any" and isinstance(value, Sequence):
        kind = "array"
    elif kind == "any" and isinstance(value, Mapping):
        kind = "object"
    return _KIND_WORDS.get(kind, type(value).__name__)


def _path(parts: Sequence[Any]) -> str:
    out = ""
    for part in parts:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _types(value: Any) -> str:
    names = [value] if isinstance(value, str) else list(value)
    return " or ".join(_KINDS.get(str(n), str(n)) for n in names)


def _expected(error: ValidationError) -> tuple[list[Any], str]:
    from jsonschema.exceptions import best_match

    """(path of the setting, what was expected there) for one error, without its value."""
    path = list(error.absolute_path)
    rule, want, given = error.validator, error.validator_value, error.instance
    if rule == "required":
        missing = [k for k in want if not (isinstance(given, Mapping) and k in given)]
        return [*path, missing[0] if missing else "?"], "is required"
    if rule == "type":
        return path, f"expected {_types(want)}, got {_kind(given)}"
    if rule in ("anyOf", "oneOf") and error.context:
        kinds = [e.validator_value for e in error.context if e.validator == "type"]
        if len(kinds) == len(error.context):
            return path, f"expected {' or '.join(_types(k) for k in kinds)}, got {_kind(given)}"
        return _expected(best_match(error.context))
    if rule == "additionalProperties":
        known = set((error.schema.get("properties") or {}) if error.schema else ())
        extra = sorted(str(k) for k in given if k not in known) if isinstance(given, dict) else []
        return path, f"unknown setting(s) {', '.join(repr(k) for k in extra)}"
    words = {
        "enum": lambda: "expected one of " + ", ".join(repr(v) for v in want),
        "const": lambda: f"expected {want!r}",
        "minimum": lambda: f"expected a number >= {want}",
        "maximum": lambda: f"expected a number <= {want}",
        "exclusiveMinimum": lambda: f"expected a number > {want}",
        "exclusiveMaximum": lambda: f"expected a number < {want}",
        "minLength": lambda: f"expected at least {want} character(s)",
        "maxLength": lambda: f"expected at most {want} character(s)",
        "minItems": lambda: f"expected at least {want} item(s)",
        "maxItems": lambda: f"expected at most {want} item(s)",
        "pattern": lambda: f"expected text matching {want!r}",
        "format": lambda: f"expected a {want}",
        "uniqueItems": lambda: "expected items that are all different",
    }
    describe = words.get(str(rule))
    if describe is not None:
        return path, describe()
    return path, f"does not satisfy the schema's {rule!r} rule"


def _message(errors: list[ValidationError], plugin: str | None) -> str:
    from jsonschema.exceptions import best_match

    first = best_match(errors)
    path, expected = _expected(first)
    name = _path(path)
    where = f"setting '{name}'" if name else "settings"
    sep = " " if expected.startswith("is ") else ": "
    more = f" (and {len(errors) - 1} more problem(s))" if len(errors) > 1 else ""
    return f"{plugin + ': ' if plugin else ''}{where}{sep}{expected}{more}"
