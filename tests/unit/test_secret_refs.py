"""${SECRET:...} references: parsing, the env, files and Vault backends (Vault as a small
HTTP server implementing the KV v2 read endpoint as Vault documents it), the project hook,
and errors that name the reference and the backend but never show a value."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml

from dativo_bridge.errors import ConfigError
from dativo_bridge.project import Project
from dativo_bridge.redact import MASK, Redactor
from dativo_bridge.secret_refs import (
    SecretError,
    SecretStore,
    resolve_references,
    resolve_singer_config,
)

VALUE = "s3cr3t-Value-9f8e7d"


def _store(settings: Any, env: dict[str, str] | None = None) -> SecretStore:
    return SecretStore(settings, env or {})


def _secret_file(directory: Path, name: str, text: str, mode: int = 0o600) -> Path:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / name
    path.write_text(text)
    path.chmod(mode)
    return path


# --- parsing and the env backend ---------------------------------------------------------


def test_default_backend_is_the_environment_and_references_resolve_inside_strings() -> None:
    store = _store(None, {"DB_PASSWORD": VALUE})
    config = {
        "dsn": "postgresql://u:${SECRET:DB_PASSWORD}@h/db",
        "n": 3,
        "l": ["${SECRET:DB_PASSWORD}"],
    }
    resolved, values, settings = resolve_references(config, store, "tap-x")
    assert resolved == {"dsn": f"postgresql://u:{VALUE}@h/db", "n": 3, "l": [VALUE]}
    assert values == [VALUE, VALUE]
    assert settings == ["dsn", "l"]


def test_env_backend_prefix_and_a_missing_variable_names_reference_setting_backend() -> None:
    store = _store({"backend": "env", "prefix": "APP_"}, {"APP_TOKEN": VALUE, "OTHER": VALUE})
    assert store.resolve("TOKEN") == VALUE
    with pytest.raises(SecretError) as err:
        resolve_references({"auth": {"token": "${SECRET:OTHER}"}}, store, "tap-x")
    message = str(err.value)
    assert "plugin 'tap-x'" in message
    assert "setting 'auth.token'" in message
    assert "${SECRET:OTHER}" in message
    assert "backend 'env'" in message
    assert "APP_OTHER is not set" in message
    assert VALUE not in message


@pytest.mark.parametrize("body", ["", "a b", "x:y:z", "name#", "../etc#"])
def test_malformed_reference_is_a_clear_error(body: str) -> None:
    with pytest.raises(SecretError, match="is not a secret reference"):
        _store(None).resolve(body)


def test_backend_prefix_selects_a_named_backend_and_an_unknown_one_is_refused(
    tmp_path: Path,
) -> None:
    _secret_file(tmp_path, "db", VALUE + "\n")
    store = _store(
        {"default": "files", "backends": {"files": {"directory": str(tmp_path)}}},
        {"DB": "from-env-1234"},
    )
    assert store.resolve("db") == VALUE
    assert store.resolve("files:db") == VALUE
    assert store.resolve("env:DB") == "from-env-1234"
    with pytest.raises(SecretError) as err:
        store.resolve("vault:db")
    assert "no secrets backend named 'vault'" in str(err.value)
    assert "(configured: files, env)" in str(err.value)


def test_several_backends_need_a_default_and_kinds_are_checked() -> None:
    with pytest.raises(ConfigError, match="say which one"):
        _store({"backends": {"a": {"backend": "env"}, "b": {"backend": "env"}}})
    with pytest.raises(ConfigError, match="unknown kind 'keyring'"):
        _store({"backend": "keyring"})
    with pytest.raises(ConfigError, match="default 'c' is not one of"):
        _store({"default": "c", "backends": {"a": {"backend": "env"}}})


def test_json_key_and_errors_list_keys_never_values() -> None:
    doc = json.dumps({"user": "admin", "password": VALUE})
    store = _store(None, {"CREDS": doc, "PLAIN": VALUE})
    assert store.resolve("CREDS#password") == VALUE
    with pytest.raises(SecretError) as err:
        store.resolve("CREDS#pass")
    assert "no key 'pass' (keys: password, user)" in str(err.value)
    assert VALUE not in str(err.value)
    with pytest.raises(SecretError) as err:
        store.resolve("PLAIN#password")
    assert "not JSON" in str(err.value)
    assert VALUE not in str(err.value)


def test_an_empty_secret_is_an_error() -> None:
    with pytest.raises(SecretError, match="the secret is empty"):
        _store(None, {"E": ""}).resolve("E")


# --- files backend -------------------------------------------------------------------------


def test_files_backend_strips_the_trailing_newline_and_follows_symlinks(tmp_path: Path) -> None:
    data = tmp_path / "..data"
    _secret_file(data, "pw", VALUE + "\n")
    (tmp_path / "pw").symlink_to(data / "pw")  # the way Kubernetes mounts a secret
    assert _store({"backend": "files", "directory": str(tmp_path)}).resolve("pw") == VALUE


@pytest.mark.parametrize("mode", [0o640, 0o604, 0o644, 0o620])
def test_files_backend_refuses_a_group_or_world_accessible_file(tmp_path: Path, mode: int) -> None:
    path = _secret_file(tmp_path, "pw", VALUE, mode)
    store = _store({"backend": "files", "directory": str(tmp_path)})
    with pytest.raises(SecretError) as err:
        store.resolve("pw")
    message = str(err.value)
    assert f"{path} is readable or writable by its group or others" in message
    assert f"chmod 600 {path}" in message
    assert "check_permissions: false" in message
    assert VALUE not in message
    relaxed = _store({"backend": "files", "directory": str(tmp_path), "check_permissions": False})
    assert relaxed.resolve("pw") == VALUE


def test_files_backend_missing_file_and_names_that_leave_the_directory(tmp_path: Path) -> None:
    _secret_file(tmp_path / "sub", "x", VALUE)
    store = _store({"backend": "files", "directory": str(tmp_path)})
    with pytest.raises(SecretError) as err:
        store.resolve("absent")
    assert f"no file {tmp_path / 'absent'}" in str(err.value)
    assert f"files in {tmp_path}" in str(err.value)
    for name in ("sub/x", "../x", ".hidden"):
        with pytest.raises(SecretError):
            store.resolve(name)


def test_files_backend_check_permissions_must_be_a_boolean(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="check_permissions must be true or false"):
        _store(
            {"backend": "files", "directory": str(tmp_path), "check_permissions": "maybe"}
        ).resolve("x")


# --- Vault KV v2 -------------------------------------------------------------------------

TOKEN = "hvs.test-token-0123456789"


class _FakeVault(BaseHTTPRequestHandler):
    """``GET /v1/:mount/data/:path`` of the KV v2 engine, as Vault's API docs define it:
    200 ``{"data": {"data": {...}, "metadata": {...}}}``; 403 ``{"errors": ["permission
    denied"]}`` without a valid ``X-Vault-Token``; 404 ``{"errors": []}`` for no secret."""

    secrets: dict[str, dict[str, Any]] = {}
    seen: list[dict[str, str]] = []

    def do_GET(self) -> None:
        self.seen.append(dict(self.headers))
        if self.headers.get("X-Vault-Token") != TOKEN:
            return self._send(403, {"errors": ["permission denied"]})
        prefix = "/v1/kv/data/"
        if not self.path.startswith(prefix) or self.path[len(prefix) :] not in self.secrets:
            return self._send(404, {"errors": []})
        data = self.secrets[self.path[len(prefix) :]]
        metadata = {"created_time": "2026-01-01T00:00:00Z", "deletion_time": "", "version": 2}
        self._send(200, {"request_id": "r", "data": {"data": data, "metadata": metadata}})

    def _send(self, code: int, body: dict[str, Any]) -> None:
        raw = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture()
def vault() -> Iterator[str]:
    _FakeVault.secrets = {
        "apps/db": {"password": VALUE, "user": "admin"},
        "apps/single": {"token": VALUE},
    }
    _FakeVault.seen = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FakeVault)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


def test_vault_kv2_reads_a_key_and_sends_token_and_namespace(vault: str) -> None:
    store = _store(
        {"backend": "vault", "address": vault, "mount": "kv", "token": TOKEN, "namespace": "team"}
    )
    assert store.resolve("apps/db#password") == VALUE
    assert store.resolve("apps/single") == VALUE  # one key: no #KEY needed
    assert _FakeVault.seen[0]["X-Vault-Token"] == TOKEN
    assert _FakeVault.seen[0]["X-Vault-Namespace"] == "team"
    with pytest.raises(SecretError) as err:
        store.resolve("apps/db")
    assert "several keys; name one with #KEY (keys: password, user)" in str(err.value)
    assert VALUE not in str(err.value)


def test_vault_token_from_the_environment_and_its_errors(vault: str) -> None:
    env = {"VAULT_ADDR": vault, "VAULT_TOKEN": TOKEN}
    store = _store({"backend": "vault", "mount": "kv"}, env)
    assert store.resolve("apps/db#user") == "admin"
    with pytest.raises(SecretError) as err:
        store.resolve("apps/none#x")
    assert "${SECRET:apps/none#x}" in str(err.value)
    assert "no secret at kv/data/apps/none" in str(err.value)
    assert f"Vault KV v2 at {vault}" in str(err.value)
    bad = _store({"backend": "vault", "mount": "kv", "address": vault, "token": "wrong-token"})
    with pytest.raises(SecretError, match=r"Vault answered 403 .*permission denied"):
        bad.resolve("apps/db#password")


def test_vault_without_address_or_token_says_what_to_set(tmp_path: Path) -> None:
    with pytest.raises(SecretError, match="no Vault address"):
        _store({"backend": "vault"}).resolve("a#b")
    no_token = {"backend": "vault", "address": "http://127.0.0.1:9", "token_file": str(tmp_path)}
    with pytest.raises(SecretError, match="no Vault token"):
        _store(no_token).resolve("a#b")


def test_vault_token_is_masked_by_installed_redactors(vault: str) -> None:
    redactor = Redactor()
    redactor.install()
    _store({"backend": "vault", "address": vault, "mount": "kv", "token": TOKEN}).resolve(
        "apps/db#user"
    )
    assert TOKEN not in redactor.redact(f"token={TOKEN}")


# --- the project hook ----------------------------------------------------------------------


def _project(tmp_path: Path, config: dict[str, Any], secrets: Any = None) -> Path:
    data: dict[str, Any] = {
        "version": 1,
        "plugins": {
            "extractors": [{"name": "tap-x", "config": config}],
            "loaders": [{"name": "target-y", "config": {"path": "$OUT_DIR"}}],
        },
    }
    if secrets is not None:
        data["dativo"] = {"secrets": secrets}
    path = tmp_path / "meltano.yml"
    path.write_text(yaml.safe_dump(data))
    return path


def test_project_resolves_references_registers_values_and_marks_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secrets_dir = tmp_path / "secrets"
    _secret_file(secrets_dir, "conn", VALUE + "\n")
    redactor = Redactor()
    redactor.install()  # as `dativo run` does before reading the project
    meltano = _project(
        tmp_path,
        {"connection": "${SECRET:conn}", "schema": "public"},
        {"backend": "files", "directory": "$SECRETS_DIR"},
    )
    monkeypatch.setenv("SECRETS_DIR", str(secrets_dir))
    plugin = Project(meltano).plugin("tap-x")
    assert plugin.config == {"connection": VALUE, "schema": "public"}
    assert plugin.secrets == [VALUE]
    assert "connection" in plugin.sensitive
    assert redactor.redact(f"failed with {VALUE}") == f"failed with {MASK}"
    # A plugin whose config references nothing gets no secret.
    assert Project(meltano).plugin("target-y").secrets == []


def test_project_error_names_plugin_setting_reference_and_backend(tmp_path: Path) -> None:
    meltano = _project(
        tmp_path, {"password": "${SECRET:nope}"}, {"backend": "files", "directory": str(tmp_path)}
    )
    with pytest.raises(SecretError) as err:
        Project(meltano).plugin("tap-x")
    message = str(err.value)
    assert message.startswith(
        "plugin 'tap-x': setting 'password': ${SECRET:nope} from backend 'files'"
    )
    assert f"no file {tmp_path / 'nope'}" in message


def test_secret_values_are_not_expanded_as_environment_variables(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    value = "pa$HOME-and-${USER}-x"
    meltano = _project(tmp_path, {"password": "${SECRET:RAW}"})
    monkeypatch.setenv("RAW", value)
    assert Project(meltano).plugin("tap-x").config["password"] == value


# --- Singer mode ---------------------------------------------------------------------------


def test_singer_config_uses_the_backends_of_meltano_project_root(tmp_path: Path) -> None:
    secrets_dir = tmp_path / "secrets"
    _secret_file(secrets_dir, "pw", VALUE + "\n")
    _project(tmp_path, {}, {"backend": "files", "directory": "$SECRETS_DIR"})
    env = {"MELTANO_PROJECT_ROOT": str(tmp_path), "SECRETS_DIR": str(secrets_dir)}
    redactor = Redactor()
    redactor.install()
    config = {"password": "${SECRET:pw}", "n": 1}
    assert resolve_singer_config(config, "tap-x", env) == [VALUE]
    assert config == {"password": VALUE, "n": 1}
    assert redactor.redact(VALUE) == MASK
    with pytest.raises(SecretError, match=r"\$\{SECRET:absent\} from backend 'files'"):
        resolve_singer_config({"password": "${SECRET:absent}"}, "tap-x", env)


def test_singer_config_without_a_project_reads_the_environment(tmp_path: Path) -> None:
    config = {"token": "${SECRET:TOK}"}
    assert resolve_singer_config(config, "tap-x", {"TOK": VALUE}) == [VALUE]
    assert config == {"token": VALUE}
    untouched = {"token": "plain"}
    assert resolve_singer_config(untouched, "tap-x", {}) == []
    with pytest.raises(SecretError, match="environment variable TOK is not set"):
        resolve_singer_config({"token": "${SECRET:TOK}"}, "tap-x", {})


def test_files_backend_refuses_a_fifo_or_directory_without_blocking(tmp_path: Path) -> None:
    import os

    os.mkfifo(tmp_path / "fifo", 0o600)
    (tmp_path / "dir").mkdir(mode=0o700)
    store = _store({"backend": "files", "directory": str(tmp_path)})
    with pytest.raises(SecretError, match="is not a regular file"):
        store.resolve("fifo")
    with pytest.raises(SecretError, match="dir is not a regular file"):
        store.resolve("dir")


def test_aws_backend_with_an_unknown_profile_names_the_reference(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    store = _store({"backend": "aws", "aws_profile": "no-such-profile", "region": "us-east-1"})
    with pytest.raises(SecretError) as err:
        store.resolve("db/password")
    assert "${SECRET:db/password} from backend 'aws' (AWS Secrets Manager, us-east-1)" in str(
        err.value
    )
    assert "no-such-profile" in str(err.value)


def test_env_backend_reads_the_projects_dotenv_and_environment_overrides(
    tmp_path: Path,
) -> None:
    data = {
        "version": 1,
        "default_environment": "prod",
        "environments": [
            {
                "name": "prod",
                "config": {
                    "plugins": {
                        "extractors": [{"name": "tap-x", "config": {"token": "${SECRET:PROD}"}}]
                    }
                },
            }
        ],
        "plugins": {
            "extractors": [{"name": "tap-x", "config": {"token": "${SECRET:DEV}"}}],
            "loaders": [],
        },
    }
    (tmp_path / "meltano.yml").write_text(yaml.safe_dump(data))
    (tmp_path / ".env").write_text(f"PROD={VALUE}\n")
    plugin = Project(tmp_path / "meltano.yml", "prod").plugin("tap-x")
    assert plugin.config == {"token": VALUE}  # DEV, unset, is never looked up


# --- backends from other packages ----------------------------------------------------------

PLUGIN_BACKEND = """
from dativo_bridge.secret_refs import Backend, SecretError


class TableBackend(Backend):
    kind = "table"

    def __init__(self, label, settings, env):
        super().__init__(label)
        self.table = dict(settings.get("values") or {})

    def read(self, name):
        if name == "boom":
            raise RuntimeError("the table is on fire")
        if name not in self.table:
            raise SecretError(f"no row {name}")
        return self.table[name]
"""


def test_a_backend_kind_from_an_installed_entry_point(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "dativo_table_backend.py").write_text(PLUGIN_BACKEND)
    info = tmp_path / "dativo_table_backend-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: dativo-table-backend\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        "[dativo.secret_backends]\ntable = dativo_table_backend:TableBackend\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    store = _store({"backend": "table", "values": {"pw": VALUE}})
    assert store.resolve("pw") == VALUE
    with pytest.raises(
        SecretError, match=r"\$\{SECRET:nope\} from backend 'table' \(table\): no row"
    ):
        store.resolve("nope")
    with pytest.raises(SecretError, match="RuntimeError: the table is on fire"):
        store.resolve("boom")
    with pytest.raises(
        ConfigError, match=r"unknown kind 'tabel' \(known: env, files, aws, vault, table"
    ):
        _store({"backend": "tabel"})


def test_a_backend_setting_of_the_wrong_type_is_a_config_error() -> None:
    store = _store({"backend": "vault", "address": "http://127.0.0.1:9", "timeout": "soon"})
    with pytest.raises(ConfigError, match="secrets backend 'vault': ValueError"):
        store.resolve("a#b")


def test_a_dativo_key_that_is_not_a_mapping_is_refused(tmp_path: Path) -> None:
    meltano = _project(tmp_path, {"password": "${SECRET:X}"})
    data = yaml.safe_load(meltano.read_text())
    data["dativo"] = ["secrets"]
    meltano.write_text(yaml.safe_dump(data))
    with pytest.raises(ConfigError, match="dativo: must be a mapping"):
        Project(meltano).plugin("tap-x")
