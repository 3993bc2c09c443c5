"""hub/: the Meltano Hub definitions of the Dativo plugins, generated from the plugins."""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

import pytest
import yaml

from dativo_bridge import plugin_docs
from dativo_bridge.plugin_docs import about_settings, capabilities_of, plugin_classes

HUB = Path(__file__).resolve().parents[2] / "hub"
#: The setting kinds Meltano knows.
KINDS = {
    "string",
    "integer",
    "decimal",
    "boolean",
    "date_iso8601",
    "email",
    "password",
    "oauth",
    "options",
    "file",
    "array",
    "object",
    "hidden",
}


def _secret(prop: dict) -> bool:
    return bool(prop.get("secret") or prop.get("sensitive") or prop.get("writeOnly"))


def test_the_committed_definitions_are_up_to_date(capsys: pytest.CaptureFixture[str]) -> None:
    code = plugin_docs.main(["--hub", str(HUB), "--check"])
    assert code == 0, capsys.readouterr().err
    files = sorted(p.relative_to(HUB).as_posix() for p in HUB.rglob("*.yml"))
    expected = sorted(plugin_docs.hub_path(name).as_posix() for name in plugin_classes())
    assert files == expected


def test_check_names_a_stale_or_missing_definition(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert plugin_docs.main(["--hub", str(tmp_path)]) == 0
    written = sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*.yml"))
    assert written == sorted(p.relative_to(HUB).as_posix() for p in HUB.rglob("*.yml"))
    for path in tmp_path.rglob("*.yml"):
        assert path.read_text() == (HUB / path.relative_to(tmp_path)).read_text()
    stale = tmp_path / "loaders" / "target-dativo-parquet.yml"
    stale.write_text(stale.read_text().replace("kind: boolean", "kind: string", 1))
    (tmp_path / "extractors" / "tap-dativo-rest.yml").unlink()
    capsys.readouterr()
    assert plugin_docs.main(["--hub", str(tmp_path), "--check"]) == 1
    err = capsys.readouterr().err
    assert str(stale) in err and "tap-dativo-rest.yml" in err
    assert "--hub" in err
    assert not (tmp_path / "extractors" / "tap-dativo-rest.yml").exists()  # --check writes nothing


@pytest.mark.parametrize("name", sorted(plugin_classes()))
def test_a_definition_describes_the_plugin(name: str) -> None:
    cls = plugin_classes()[name]
    definition = yaml.safe_load((HUB / plugin_docs.hub_path(name)).read_text())
    for key in ("name", "namespace", "variant", "label", "pip_url", "executable"):
        assert definition.get(key), f"{name}: no {key}"
    assert definition["name"] == definition["executable"] == name
    assert definition["namespace"] == name.replace("-", "_")
    # The executable is a console script of the distribution pip_url installs.
    scripts = {ep.name for ep in importlib.metadata.distribution("dativo").entry_points}
    assert definition["pip_url"] == "dativo" and name in scripts
    assert definition["capabilities"] == capabilities_of(cls)
    schema = about_settings(cls)
    properties = schema["properties"]
    settings = definition["settings"]
    assert {s["name"].split(".")[0] for s in settings} == set(properties)
    for setting in settings:
        assert setting["kind"] in KINDS, setting
        assert setting["label"]
        top, _, sub = setting["name"].partition(".")
        prop = properties[top]["properties"][sub] if sub else properties[top]
        assert setting.get("sensitive", False) == _secret(prop), setting["name"]
        if "enum" in prop:
            assert [o["value"] for o in setting["options"]] == prop["enum"]
    names = {s["name"] for s in settings}
    for group in definition.get("settings_group_validation", []):
        assert set(group) <= names
    assert definition.get("settings_group_validation", [[]])[0] == [
        s for s in schema.get("required", []) if s in properties
    ]
