"""meltano.yml's `settings:` of every Dativo plugin match its `config_jsonschema`: every
setting in one is in the other, with a Meltano `kind` for its JSON type and `sensitive:
true` exactly for the schema's secrets. (A nested object is declared whole, or every one
of its properties as a dotted name such as `auth.token`.)"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from dativo_bridge.batch_files import BATCH_CONFIG_SCHEMA
from dativo_bridge.interfaces import ArrowWriter
from dativo_bridge.loading import registered_plugin
from dativo_bridge.settings import target_schema, with_settings

MELTANO_YML = Path(__file__).resolve().parents[2] / "meltano.yml"

#: The Meltano kinds that can carry each JSON Schema type.
KINDS = {
    "string": {"string", "password", "options", "date_iso8601", "email", "file"},
    "integer": {"integer"},
    "number": {"decimal"},
    "boolean": {"boolean"},
    "object": {"object"},
    "array": {"array"},
}


def _plugins() -> list[dict[str, Any]]:
    data = yaml.safe_load(MELTANO_YML.read_text())
    found = []
    for kind in ("extractors", "loaders"):
        for plugin in data["plugins"][kind]:
            if str(plugin.get("namespace", "")).startswith(("tap_dativo", "target_dativo")):
                found.append(plugin)
    return found


def _schema(plugin: Mapping[str, Any]) -> dict[str, Any]:
    cls = registered_plugin(plugin["executable"])
    assert cls is not None, f"{plugin['name']} is not a registered Dativo plugin"
    if issubclass(cls, ArrowWriter):
        return target_schema(cls.config_jsonschema)
    return with_settings(cls.config_jsonschema, {"batch_config": BATCH_CONFIG_SCHEMA})


def _json_type(prop: Mapping[str, Any]) -> str:
    kind = prop.get("type", "object" if "properties" in prop else "string")
    if isinstance(kind, list):
        kind = next(k for k in kind if k != "null")
    return str(kind)


def _expected(schema: Mapping[str, Any], declared: set[str]) -> Iterator[tuple[str, dict]]:
    """(setting name, its schema) as meltano.yml should list them: a property by its name,
    or an object's properties by dotted names where meltano.yml lists any of them so."""
    for name, prop in (schema.get("properties") or {}).items():
        if name not in declared and any(d.startswith(f"{name}.") for d in declared):
            for nested, sub in _expected(prop, {d[len(name) + 1 :] for d in declared}):
                yield f"{name}.{nested}", sub
        else:
            yield name, prop


@pytest.mark.parametrize("plugin", _plugins(), ids=lambda p: p["name"])
def test_meltano_settings_match_the_plugin_schema(plugin: dict[str, Any]) -> None:
    settings = {s["name"]: s for s in plugin.get("settings") or []}
    expected = dict(_expected(_schema(plugin), set(settings)))
    assert sorted(set(expected) - set(settings)) == [], "in the schema, not in meltano.yml"
    assert sorted(set(settings) - set(expected)) == [], "in meltano.yml, not in the schema"
    for name, prop in expected.items():
        setting = settings[name]
        json_type = _json_type(prop)
        assert setting.get("kind") in KINDS[json_type], (name, setting.get("kind"), json_type)
        secret = bool(prop.get("secret") or prop.get("sensitive"))
        assert bool(setting.get("sensitive")) == secret, f"{name}: sensitive should be {secret}"
        if "enum" in prop and setting.get("kind") == "options":
            values = [o["value"] for o in setting["options"]]
            assert values == prop["enum"], name


def test_every_dativo_plugin_is_checked() -> None:
    names = {p["name"] for p in _plugins()}
    assert {"tap-dativo-csv", "tap-dativo-postgres", "tap-dativo-rest"} <= names
    assert {"target-dativo-parquet", "target-dativo-iceberg", "target-dativo-s3"} <= names
