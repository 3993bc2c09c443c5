"""`dativo run` with ${SECRET:...} references and a files backend: the plugin gets the
value, and neither stderr nor the --json summary shows it, even when the plugin's own error
message contains it (bare, or base64-encoded in a log line)."""

from __future__ import annotations

import base64
import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from .helpers import dativo_run, env, read_parquet_dir, script

VALUE = "Zq8-file-secret-Value-3141"

READER = '''
import base64
import logging

import pyarrow as pa

from dativo_bridge import ArrowReader, DativoError, StreamInfo

SCHEMA = pa.schema([pa.field("id", pa.int64(), nullable=False), ("greeting", pa.string())])


class GreetingReader(ArrowReader):
    """One row carrying its ``greeting`` setting; with ``fail`` it logs and raises the
    word after "hello" (the secret), as a careless plugin would."""

    name = "tap-greeting"
    config_jsonschema = {
        "type": "object",
        "properties": {"greeting": {"type": "string"}, "fail": {"type": "boolean"}},
    }

    def discover(self):
        return [StreamInfo("greetings", SCHEMA, ("id",))]

    def read(self, stream, bookmark):
        greeting = self.config["greeting"]
        yield pa.record_batch([pa.array([1], pa.int64()), pa.array([greeting])], schema=SCHEMA)
        if self.config.get("fail"):
            word = greeting.split()[1]
            encoded = base64.b64encode(word.encode()).decode()
            logging.getLogger("tap-greeting").warning("Authorization: Basic %s", encoded)
            raise DativoError(f"server rejected {word}")
'''


def _project(tmp_path: Path, *, fail: bool = False, mode: int = 0o600) -> Path:
    project = tmp_path / "project"
    (project / "plugins").mkdir(parents=True)
    (project / "plugins" / "greeting_reader.py").write_text(READER)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    (secrets / "api_token").write_text(VALUE + "\n")
    (secrets / "api_token").chmod(mode)
    data = {
        "version": 1,
        "dativo": {"secrets": {"backend": "files", "directory": str(secrets)}},
        "plugins": {
            "extractors": [
                {
                    "name": "tap-greeting",
                    "config": {
                        "reader_class": "greeting_reader:GreetingReader",
                        "plugin_dirs": ["plugins"],
                        "greeting": "hello ${SECRET:api_token}",
                        "fail": fail,
                    },
                }
            ],
            "loaders": [
                {"name": "target-dativo-parquet", "config": {"path": str(tmp_path / "out")}}
            ],
        },
    }
    path = project / "meltano.yml"
    path.write_text(yaml.safe_dump(data, sort_keys=False))
    return path


def _shown(text: str) -> str:
    return " ".join(text.split())  # rich wraps long lines


def test_plugin_gets_the_file_secret_and_the_summary_does_not_show_it(tmp_path: Path) -> None:
    done = dativo_run(_project(tmp_path), "tap-greeting", "target-dativo-parquet", "--json")
    table = read_parquet_dir(tmp_path / "out")
    assert table.column("greeting").to_pylist() == [f"hello {VALUE}"]
    summary = json.loads(done.stdout)
    assert summary["streams"]
    assert VALUE not in done.stdout + done.stderr


def test_failing_plugin_error_and_logs_are_masked(tmp_path: Path) -> None:
    done = dativo_run(
        _project(tmp_path, fail=True),
        "tap-greeting",
        "target-dativo-parquet",
        "--log-level",
        "DEBUG",
        check=False,
    )
    assert done.returncode == 1, done.stderr
    shown = _shown(done.stderr)
    assert "server rejected ********" in shown
    assert "Authorization: Basic ********" in shown
    encoded = base64.b64encode(VALUE.encode()).decode()
    for form in (VALUE, encoded, encoded.rstrip("=")):
        assert form not in done.stdout + done.stderr


def test_group_readable_secret_file_is_refused_before_the_run(tmp_path: Path) -> None:
    done = dativo_run(
        _project(tmp_path, mode=0o644), "tap-greeting", "target-dativo-parquet", check=False
    )
    assert done.returncode == 2, done.stderr
    shown = _shown(done.stderr)
    assert (
        "plugin 'tap-greeting': setting 'greeting': ${SECRET:api_token} from backend 'files' "
        f"(files in {tmp_path / 'secrets'}): {tmp_path / 'secrets' / 'api_token'} is readable"
    ) in shown
    assert "is readable or writable by its group or others" in shown
    assert VALUE not in done.stderr
    assert not (tmp_path / "out").exists()


