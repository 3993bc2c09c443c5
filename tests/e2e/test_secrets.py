"""Trust at the edges of secrets and loading: symlinked plugins are refused before any of
their code runs, config files of killed runs do not outlive them, and Dativo taps and
targets run as Singer plugins mask their errors and their libraries' logs."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from dativo_bridge.errors import PluginLoadError
from dativo_bridge.interfaces import ArrowReader
from dativo_bridge.loading import load_class

from .helpers import dativo_run, env, script, write_project

EVIL = (
    "import pathlib\n"
    "pathlib.Path({marker!r}).write_text('ran')\n"
    "from dativo_bridge import ArrowReader\n"
    "class R(ArrowReader):\n"
    "    pass\n"
)


def _outside(tmp_path: Path) -> tuple[Path, Path]:
    """(a directory outside the project, the marker file its code would write)."""
    outside = tmp_path / "outside"
    outside.mkdir()
    return outside, outside / "MARKER"


def _project_dir(tmp_path: Path) -> Path:
    project = tmp_path / "project"
    (project / "plugins").mkdir(parents=True)
    return project


def test_symlinked_module_is_refused_by_dativo_run_before_it_runs(tmp_path: Path) -> None:
    outside, marker = _outside(tmp_path)
    (outside / "evil_linked_mod.py").write_text(EVIL.format(marker=str(marker)))
    project = _project_dir(tmp_path)
    (project / "plugins" / "evil_linked_mod.py").symlink_to(outside / "evil_linked_mod.py")
    meltano = write_project(
        project,
        [
            {
                "name": "tap-linked",
                "config": {"reader_class": "evil_linked_mod:R", "plugin_dirs": ["plugins"]},
            }
        ],
        [{"name": "target-dativo-parquet", "config": {"path": str(project / "out")}}],
    )
    done = dativo_run(meltano, "tap-linked", "target-dativo-parquet", check=False)
    assert done.returncode == 1, done.stderr
    shown = " ".join(done.stderr.split())  # rich wraps long lines
    assert "neither an installed package nor inside an allowed plugin directory" in shown
    assert not marker.exists(), "the module's top-level code ran before it was refused"


@pytest.mark.parametrize("layout", ["package_dir", "submodule_file", "subpackage_dir"])
def test_symlinked_package_parts_are_refused_before_import(tmp_path: Path, layout: str) -> None:
    outside, marker = _outside(tmp_path)
    project = _project_dir(tmp_path)
    name = f"evil_pkg_{layout}"
    package = project / "plugins" / name
    if layout == "package_dir":
        (outside / name).mkdir()
        (outside / name / "__init__.py").write_text(EVIL.format(marker=str(marker)))
        (outside / name / "mod.py").write_text("")
        package.symlink_to(outside / name)
        reference = f"{name}.mod:R"
    elif layout == "submodule_file":
        package.mkdir()
        (package / "__init__.py").write_text("")
        (outside / "mod.py").write_text(EVIL.format(marker=str(marker)))
        (package / "mod.py").symlink_to(outside / "mod.py")
        reference = f"{name}.mod:R"
    else:
        package.mkdir()
        (package / "__init__.py").write_text("")
        (outside / "sub").mkdir()
        (outside / "sub" / "__init__.py").write_text(EVIL.format(marker=str(marker)))
        (outside / "sub" / "mod.py").write_text("")
        (package / "sub").symlink_to(outside / "sub")
        reference = f"{name}.sub.mod:R"
    try:
        with pytest.raises(PluginLoadError, match="would be imported from"):
            load_class(reference, ArrowReader, allowed_dirs=["plugins"], project_dir=project)
    finally:
        for key in [m for m in sys.modules if m.startswith(name)]:
            del sys.modules[key]
    assert not marker.exists(), "code from outside the project ran before the refusal"


def _script(path: Path, body: str) -> str:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(0o755)
    return path.name


def test_killed_run_leaves_no_plaintext_config_and_the_next_run_removes_its_dir(
    tmp_path: Path,
) -> None:
    secret = "Zq9-target-secret-4711"
    tap = _script(
        tmp_path / "tap_slow.py",
        "import json, time\n"
        "print(json.dumps({'type': 'SCHEMA', 'stream': 's', 'key_properties': ['id'],"
        " 'schema': {'type': 'object', 'properties': {'id': {'type': 'integer'}}}}),"
        " flush=True)\n"
        "for i in range(3000):\n"
        "    print(json.dumps({'type': 'RECORD', 'stream': 's', 'record': {'id': i}}),"
        " flush=True)\n"
        "    time.sleep(0.01)\n",
    )
    target = _script(
        tmp_path / "target_read.py",
        "import json, sys\n"
        "config = json.load(open(sys.argv[sys.argv.index('--config') + 1]))\n"
        "assert config['api_secret']\n"
        "open('config-was-read', 'w').close()\n"
        "for line in sys.stdin:\n"
        "    pass\n",
    )
    meltano = write_project(
        tmp_path,
        [{"name": "tap-slow", "executable": tap}],
        [{"name": "target-read", "executable": target, "config": {"api_secret": secret}}],
    )
    before = {p.name for p in Path(tempfile.gettempdir()).glob("dativo-plugin-*")}
    proc = subprocess.Popen(
        [script("dativo"), "run", "tap-slow", "target-read", "--project", str(meltano)],
        cwd=tmp_path,
        env=env(),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 60
        while not _new_private_dirs(before) and time.monotonic() < deadline:
            time.sleep(0.05)
        created = _new_private_dirs(before)
        assert created, "the run made no private directory"
        while not (tmp_path / "config-was-read").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert (tmp_path / "config-was-read").exists(), "the target could not read its config"
        tmp = Path(tempfile.gettempdir())
        for name in created:
            for path in (tmp / name).rglob("*"):
                if path.is_file():
                    text = path.read_text(errors="replace")
                    assert secret not in text, f"{path} holds the secret in plaintext"
    finally:
        os.killpg(proc.pid, signal.SIGKILL)  # the run and its plugins, as `kill -9 -PGID`
        proc.wait(timeout=30)
    assert [n for n in created if (tmp / n).exists()], "the killed run left its directory"
    # The next start removes the private directories of runs whose process is dead.
    done = dativo_run(meltano, "tap-missing", "target-read", check=False)
    assert done.returncode == 2  # an undefined plugin is a usage error (docs/dativo-run.md)
    assert not [n for n in created if (tmp / n).exists()], "stale private directories remain"
    assert secret not in done.stderr + done.stdout


def _new_private_dirs(before: set[str]) -> set[str]:
    tmp = Path(tempfile.gettempdir())
    return {p.name for p in tmp.glob("dativo-plugin-*")} - before


TOKEN = "s3cr3t-token-0f9e8d"
FAILING_PLUGINS = """
from dativo_bridge import ArrowReader, ArrowWriter
from dativo_bridge.errors import ConfigError

