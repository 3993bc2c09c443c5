"""`dativo plugins` and the reader/writer interface version.

The plugins of another distribution are a real installed distribution: a ``.dist-info``
directory with its METADATA and entry_points.txt on sys.path, as pip leaves it, with the
plugin modules beside it."""

from __future__ import annotations

import importlib.metadata
import json
import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner

from dativo_bridge.errors import PluginLoadError
from dativo_bridge.interfaces import INTERFACE_VERSION, ArrowReader, ArrowWriter
from dativo_bridge.loading import load_class, registered_plugin
from dativo_bridge.plugins_cli import plugins

OWN = {
    "tap-dativo-csv": "reader",
    "tap-dativo-postgres": "reader",
    "tap-dativo-rest": "reader",
    "target-dativo-parquet": "writer",
    "target-dativo-iceberg": "writer",
    "target-dativo-s3": "writer",
}

MODULE = textwrap.dedent(
    """
    import pyarrow as pa
    from dativo_bridge.interfaces import ArrowReader, ArrowWriter, CommitResult, StreamInfo


    class _Reader(ArrowReader):
        def discover(self):
            return [StreamInfo("s", pa.schema([("a", pa.int64())]))]

        def read(self, stream, bookmark=None):
            yield pa.record_batch({"a": [1]})


    class Current(_Reader):
        name = "acme-current"


    class NewerMinor(_Reader):
        name = "acme-newer-minor"
        interface_version = "1.9"


    class NewerMajor(_Reader):
        name = "acme-newer-major"
        interface_version = "2.0"


    class Malformed(_Reader):
        name = "acme-malformed"
        interface_version = 1


    class OldWriter(ArrowWriter):
        name = "acme-old-writer"
        interface_version = "0.3"

        def write(self, batch):
            pass

        def commit(self):
            return CommitResult()
    """
)

ENTRY_POINTS = {
    "acme-current": "acme_dativo_plugins:Current",
    "acme-newer-minor": "acme_dativo_plugins:NewerMinor",
    "acme-newer-major": "acme_dativo_plugins:NewerMajor",
    "acme-malformed": "acme_dativo_plugins:Malformed",
    "acme-old-writer": "acme_dativo_plugins:OldWriter",
    "acme-broken": "acme_dativo_missing_module:Reader",
}


