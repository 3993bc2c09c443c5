"""meltano.yml's entries of the Dativo plugins are what the plugins say about themselves:
`settings:` match the settings `--about` lists (every setting in both, a Meltano `kind` for
its JSON type, `sensitive: true` exactly for secrets, the enum as `options`, a label, the
schema's description and its default as `value`), and `capabilities:` are the ones
`--about` lists. meltano.yml is generated (`python -m dativo_bridge.plugin_docs
--meltano-yml`); the generator keeps everything else in the file. (A nested object is
declared whole, or every one of its properties as a dotted name such as `auth.token`.)"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

from dativo_bridge import plugin_docs
from dativo_bridge.plugin_docs import (
    NO_MELTANO_VALUE,
    about_settings,
    capabilities_of,
    plugin_classes,
    updated_meltano_yml,
)
from dativo_bridge.settings import check_target_settings
from tests.e2e.helpers import env, script

MELTANO_YML = Path(__file__).resolve().parents[2] / "meltano.yml"
CLASSES = plugin_classes()

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
    cls = CLASSES.get(plugin["executable"])
    assert cls is not None, f"{plugin['name']} is not a registered Dativo plugin"
    return about_settings(cls)


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
        if "enum" in prop:
            assert setting["kind"] == "options", name
            assert [o["value"] for o in setting["options"]] == prop["enum"], name
            assert all(o.get("label") for o in setting["options"]), name
        assert setting.get("label"), f"{name} has no label"
        assert setting.get("description") == " ".join(prop["description"].split()), name
        if "default" in prop and name not in NO_MELTANO_VALUE:
            assert setting.get("value") == prop["default"], f"{name}: value is not the default"
        else:
            assert "value" not in setting, f"{name}: a value the schema has no default for"


@pytest.mark.parametrize("plugin", _plugins(), ids=lambda p: p["name"])
def test_meltano_capabilities_and_settings_are_what_about_lists(plugin: dict[str, Any]) -> None:
    about = subprocess.run(
        [script(plugin["executable"]), "--about", "--format=json"],
        capture_output=True,
        text=True,
        env=env(),
        timeout=60,
        check=True,
    )
    listed = json.loads(about.stdout)["capabilities"]
    assert plugin["capabilities"] == listed
    settings = json.loads(about.stdout)["settings"]["properties"]
    assert {s["name"].split(".")[0] for s in plugin["settings"]} == set(settings)
    assert listed == capabilities_of(CLASSES[plugin["executable"]])
    if plugin["name"].startswith("tap-"):
        # Without them Meltano runs the tap without --catalog/--state: full re-reads.
        assert {"catalog", "state", "discover"} <= set(listed)


@pytest.mark.parametrize("name", [n for n in CLASSES if n.startswith("target-")])
def test_the_values_meltano_passes_never_make_a_users_setting_refused(name: str) -> None:
    """Meltano gives the plugin every setting's ``value``: with them, a user's singer-sdk
    setting (``batch_size_rows``, ``load_method``) must still be accepted."""
    schema = about_settings(CLASSES[name])
    values = {s["name"]: s["value"] for s in plugin_docs.meltano_settings(schema) if "value" in s}
    check_target_settings(values, schema, name)
    check_target_settings({**values, "batch_size_rows": 5000}, schema, name)
    for method in schema["properties"]["load_method"]["enum"]:
        check_target_settings({**values, "load_method": method}, schema, name)


def test_meltano_yml_is_generated_from_the_plugins() -> None:
    text = MELTANO_YML.read_text()
    assert updated_meltano_yml(text, CLASSES) == text, (
        "meltano.yml is stale: run python -m dativo_bridge.plugin_docs --meltano-yml"
    )


def test_every_dativo_plugin_is_checked() -> None:
    names = {p["name"] for p in _plugins()}
    assert {"tap-dativo-csv", "tap-dativo-postgres", "tap-dativo-rest"} <= names
    assert {"target-dativo-parquet", "target-dativo-iceberg", "target-dativo-s3"} <= names


PROJECT = """\
version: 1
# a comment that stays
plugins:
  extractors:
    - name: tap-dativo-csv
      namespace: tap_dativo_csv
      pip_url: dativo
      executable: tap-dativo-csv
      settings:
      - name: files
        kind: array
      config:
        files: [{stream: a, path: a.csv}]  # kept too
    # the next plugin inherits: left alone
    - name: tap-dativo-csv--other
      inherit_from: tap-dativo-csv
      capabilities: [about]
    - name: tap-foreign
      capabilities: [state]
      settings:
        - name: x
  loaders:
    - name: target-dativo-parquet
      namespace: target_dativo_parquet
      executable: target-dativo-parquet
      capabilities: [about, stream-maps]
      config:
        path: out
"""


def test_the_generator_rewrites_only_the_dativo_plugins_entries() -> None:
    new = updated_meltano_yml(PROJECT, CLASSES)
    assert updated_meltano_yml(new, CLASSES) == new
    for kept in (
        "# a comment that stays",
        "files: [{stream: a, path: a.csv}]  # kept too",
        "# the next plugin inherits: left alone",
        "      capabilities: [about]\n",
        "      capabilities: [state]\n      settings:\n        - name: x\n",
        "        path: out\n",
    ):
        assert kept in new, kept
    data = yaml.safe_load(new)
    tap, other, foreign = data["plugins"]["extractors"]
    (target,) = data["plugins"]["loaders"]
    assert tap["capabilities"] == capabilities_of(CLASSES["tap-dativo-csv"])
    assert tap["config"] == {"files": [{"stream": "a", "path": "a.csv"}]}
    assert [s["name"] for s in tap["settings"]][:2] == ["files", "delimiter"]
    assert other == {
        "name": "tap-dativo-csv--other",
        "inherit_from": "tap-dativo-csv",
        "capabilities": ["about"],
    }
    assert foreign == {
        "name": "tap-foreign",
        "capabilities": ["state"],
        "settings": [{"name": "x"}],
    }
    assert target["capabilities"] == capabilities_of(CLASSES["target-dativo-parquet"])
    assert "stream-maps" not in target["capabilities"]
    assert "path" in {s["name"] for s in target["settings"]}
    assert target["config"] == {"path": "out"}


def test_secret_objects_are_listed_property_by_property() -> None:
    settings = plugin_docs.meltano_settings(about_settings(CLASSES["tap-dativo-rest"]))
    by_name = {s["name"]: s for s in settings}
    assert "auth" not in by_name
    assert by_name["auth.token"]["sensitive"] is True
    assert by_name["auth.type"]["kind"] == "options" and by_name["auth.type"]["value"] == "none"
    assert "sensitive" not in by_name["auth.username"]


def test_check_mode_reports_a_stale_meltano_yml(tmp_path: Path) -> None:
    path = tmp_path / "meltano.yml"
    path.write_text(PROJECT)
    assert plugin_docs.main(["--meltano-yml", str(path), "--check"]) == 1
    assert path.read_text() == PROJECT
    assert plugin_docs.main(["--meltano-yml", str(path)]) == 0
    assert plugin_docs.main(["--meltano-yml", str(path), "--check"]) == 0
