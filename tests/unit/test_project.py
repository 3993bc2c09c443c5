"""meltano.yml reading, env expansion, selection patterns, class loading and redaction."""

from __future__ import annotations

import logging
from pathlib import Path

import pyarrow as pa
import pytest
import yaml

from dativo_bridge.errors import ConfigError, PluginLoadError
from dativo_bridge.interfaces import ArrowReader, StreamInfo
from dativo_bridge.loading import load_class
from dativo_bridge.project import Project, expand_env
from dativo_bridge.redact import MASK, Redactor, secret_values
from dativo_bridge.selection import apply_metadata, select_columns

STREAM = StreamInfo(
    "public-users",
    pa.schema(
        [
            ("id", pa.int64()),
            ("email", pa.string()),
            ("ssn", pa.string()),
            ("updated_at", pa.timestamp("us", tz="UTC")),
        ]
    ),
    ("id",),
    "updated_at",
    "INCREMENTAL",
)


def test_expand_env_forms_and_unset() -> None:
    env = {"HOST": "db", "PORT": "5432"}
    assert expand_env({"a": "$HOST:${PORT}", "b": ["x$HOST"], "c": 3, "d": "$NOPE!"}, env) == {
        "a": "db:5432",
        "b": ["xdb"],
        "c": 3,
        "d": "!",
    }


def _project(tmp_path: Path, data: dict) -> Path:
    path = tmp_path / "meltano.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_environment_overrides_and_dotenv(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MELTANO_ENVIRONMENT", raising=False)
    (tmp_path / ".env").write_text("DB_PASS=from-dotenv\nOUT=from-dotenv\n")
    monkeypatch.setenv("OUT", "from-environ")
    path = _project(
        tmp_path,
        {
            "default_environment": "dev",
            "environments": [
                {
                    "name": "dev",
                    "config": {
                        "plugins": {"extractors": [{"name": "tap-x", "config": {"dir": "dev-dir"}}]}
                    },
                },
                {"name": "prod", "env": {"REGION": "eu"}},
            ],
            "plugins": {
                "extractors": [
                    {
                        "name": "tap-x",
                        "executable": "tap-x-bin",
                        "settings": [{"name": "password", "sensitive": True}],
                        "select": ["users.*"],
                        "config": {
                            "dir": "base",
                            "password": "${DB_PASS}",
                            "out": "$OUT",
                            "region": "$REGION",
                        },
                    }
                ],
                "loaders": [{"name": "target-y"}],
            },
        },
    )
    dev = Project(path).plugin("tap-x")
    assert dev.config == {
        "dir": "dev-dir",
        "password": "from-dotenv",
        "out": "from-environ",
        "region": "",
    }
    assert dev.executable == "tap-x-bin" and dev.sensitive == ["password"]
    assert dev.select == ["users.*"]
    prod = Project(path, "prod")
    assert prod.plugin("tap-x").config["region"] == "eu"
    assert prod.state_id("tap-x", "target-y") == "prod:tap-x-to-target-y"
    with pytest.raises(ConfigError, match="no extractor or loader named 'tap-z'"):
        Project(path).plugin("tap-z")
    with pytest.raises(ConfigError, match="environment 'qa' is not defined"):
        Project(path, "qa")


def test_select_patterns() -> None:
    assert select_columns(STREAM, None) == STREAM.schema.names
    assert select_columns(STREAM, ["public-users.*", "!public-users.ssn"]) == [
        "id",
        "email",
        "updated_at",
    ]
    # Explicit columns keep the key and the replication key.
    assert select_columns(STREAM, ["public-*.email"]) == ["id", "email", "updated_at"]
    assert select_columns(STREAM, ["public-orders.*"]) is None
    assert select_columns(STREAM, ["*.*", "!public-users.*"]) is None


def test_metadata_overrides() -> None:
    full = apply_metadata(STREAM, {"public-*": {"replication-method": "FULL_TABLE"}})
    assert full.replication_method == "FULL_TABLE"
    other = apply_metadata(
        STREAM, {"public-users": {"replication-key": "id", "key-properties": ["email"]}}
    )
    assert (other.replication_key, tuple(other.key_properties)) == ("id", ("email",))


