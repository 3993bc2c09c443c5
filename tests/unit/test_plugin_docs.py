"""docs/plugins/NAME.md are up to date with each plugin's config_jsonschema (regenerated
and compared), list every setting and mark its secrets, and keep their hand-written part."""

from __future__ import annotations

import pytest

from dativo_bridge import plugin_docs
from dativo_bridge.plugin_docs import BEGIN, DOCS, END, plugin_classes, render, updated

PLUGINS = plugin_classes()


def test_the_six_dativo_plugins_have_pages() -> None:
    assert set(PLUGINS) == {
        "tap-dativo-csv",
        "tap-dativo-postgres",
        "tap-dativo-rest",
        "target-dativo-parquet",
        "target-dativo-iceberg",
        "target-dativo-s3",
    }


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_page_is_up_to_date_with_the_schema(name: str) -> None:
    page = (DOCS / f"{name}.md").read_text()
    assert updated(page, render(name, PLUGINS[name])) == page, (
        f"docs/plugins/{name}.md is stale: run python -m dativo_bridge.plugin_docs"
    )


@pytest.mark.parametrize("name", sorted(PLUGINS))
def test_page_lists_every_setting_and_marks_secrets(name: str) -> None:
    page = (DOCS / f"{name}.md").read_text()
    schema = PLUGINS[name].config_jsonschema  # type: ignore[attr-defined]
    rows = {line.split("|")[1].strip(" `"): line for line in page.splitlines() if "| `" in line}
    for setting, prop in schema["properties"].items():
        assert setting in rows, f"{setting} missing from docs/plugins/{name}.md"
        if prop.get("secret"):
            assert "**secret**" in rows[setting], setting
    for capability in PLUGINS[name].capabilities:  # type: ignore[attr-defined]
        assert f"`{capability.value}`" in page
    assert "## Delivery guarantees" in page.split(END)[1]
    assert "## Troubleshooting" in page.split(END)[1]


def test_regenerating_keeps_the_hand_written_part() -> None:
    page = f"{BEGIN}\nold\n{END}\n\n## Delivery guarantees\n\nkept\n"
    new = updated(page, f"{BEGIN}\nnew\n{END}\n")
    assert new == f"{BEGIN}\nnew\n{END}\n\n## Delivery guarantees\n\nkept\n"
    assert updated("", "region\n") == "region\n"


def test_a_setting_without_a_description_is_marked(monkeypatch: pytest.MonkeyPatch) -> None:
    cls = PLUGINS["target-dativo-parquet"]
    schema = {"type": "object", "properties": {"bare": {"type": "integer", "default": 3}}}
    monkeypatch.setattr(cls, "config_jsonschema", schema)
    text = render("target-dativo-parquet", cls)
    assert "| `bare` | integer | `3` | *(no description)* |" in text
    assert "have no description yet" in text


def test_check_mode_reports_a_stale_page(tmp_path: object, capsys: pytest.CaptureFixture) -> None:
    assert plugin_docs.main(["--check", "--dir", str(tmp_path)]) == 1
    assert "out of date" in capsys.readouterr().err
    assert plugin_docs.main(["--dir", str(tmp_path)]) == 0
    assert plugin_docs.main(["--check", "--dir", str(tmp_path)]) == 0


def test_writing_plugins_meltano_examples_declare_the_about_capabilities() -> None:
    """Every meltano.yml entry in docs/writing-plugins.md declares exactly the capabilities
    the plugin's --about lists (without catalog and state Meltano re-reads everything)."""
    import re

    import yaml

    from dativo_bridge.plugin_docs import capabilities_of
    from dativo_bridge.sdk import ArrowTap, ArrowTarget

    text = (DOCS.parent / "writing-plugins.md").read_text()
    entries = [
        (kind, plugin)
        for block in re.findall(r"```yaml\n(.*?)```", text, re.S)
        for kind, plugins in (yaml.safe_load(block).get("plugins") or {}).items()
        for plugin in plugins
    ]
    assert len(entries) >= 4
    for kind, plugin in entries:
        cls = PLUGINS.get(plugin["executable"]) or (
            ArrowTap if kind == "extractors" else ArrowTarget
        )
        assert plugin.get("capabilities") == capabilities_of(cls), plugin["name"]