PROBE_TAP = """
import json, os, sys

args = sys.argv[1:]
if "--discover" in args:
    sys.exit(1)
with open(args[args.index("--config") + 1]) as fh:
    config = json.load(fh)
try:
    with open(config["other_secret_file"]) as fh:
        other = "OK " + fh.read().strip()
except OSError as exc:
    other = f"DENIED {exc.errno}"
import base64
sys.stderr.write("token=" + config["token"] + "\\n")
sys.stderr.write("basic=" + base64.b64encode(config["token"].encode()).decode() + "\\n")
sys.stderr.flush()
checks = {
    "token": config["token"],
    "env": os.environ.get("PARENT_ONLY_SECRET", "absent"),
    "other_file": other,
    "config_keys": ",".join(sorted(config)),
}
schema = {"type": "object", "properties": {"check": {"type": "string"}, "result": {"type": "string"}}}
out = [{"type": "SCHEMA", "stream": "probe", "schema": schema, "key_properties": ["check"]}]
out += [{"type": "RECORD", "stream": "probe", "record": {"check": k, "result": v}} for k, v in checks.items()]
out.append({"type": "STATE", "value": {"done": True}})
sys.stdout.write("".join(json.dumps(m) + "\\n" for m in out))
"""


def test_sandboxed_foreign_plugin_gets_only_the_secret_its_config_references(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    other_value = "other-Secret-Not-For-The-Tap-2718"
    monkeypatch.setenv("PARENT_ONLY_SECRET", other_value)
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    for name, text in (("tap_token", VALUE), ("db_password", other_value)):
        (secrets / name).write_text(text + "\n")
        (secrets / name).chmod(0o600)
    tap = tmp_path / "tap-probe"
    tap.write_text(f"#!{sys.executable}\n" + PROBE_TAP)
    tap.chmod(0o755)
    out = tmp_path / "out"
    data = {
        "version": 1,
        "dativo": {"secrets": {"backend": "files", "directory": str(secrets)}},
        "plugins": {
            "extractors": [
                {
                    "name": "tap-probe",
                    "executable": str(tap),
                    "sandbox": {"memory_mb": 256},
                    "config": {
                        "token": "${SECRET:tap_token}",
                        "other_secret_file": str(secrets / "db_password"),
                    },
                }
            ],
            "loaders": [{"name": "target-dativo-parquet", "config": {"path": str(out)}}],
        },
    }
    project = tmp_path / "meltano.yml"
    project.write_text(yaml.safe_dump(data, sort_keys=False))
    done = dativo_run(project, "tap-probe", "target-dativo-parquet", "--log-level", "DEBUG")
    rows = read_parquet_dir(out).to_pylist()
    results = {row["check"]: row["result"] for row in rows}
    assert results == {
        "token": VALUE,
        "env": "absent",
        "other_file": "DENIED 13",
        "config_keys": "other_secret_file,token",
    }
    # What the plugin prints to stderr is relayed masked, its base64 form too.
    assert "[tap-probe] token=********" in done.stderr
    assert "[tap-probe] basic=********" in done.stderr
    assert VALUE not in done.stderr
    assert base64.b64encode(VALUE.encode()).decode() not in done.stderr


def _singer_target(
    tmp_path: Path, config: dict, extra_env: dict[str, str]
) -> subprocess.CompletedProcess[str]:
    """target-dativo-parquet run as a Singer target (as Meltano starts it), one record in."""
    (tmp_path / "config.json").write_text(json.dumps(config))
    schema = {"type": "object", "properties": {"id": {"type": "integer"}}}
    messages = [
        {"type": "SCHEMA", "stream": "s", "schema": schema, "key_properties": ["id"]},
        {"type": "RECORD", "stream": "s", "record": {"id": 1}},
        {"type": "STATE", "value": {"done": True}},
    ]
    return subprocess.run(
        [script("target-dativo-parquet"), "--config", str(tmp_path / "config.json")],
        input="".join(json.dumps(m) + "\n" for m in messages),
        capture_output=True,
        text=True,
        cwd=tmp_path,
        env={**env(), **extra_env},
        timeout=120,
        check=False,
    )


def test_singer_mode_resolves_references_with_meltano_project_roots_backend(
    tmp_path: Path,
) -> None:
    secrets = tmp_path / "secrets"
    secrets.mkdir()
    out = tmp_path / "out-from-secret"
    (secrets / "out_dir").write_text(f"{out}\n")
    (secrets / "out_dir").chmod(0o600)
    data = {"version": 1, "dativo": {"secrets": {"backend": "files", "directory": str(secrets)}}}
    (tmp_path / "meltano.yml").write_text(yaml.safe_dump(data))
    root = {"MELTANO_PROJECT_ROOT": str(tmp_path)}
    done = _singer_target(tmp_path, {"path": "${SECRET:out_dir}"}, root)
    assert done.returncode == 0, done.stderr
    assert read_parquet_dir(out).column("id").to_pylist() == [1]
    missing = _singer_target(tmp_path, {"path": "${SECRET:nope}"}, root)
    assert missing.returncode == 1
    assert (
        f"setting 'path': ${{SECRET:nope}} from backend 'files' (files in {secrets}): "
        f"no file {secrets / 'nope'}"
    ) in missing.stderr
    assert "Traceback" not in missing.stderr