class RefusedReader(ArrowReader):
    name = "tap-refused"
    config_jsonschema = {"type": "object", "properties": {"api_token": {"type": "string"}}}

    def discover(self):
        raise ConfigError(f"login refused for token {self.config['api_token']}")

    def read(self, stream, bookmark):
        raise AssertionError("unreachable")

class RefusedWriter(ArrowWriter):
    name = "target-refused"
    config_jsonschema = {"type": "object", "properties": {"api_token": {"type": "string"}}}

    def open(self, config, stream):
        raise ConfigError(f"login refused for token {config['api_token']}")

    def write(self, batch):
        raise AssertionError("unreachable")

    def commit(self):
        raise AssertionError("unreachable")
"""
SINGER_INPUT = (
    '{"type": "SCHEMA", "stream": "s", "key_properties": ["id"], '
    '"schema": {"type": "object", "properties": {"id": {"type": "integer"}}}}\n'
    '{"type": "RECORD", "stream": "s", "record": {"id": 1}}\n'
)


@pytest.mark.parametrize(
    ("command", "args"),
    [
        ("tap-dativo-custom", []),
        ("tap-dativo-custom", ["--discover"]),
        ("target-dativo-custom", []),
    ],
)
@pytest.mark.parametrize("level", ["INFO", "DEBUG"])
def test_singer_plugin_error_is_one_masked_line(
    tmp_path: Path, command: str, args: list[str], level: str
) -> None:
    (tmp_path / "plugins").mkdir()
    (tmp_path / "plugins" / "refusing_plugins.py").write_text(FAILING_PLUGINS)
    setting = "reader_class" if command.startswith("tap") else "writer_class"
    kind = "RefusedReader" if command.startswith("tap") else "RefusedWriter"
    config = tmp_path / "config.json"
    config.write_text(
        json.dumps(
            {setting: f"refusing_plugins:{kind}", "plugin_dirs": ["plugins"], "api_token": TOKEN}
        )
    )
    done = subprocess.run(
        [script(command), "--config", str(config), *args],
        input=SINGER_INPUT if command.startswith("target") else "",
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env(), "LOGLEVEL": level},
        timeout=120,
        check=False,
    )
    assert done.returncode == 1, done.stderr
    assert TOKEN not in done.stderr + done.stdout, done.stderr
    assert "ConfigError: login refused for token ********" in done.stderr, done.stderr
    assert ("Traceback" in done.stderr) == (level == "DEBUG"), done.stderr


def test_s3_target_at_debug_masks_credentials_in_botocore_logs(tmp_path: Path) -> None:
    from ..integration.s3_encryption.support import aws_settings, write_key
    from ..integration.s3server import new_bucket

    access_key = "AKIADATIVOTEST0KEY77"
    secret_key = "wJalrXUtnFEMI-K7MDENG-bPxRfiCYEXAMPLEKEY"
    config = {
        **aws_settings(),
        "aws_access_key_id": access_key,
        "aws_secret_access_key": secret_key,
        "bucket": new_bucket("dativo-secrets"),
        "key_file": str(write_key(tmp_path / "local.key")),
    }
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    done = subprocess.run(
        [script("target-dativo-s3"), "--config", str(path)],
        input=SINGER_INPUT,
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env(), "LOGLEVEL": "DEBUG"},
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert "botocore" in done.stderr, "botocore logged nothing at DEBUG"
    assert access_key not in done.stderr and secret_key not in done.stderr
    assert "********" in done.stderr
