"""``--about`` of every Dativo plugin, plain and markdown, shows a default and a
description for each setting, and no setting (nested ones included) lacks a description."""

from __future__ import annotations

import json
import re
import subprocess
from typing import Any

import pytest

from tap_dativo_csv.tap import TapDativoCsv
from tap_dativo_postgres.tap import TapDativoPostgres
from tap_dativo_rest.tap import TapDativoRest
from target_dativo_iceberg.target import TargetDativoIceberg
from target_dativo_parquet.target import TargetDativoParquet
from target_dativo_s3.target import TargetDativoS3

PLUGINS = [
    TapDativoCsv,
    TapDativoPostgres,
    TapDativoRest,
    TargetDativoParquet,
    TargetDativoIceberg,
    TargetDativoS3,
]


def _settings(plugin: type[Any]) -> dict[str, Any]:
    """The settings as --about lists them (the SDK's built-in ones added)."""
    about: dict[str, Any] = plugin._get_about_info().settings
    return about


def _undescribed(schema: Any, path: str = "") -> list[str]:
    if not isinstance(schema, dict):
        return []
    missing = []
    for name, prop in (schema.get("properties") or {}).items():
        if not isinstance(prop, dict) or not prop.get("description"):
            missing.append(path + name)
        missing += _undescribed(prop, f"{path}{name}.")
    for key in ("items", "additionalProperties"):
        missing += _undescribed(schema.get(key), path)
    for key in ("anyOf", "oneOf", "allOf"):
        for sub in schema.get(key) or []:
            missing += _undescribed(sub, path)
    return missing


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_every_setting_has_a_description(plugin: type[Any]) -> None:
    assert _undescribed(_settings(plugin)) == []


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_plain_about_shows_default_and_description(
    plugin: type[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    plugin.print_about("text")
    text = capsys.readouterr().out
    settings = _settings(plugin)["properties"]
    blocks = text.split("\nSettings:\n", 1)[1].split("  - Name: ")[1:]
    assert [b.split("\n", 1)[0] for b in blocks] == list(settings)
    for block, (name, schema) in zip(blocks, settings.items(), strict=True):
        default = schema.get("default")
        shown = "(none)" if default is None else json.dumps(default)
        assert f"\n    Default: {shown}\n" in block, name
        assert f"\n    Description: {schema['description']}\n" in block, name


@pytest.mark.parametrize("plugin", PLUGINS, ids=lambda p: p.name)
def test_markdown_about_shows_default_and_description(
    plugin: type[Any], capsys: pytest.CaptureFixture[str]
) -> None:
    plugin.print_about("markdown")
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| ")]
    header, *body = rows
    assert header.startswith("| Setting | Required | Default | Description |")
    settings = _settings(plugin)["properties"]
    listed = {row.split(" | ")[0][2:]: row for row in body}  # nested ones dotted
    assert set(settings) <= set(listed)
    for name, schema in settings.items():
        assert listed[name].endswith(f" | {schema['description']} |"), name
    assert [name for name, row in listed.items() if re.search(r"\|\s*\|$", row)] == []


def test_console_script_prints_the_plain_about() -> None:
    done = subprocess.run(
        ["target-dativo-parquet", "--about"], capture_output=True, text=True, check=True
    )
    assert '  - Name: compression\n    Type: string\n    Default: "zstd"\n' in done.stdout
    assert "    Description: Parquet codec of the files.\n" in done.stdout
