"""What a plugin's start-up imports: ``--about`` of every Dativo tap and target loads
singer-sdk and the plugin's settings, nothing of pyarrow, psycopg, pyiceberg or the
codecs; ``--discover`` of tap-dativo-csv needs no pyarrow.compute; the Python API's
``run`` loads no singer-sdk (issue 22; bench/startup.py measures the times)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from dativo_bridge.deferred import DeferredClass
from dativo_bridge.errors import PluginLoadError
from dativo_bridge.sdk import make_target

#: Each plugin's Singer entry point (pyproject.toml [project.scripts]).
ENTRY_POINTS = {
    "tap-dativo-csv": ("tap_dativo_csv.tap", "TapDativoCsv"),
    "tap-dativo-postgres": ("tap_dativo_postgres.tap", "TapDativoPostgres"),
    "tap-dativo-rest": ("tap_dativo_rest.tap", "TapDativoRest"),
    "target-dativo-parquet": ("target_dativo_parquet.target", "TargetDativoParquet"),
    "target-dativo-iceberg": ("target_dativo_iceberg.target", "TargetDativoIceberg"),
    "target-dativo-s3": ("target_dativo_s3.target", "TargetDativoS3"),
}

#: Modules no --about may load (singer-sdk itself loads fsspec and singer_sdk.helpers._batch,
#: as every singer-sdk plugin does; they are checked as "nothing beyond singer-sdk" below).
HEAVY = ("pyarrow", "psycopg", "pyiceberg", "cryptography", "boto3", "orjson", "dativo_accel")
OWN = ("dativo_bridge", "tap_dativo_", "target_dativo_")

#: Runs ``argv`` of one plugin's CLI as its console script does, then prints the names of
#: the modules loaded (at exit: the CLI ends with sys.exit).
_RUN = """\
import atexit, importlib, json, sys
module, attr, *argv = sys.argv[1:]
atexit.register(lambda: sys.__stderr__.write("\\nMODULES " + json.dumps(sorted(sys.modules))))
sys.argv = [module, *argv]
getattr(importlib.import_module(module), attr).cli()
"""


def _loaded(code: str, *args: str) -> tuple[set[str], str]:
    done = subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, timeout=60
    )
    marker = done.stderr.rpartition("\nMODULES ")
    assert marker[1], done.stderr
    return set(json.loads(marker[2])), done.stdout


def _singer_sdk_modules() -> set[str]:
    code = (
        "import atexit, json, sys, singer_sdk, singer_sdk.about\n"
        "atexit.register(lambda: sys.__stderr__.write('\\nMODULES ' + json.dumps(sorted(sys.modules))))"
    )
    return _loaded(code)[0]


def _top(name: str) -> str:
    return name.partition(".")[0]


@pytest.fixture(scope="module")
def sdk_modules() -> set[str]:
    return _singer_sdk_modules()


@pytest.mark.parametrize("plugin", sorted(ENTRY_POINTS))
def test_about_imports_only_singer_sdk_and_settings(plugin: str, sdk_modules: set[str]) -> None:
    module, attr = ENTRY_POINTS[plugin]
    loaded, out = _loaded(_RUN, module, attr, "--about", "--format=json")
    assert json.loads(out)["name"] == plugin
    heavy = sorted(m for m in loaded if _top(m) in HEAVY)
    assert not heavy, f"{plugin} --about imports {heavy[:8]}"
    # Packages singer-sdk loads may load more of themselves (--about reads the version).
    sdk_packages = {_top(m) for m in sdk_modules}
    extra = sorted(
        m
        for m in loaded
        if not m.startswith(OWN) and _top(m) not in (sdk_packages | sys.stdlib_module_names)
    )
    assert not extra, f"{plugin} --about imports more than singer-sdk does: {extra[:8]}"
    # Dativo's own: the plugin's settings, never its reader/writer or the codecs.
    own = sorted(m for m in loaded if m.startswith(OWN))
    for name in own:
        assert not name.endswith((".reader", ".writer")), f"{plugin} --about imports {name}"
        assert not name.startswith(("dativo_bridge.codecs", "dativo_bridge.maps")), name
    assert "dativo_bridge.batch_files" not in loaded


def test_discover_of_csv_tap_needs_no_pyarrow_compute(tmp_path: Path) -> None:
    data = tmp_path / "one.csv"
    data.write_text("id,name\n1,a\n", encoding="utf-8")
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps({"files": [{"stream": "one", "path": str(data), "key_properties": ["id"]}]}),
        encoding="utf-8",
    )
    module, attr = ENTRY_POINTS["tap-dativo-csv"]
    loaded, out = _loaded(_RUN, module, attr, "--config", str(config), "--discover")
    assert [s["tap_stream_id"] for s in json.loads(out)["streams"]] == ["one"]
    assert "pyarrow.csv" in loaded  # it did read the file
    for name in ("pyarrow.compute", "psycopg", "dativo_bridge.codecs.decode"):
        assert name not in loaded, f"tap-dativo-csv --discover imports {name}"


@pytest.mark.parametrize(
    "statement", ["import dativo_bridge; dativo_bridge.run", "from dativo_bridge import run"]
)
def test_run_loads_no_singer_sdk(statement: str) -> None:
    code = (
        "import atexit, json, sys\n"
        "atexit.register(lambda: sys.__stderr__.write('\\nMODULES ' + json.dumps(sorted(sys.modules))))\n"
        + statement
    )
    loaded, _ = _loaded(code)
    assert not sorted(m for m in loaded if _top(m) == "singer_sdk")


@pytest.mark.parametrize("plugin", sorted(ENTRY_POINTS))
def test_deferred_class_is_the_plugins_class(plugin: str) -> None:
    """The class imported on first use has the plugin's name and the very settings dict
    its --about shows (the settings module's)."""
    import importlib

    module, attr = ENTRY_POINTS[plugin]
    cls = getattr(importlib.import_module(module), attr)
    part_attr = "reader_class" if plugin.startswith("tap-") else "writer_class"
    deferred = cls.__dict__.get(part_attr) or next(
        k.__dict__[part_attr] for k in cls.__mro__ if part_attr in k.__dict__
    )
    assert isinstance(deferred, DeferredClass)
    part = getattr(cls, part_attr)
    assert part.name == plugin
    assert part.config_jsonschema is deferred.config_jsonschema
    for key, value in part.config_jsonschema["properties"].items():
        assert cls.config_jsonschema["properties"][key] == value


def test_deferred_class_with_other_settings_is_refused() -> None:
    from target_dativo_parquet.settings import CONFIG_JSONSCHEMA

    other = {**CONFIG_JSONSCHEMA, "required": []}
    target = make_target(
        DeferredClass("target_dativo_parquet.writer:ParquetWriter", "target-dativo-parquet", other)
    )
    with pytest.raises(PluginLoadError, match="target-dativo-parquet: the config_jsonschema"):
        _ = target.writer_class
    misnamed = make_target(
        DeferredClass("target_dativo_parquet.writer:ParquetWriter", "target-x", CONFIG_JSONSCHEMA)
    )
    with pytest.raises(PluginLoadError, match=r"target-x: .* is named 'target-dativo-parquet'"):
        _ = misnamed.writer_class
    with pytest.raises(PluginLoadError, match="target-x: cannot load"):
        DeferredClass("target_dativo_parquet.writer:NoSuchWriter", "target-x", {}).load()
    with pytest.raises(PluginLoadError, match="is not a module:Class reference"):
        DeferredClass("target_dativo_parquet.writer", "target-x", {})


def test_s3_frame_size_default_is_the_crypto_formats() -> None:
    from dativo_bridge.crypto.format import DEFAULT_FRAME_LENGTH
    from target_dativo_s3.settings import CONFIG_JSONSCHEMA

    assert CONFIG_JSONSCHEMA["properties"]["frame_size"]["default"] == DEFAULT_FRAME_LENGTH


_AT_EXIT = (
    "import atexit, json, sys\n"
    "atexit.register(lambda: sys.__stderr__.write('\\nMODULES ' + json.dumps(sorted(sys.modules))))\n"
)

#: What only some subcommands or code paths of `dativo` need (issue 22).
NOT_FOR_RUN = (
    "dativo_bridge.decrypt_cli",
    "dativo_bridge.crypto",
    "dativo_bridge.testkit",
    "dativo_bridge.plugins_cli",
    "dativo_bridge.sandbox_cli",
    "dativo_bridge.sandbox.launcher",
    "rich.table",
    "rich.live",
    "jsonschema",
    "boto3",
)


def _under(loaded: set[str], prefixes: tuple[str, ...]) -> list[str]:
    return sorted(
        m for m in loaded if m in prefixes or m.startswith(tuple(f"{p}." for p in prefixes))
    )


def test_dativo_cli_imports_no_subcommand_and_no_runner() -> None:
    loaded, _ = _loaded(_AT_EXIT + "import dativo_bridge.cli")
    heavy = ("dativo_bridge.runner", "dativo_bridge.meltano_state", "pyarrow", "yaml", "rich")
    assert not _under(loaded, NOT_FOR_RUN + heavy)


def test_run_path_imports_only_what_run_uses() -> None:
    """What `dativo run` imports before its plugins (run_command's own imports): none of
    the other subcommands, the sandbox launcher, rich's table and live display, and no
    jsonschema before a config is validated."""
    code = _AT_EXIT + (
        "import dativo_bridge.cli, rich.markup\n"
        "import dativo_bridge.foreign, dativo_bridge.meltano_state, dativo_bridge.project\n"
        "import dativo_bridge.redact, dativo_bridge.runner, dativo_bridge.loading\n"
        "dativo_bridge.cli.make_console(stderr=True)"
    )
    loaded, _ = _loaded(code)
    assert "dativo_bridge.runner" in loaded
    assert not _under(loaded, NOT_FOR_RUN)


def test_lazy_subcommands_are_listed_and_named_as_registered() -> None:
    import click
    from click.testing import CliRunner

    from dativo_bridge.cli import LAZY_COMMANDS, main

    ctx = click.Context(main)
    assert set(LAZY_COMMANDS) <= set(main.list_commands(ctx))
    for name in LAZY_COMMANDS:
        command = main.get_command(ctx, name)
        assert command is not None and command.name == name
    out = CliRunner().invoke(main, ["--help"]).output
    for name in ("run", *LAZY_COMMANDS):
        assert f"\n  {name} " in out, out
    assert main.get_command(ctx, "no-such-command") is None


def test_sandbox_cli_imports_no_runner_or_rich() -> None:
    loaded, _ = _loaded(_AT_EXIT + "import dativo_bridge.sandbox_cli")
    assert "dativo_bridge.sandbox.launcher" in loaded
    heavy = (
        "dativo_bridge.runner",
        "pyarrow",
        "rich",
        "yaml",
        "jsonschema",
        "dativo_bridge.crypto",
    )
    assert not _under(loaded, heavy)