def test_load_class_refuses_bad_references_and_cwd(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    for bad in ("../evil:Reader", "os.path", "a/b:C", "x:1C", ""):
        with pytest.raises(PluginLoadError, match="not a class reference"):
            load_class(bad, ArrowReader)
    (tmp_path / "sneaky_mod.py").write_text(
        "from dativo_bridge import ArrowReader\nclass R(ArrowReader):\n    pass\n"
    )
    monkeypatch.chdir(tmp_path)
    with pytest.raises(PluginLoadError, match="not installed"):
        load_class("sneaky_mod:R", ArrowReader, project_dir=tmp_path)
    with pytest.raises(PluginLoadError, match="outside the project"):
        load_class("sneaky_mod:R", ArrowReader, allowed_dirs=["../"], project_dir=tmp_path)
    with pytest.raises(PluginLoadError, match="not a subclass of ArrowReader"):
        load_class("target_dativo_parquet.writer:ParquetWriter", ArrowReader)


def test_load_class_from_allowed_dir_logs_sha256(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    plugins = tmp_path / "plugins"
    plugins.mkdir()
    (plugins / "allowed_mod_x.py").write_text(
        "from dativo_bridge import ArrowReader\nclass R(ArrowReader):\n    pass\n"
    )
    with caplog.at_level(logging.INFO, logger="dativo.loading"):
        cls = load_class(
            "allowed_mod_x:R", ArrowReader, allowed_dirs=["plugins"], project_dir=tmp_path
        )
    assert issubclass(cls, ArrowReader)
    import hashlib

    digest = hashlib.sha256((plugins / "allowed_mod_x.py").read_bytes()).hexdigest()
    assert digest in caplog.text


def test_redactor_masks_marked_named_and_sensitive_values() -> None:
    config = {
        "api_token": "tok-123456",
        "password": "hunter22",
        "nested": {"secret_key": "abcd1"},
        "custom": "opaque-value",
        "host": "db.internal",
    }
    values = secret_values(config, {"properties": {"custom": {"type": "string", "secret": True}}})
    assert set(values) == {"tok-123456", "hunter22", "abcd1", "opaque-value"}
    redactor = Redactor(values)
    text = "connect db.internal with hunter22 and tok-123456 / opaque-value"
    assert redactor.redact(text) == f"connect db.internal with {MASK} and {MASK} / {MASK}"
    assert secret_values({"user": "bob"}, None, sensitive=["user"]) == ["bob"]


def _capabilities_project(tmp_path: Path, extractors: list[dict], loaders: list[dict]) -> Project:
    data = {"plugins": {"extractors": extractors, "loaders": loaders}}
    return Project(_project(tmp_path, data))


def test_a_dativo_plugin_lacking_capabilities_is_warned_with_the_line_to_add(
    tmp_path: Path,
) -> None:
    from dativo_bridge.plugin_docs import capabilities_of, plugin_class

    tap_caps = capabilities_of(plugin_class("tap-dativo-csv"))  # type: ignore[arg-type]
    target_caps = capabilities_of(plugin_class("target-dativo-parquet"))  # type: ignore[arg-type]
    project = _capabilities_project(
        tmp_path,
        [
            {"name": "tap-dativo-csv"},
            {"name": "tap-partial", "executable": "tap-dativo-csv", "capabilities": ["about"]},
            {"name": "tap-complete", "executable": "tap-dativo-csv", "capabilities": tap_caps},
            {"name": "tap-minor", "executable": "tap-dativo-csv", "capabilities": tap_caps[:-1]},
            {"name": "tap-foreign", "capabilities": ["state"]},
            {
                "name": "tap-weather",
                "executable": "tap-dativo-custom",
                "capabilities": ["state", "about", "extra-thing"],
                "config": {"reader_class": "weather:WeatherReader"},
            },
        ],
        [{"name": "target-dativo-parquet", "capabilities": ["about"]}],
    )
    bare = project.plugin("tap-dativo-csv").check_env()
    assert len(bare) == 1
    (line,) = bare
    assert "\n" not in line
    assert line.startswith("plugin 'tap-dativo-csv' (")
    assert "without --catalog/--state" in line and "select:/metadata: are ignored" in line
    assert line.endswith(f"capabilities: [{', '.join(tap_caps)}]")

    (partial,) = project.plugin("tap-partial").check_env()
    assert "catalog" in partial and partial.endswith(f"capabilities: [{', '.join(tap_caps)}]")
    assert project.plugin("tap-complete").check_env() == []
    # Only capabilities that change how Meltano invokes a plugin (catalog, state,
    # discover, properties) are worth a warning; a descriptive one is not.
    assert tap_caps[-1] not in {"catalog", "state", "discover", "properties"}
    assert project.plugin("tap-minor").check_env() == []
    assert project.plugin("tap-foreign").check_env() == []  # not a Dativo plugin

    (custom,) = project.plugin("tap-weather").check_env()
    assert custom.startswith("plugin 'tap-weather'") and "catalog" in custom
    assert custom.endswith(", extra-thing]")  # what the user declared beyond is kept

    # A loader's capabilities do not change Meltano's arguments to it.
    assert not {"catalog", "state", "discover", "properties"} & set(target_caps)
    assert project.plugin("target-dativo-parquet").check_env() == []