@pytest.fixture()
def acme(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A distribution `acme-dativo-plugins` 3.2.1 installed on sys.path."""
    site = tmp_path / "site"
    info = site / "acme_dativo_plugins-3.2.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: acme-dativo-plugins\nVersion: 3.2.1\n"
    )
    lines = "".join(f"{name} = {value}\n" for name, value in ENTRY_POINTS.items())
    (info / "entry_points.txt").write_text(f"[dativo.plugins]\n{lines}")
    (site / "acme_dativo_plugins.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(site))
    yield site
    sys.modules.pop("acme_dativo_plugins", None)


def _listing(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(plugins, list(args))
    return result.exit_code, result.stdout, result.stderr


def test_json_lists_dativos_own_plugins_with_the_distributions_version() -> None:
    code, out, _ = _listing("--json")
    assert code == 0
    document = json.loads(out)
    version = importlib.metadata.version("dativo")
    assert document["dativo_version"] == version
    assert document["interface_version"] == INTERFACE_VERSION
    try:
        accel: str | None = importlib.metadata.version("dativo-accel")
    except importlib.metadata.PackageNotFoundError:
        accel = None
    assert document["accelerator_version"] == accel
    rows = {row["name"]: row for row in document["plugins"]}
    for name, kind in OWN.items():
        row = rows[name]
        assert row["kind"] == kind
        assert row["package"] == "dativo"
        assert row["version"] == version
        assert row["interface_version"] == INTERFACE_VERSION
        assert row["status"] == "ok", row
        assert "about" in row["capabilities"]
    assert "discover" in rows["tap-dativo-csv"]["capabilities"]
    assert "discover" not in rows["target-dativo-parquet"]["capabilities"]


def test_another_distributions_plugins_are_listed_with_their_status(acme: Path) -> None:
    code, out, _ = _listing("--json")
    assert code == 0
    rows = {row["name"]: row for row in json.loads(out)["plugins"]}
    current = rows["acme-current"]
    assert (current["package"], current["version"], current["kind"]) == (
        "acme-dativo-plugins",
        "3.2.1",
        "reader",
    )
    assert current["status"] == "ok"
    assert current["interface_version"] == INTERFACE_VERSION
    assert "discover" in current["capabilities"]
    assert rows["acme-newer-minor"]["status"] == "ok"
    old = rows["acme-old-writer"]
    assert (old["kind"], old["status"], old["interface_version"]) == (
        "writer",
        "incompatible",
        "0.3",
    )
    assert "older Dativo writer interface (0.3)" in old["error"]
    assert "acme-dativo-plugins 3.2.1" in old["error"]
    assert rows["acme-newer-major"]["status"] == "incompatible"
    assert "newer Dativo reader interface (2.0)" in rows["acme-newer-major"]["error"]
    assert rows["acme-malformed"]["status"] == "incompatible"
    assert rows["acme-broken"]["status"] == "cannot load"
    assert "acme_dativo_missing_module" in rows["acme-broken"]["error"]
    # Dativo's own are still listed beside them.
    assert set(OWN) <= set(rows)


def test_the_table_has_one_line_per_plugin_and_the_reasons_on_stderr(acme: Path) -> None:
    code, out, err = _listing()
    assert code == 0
    lines = out.splitlines()
    assert lines[0].startswith(
        f"Dativo {importlib.metadata.version('dativo')}, reader/writer interface "
        f"{INTERFACE_VERSION}, dativo-accel "
    )
    assert lines[1].split() == [
        "name",
        "kind",
        "package",
        "version",
        "interface",
        "status",
        "capabilities",
    ]
    by_name = {line.split()[0]: line.split() for line in lines[2:]}
    assert by_name["acme-old-writer"][:6] == [
        "acme-old-writer",
        "writer",
        "acme-dativo-plugins",
        "3.2.1",
        "0.3",
        "incompatible",
    ]
    assert by_name["tap-dativo-csv"][5:7] == ["ok", "catalog,"]
    assert len(by_name) == len(OWN) + len(ENTRY_POINTS)
    assert "acme-old-writer: plugin 'acme-old-writer'" in err


def test_loading_a_plugin_built_for_another_major_is_refused_clearly(acme: Path) -> None:
    assert registered_plugin("acme-current").__name__ == "Current"  # type: ignore[union-attr]
    with pytest.raises(PluginLoadError) as old:
        registered_plugin("acme-old-writer")
    message = str(old.value)
    assert message.startswith(
        "plugin 'acme-old-writer' (acme_dativo_plugins:OldWriter from acme-dativo-plugins "
        "3.2.1) was built for an older Dativo writer interface (0.3); this Dativo ("
    )
    assert f"provides interface {INTERFACE_VERSION}" in message
    assert "built for interface 1.x" in message
    with pytest.raises(PluginLoadError, match=r"newer Dativo reader interface \(2\.0\)"):
        registered_plugin("acme-newer-major")
    with pytest.raises(PluginLoadError, match=r"must be 'MAJOR\.MINOR'"):
        registered_plugin("acme-malformed")


def test_a_newer_minor_loads_with_a_warning(acme: Path, caplog: pytest.LogCaptureFixture) -> None:
    with caplog.at_level(logging.WARNING, logger="dativo.loading"):
        cls = registered_plugin("acme-newer-minor")
    assert cls is not None and cls.__name__ == "NewerMinor"
    warnings = [r.getMessage() for r in caplog.records if r.levelno == logging.WARNING]
    assert any("reader interface 1.9, newer than this Dativo's 1.0" in w for w in warnings)


def test_a_class_reference_is_checked_too(tmp_path: Path) -> None:
    """`module:Class` from a project's plugin_dirs (meltano.yml's reader_class) goes through
    the same check as an entry point."""
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "acme_dir_plugin.py").write_text(MODULE)
    try:
        with pytest.raises(PluginLoadError, match=r"older Dativo writer interface \(0\.3\)"):
            load_class(
                "acme_dir_plugin:OldWriter",
                ArrowWriter,
                allowed_dirs=["plugins"],
                project_dir=tmp_path,
            )
        current = load_class(
            "acme_dir_plugin:Current", ArrowReader, allowed_dirs=["plugins"], project_dir=tmp_path
        )
        assert current.interface_version == INTERFACE_VERSION
    finally:
        sys.modules.pop("acme_dir_plugin", None)


def test_dativo_run_stops_at_start_with_one_line_naming_the_plugin(tmp_path: Path) -> None:
    """meltano.yml's reader_class naming a reader built for interface 2.0: `dativo run`
    exits 1 before reading, with the loader's message and no traceback."""
    from dativo_bridge.cli import main

    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "acme_run_plugin.py").write_text(MODULE)
    (tmp_path / "meltano.yml").write_text(
        json.dumps(
            {
                "version": 1,
                "default_environment": "dev",
                "environments": [{"name": "dev"}],
                "plugins": {
                    "extractors": [
                        {
                            "name": "tap-acme",
                            "config": {
                                "reader_class": "acme_run_plugin:NewerMajor",
                                "plugin_dirs": ["plugins"],
                            },
                        }
                    ],
                    "loaders": [
                        {"name": "target-dativo-parquet", "config": {"path": str(tmp_path / "out")}}
                    ],
                },
            }
        )
    )
    try:
        result = CliRunner().invoke(
            main,
            [
                "run",
                "tap-acme",
                "target-dativo-parquet",
                "--project",
                str(tmp_path / "meltano.yml"),
            ],
        )
    finally:
        sys.modules.pop("acme_run_plugin", None)
    assert result.exit_code == 1, result.output
    assert "newer Dativo reader interface (2.0)" in result.output
    assert "Traceback" not in result.output
    assert not (tmp_path / "out").exists()


def test_a_users_tap_reports_its_own_distributions_version(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """--about's version of a tap built with make_tap around a user's reader is the user's
    distribution's (named as the plugin, as singer-sdk expects), not Dativo's; Dativo's
    own plugins keep Dativo's."""
    from dativo_bridge.sdk import make_tap
    from tap_dativo_csv.reader import CsvReader

    site = tmp_path / "site"
    info = site / "tap_weather-3.2.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: tap-weather\nVersion: 3.2.1\n")
    (site / "acme_weather.py").write_text(MODULE.replace('"acme-current"', '"tap-weather"'))
    monkeypatch.syspath_prepend(str(site))
    try:
        import acme_weather  # type: ignore[import-not-found]

        assert make_tap(acme_weather.Current).plugin_version == "3.2.1"
    finally:
        sys.modules.pop("acme_weather", None)
    assert make_tap(CsvReader).plugin_version == importlib.metadata.version("dativo")
