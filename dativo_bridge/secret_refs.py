"""Secret references: ``${SECRET:NAME}`` in a plugin's config, resolved at start from a
backend named in meltano.yml (docs/secrets.md, "Secret references").

The invariant: a resolved value goes into the config of the plugin that references it and
to the Redactor of the run, nowhere else. Every error names the reference, the setting and
the backend, never a value.

A reference is ``${SECRET:[BACKEND:]NAME[#KEY]}``. ``BACKEND`` is a name configured under
``dativo: secrets: backends:`` (or ``env``); without it the default backend is used.
``#KEY`` takes one key of a secret that is a JSON object (a Vault secret always is).
"""

from __future__ import annotations

import json
import os
import re
import stat
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from dativo_bridge.errors import ConfigError
from dativo_bridge.redact import _installed, process_redactor, secret_values

REFERENCE = re.compile(r"\$\{SECRET:([^}]*)\}")
_BODY = re.compile(
    r"^(?:(?P<backend>[A-Za-z_][A-Za-z0-9_-]*):)?(?P<name>[A-Za-z0-9_./+=@-]+)(?:#(?P<key>[^#]+))?$"
)
#: A file name inside a secrets directory: no path separators, not hidden.
_FILE_NAME = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.+=@-]*$")


class SecretError(ConfigError):
    """A secret reference cannot be resolved (its message never contains a value)."""


class Backend:
    """Where secrets come from: :meth:`read` returns the secret ``name`` as text.

    Attributes:
        kind: ``env``, ``files``, ``aws``, ``vault`` or one from another package
            (:data:`ENTRY_POINT_GROUP`).
        label: The backend as error messages name it.
    """

    kind = ""

    def __init__(self, label: str) -> None:
        self.label = label

    def read(self, name: str) -> str | Mapping[str, Any]:
        """The secret, or raise SecretError saying why it is not there."""
        raise NotImplementedError

    def describe(self) -> str:
        return f"backend '{self.label}' ({self.kind})"


class EnvBackend(Backend):
    """Environment variables (the environment, the project's .env and its environment's
    ``env:``), optionally under a ``prefix``."""

    kind = "env"

    def __init__(self, label: str, settings: Mapping[str, Any], env: Mapping[str, str]) -> None:
        super().__init__(label)
        self.prefix = str(settings.get("prefix") or "")
        self.env = env

    def read(self, name: str) -> str:
        var = self.prefix + name
        if var not in self.env:
            raise SecretError(f"environment variable {var} is not set")
        return self.env[var]


class FilesBackend(Backend):
    """One file per secret in ``directory`` (Docker and Kubernetes secrets): its text with
    the trailing newline removed. A file that its group or others can read is refused
    unless ``check_permissions: false``."""

    kind = "files"

    def __init__(self, label: str, settings: Mapping[str, Any]) -> None:
        super().__init__(label)
        self.directory = Path(str(settings.get("directory") or "/run/secrets"))
        self.check_permissions = _flag(settings, "check_permissions", label, default=True)

    def describe(self) -> str:
        return f"backend '{self.label}' (files in {self.directory})"

    def read(self, name: str) -> str:
        if not _FILE_NAME.match(name):
            raise SecretError(
                "a files secret is a plain file name (letters, digits, '_', '.', '-'; "
                "no '/' and not starting with '.')"
            )
        path = self.directory / name
        try:
            # Opened first and checked through the descriptor: what is checked is what is
            # read. Symbolic links are followed (Kubernetes' ..data links).
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
        except FileNotFoundError:
            raise SecretError(f"no file {path}") from None
        except OSError as exc:
            raise SecretError(f"cannot read {path}: {exc.strerror}") from None
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            os.close(fd)
            raise SecretError(f"{path} is not a regular file")
        with os.fdopen(fd, "rb") as fh:
            if self.check_permissions and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO):
                raise SecretError(
                    f"{path} is readable or writable by its group or others "
                    f"(mode {stat.filemode(info.st_mode)}): run `chmod 600 {path}`, or set "
                    "check_permissions: false on the backend if the directory itself is "
                    "private (Docker and Kubernetes mount secrets 0444/0644 by default)"
                )
            try:
                text = fh.read().decode("utf-8")
            except OSError as exc:
                raise SecretError(f"cannot read {path}: {exc.strerror}") from None
            except UnicodeDecodeError:
                raise SecretError(f"{path} is not UTF-8 text") from None
        return text.rstrip("\r\n")


class AwsBackend(Backend):
    """AWS Secrets Manager (boto3 ``get_secret_value``): ``SecretString``, or
    ``SecretBinary`` as UTF-8. Settings as Dativo's S3 settings: ``region``,
    ``endpoint_url``, ``aws_access_key_id``/``aws_secret_access_key``/``aws_session_token``
    or ``aws_profile`` (else boto3's credential chain)."""

    kind = "aws"

    def __init__(self, label: str, settings: Mapping[str, Any]) -> None:
        super().__init__(label)
        self.settings = dict(settings)
        self._client: Any = None

    def describe(self) -> str:
        where = self.settings.get("endpoint_url") or self.settings.get("region") or "default"
        return f"backend '{self.label}' (AWS Secrets Manager, {where})"

    def read(self, name: str) -> str:
        from botocore.exceptions import BotoCoreError, ClientError

        from dativo_bridge.aws import aws_session

        if self._client is None:
            try:
                session = aws_session(self.settings)
            except ConfigError as exc:  # an unknown profile, ...
                raise SecretError(str(exc)) from None
            endpoint = self.settings.get("endpoint_url")
            try:
                self._client = session.client(
                    "secretsmanager", endpoint_url=str(endpoint) if endpoint else None
                )
            except Exception as exc:  # NoRegionError, a bad endpoint
                raise SecretError(f"no Secrets Manager client: {exc}") from None
        try:
            got = self._client.get_secret_value(SecretId=name)
        except ClientError as exc:
            code = exc.response.get("Error", {}).get("Code", "")
            if code == "ResourceNotFoundException":
                raise SecretError(f"no secret named '{name}'") from None
            message = exc.response.get("Error", {}).get("Message", "")
            raise SecretError(f"GetSecretValue failed: {code}: {message}") from None
        except BotoCoreError as exc:
            raise SecretError(f"GetSecretValue failed: {exc}") from None
        if "SecretString" in got:
            return str(got["SecretString"])
        try:
            return bytes(got["SecretBinary"]).decode("utf-8")
        except (KeyError, UnicodeDecodeError):
            raise SecretError("the secret has no SecretString and no UTF-8 SecretBinary") from None


class VaultBackend(Backend):
    """HashiCorp Vault's KV version 2 engine over its HTTP API:
    ``GET {address}/v1/{mount}/data/{name}`` with the ``X-Vault-Token`` header (and
    ``X-Vault-Namespace`` when ``namespace`` is set); the secret is ``data.data``."""

    kind = "vault"

    def __init__(self, label: str, settings: Mapping[str, Any], env: Mapping[str, str]) -> None:
        super().__init__(label)
        self.address = str(settings.get("address") or env.get("VAULT_ADDR") or "").rstrip("/")
        self.mount = str(settings.get("mount") or "secret").strip("/")
        self.namespace = str(settings.get("namespace") or env.get("VAULT_NAMESPACE") or "")
        self.timeout = float(settings.get("timeout") or 10)
        token = settings.get("token") or env.get("VAULT_TOKEN")
        token_file = settings.get("token_file")
        if not token:
            path = Path(str(token_file)) if token_file else Path.home() / ".vault-token"
            try:
                token = path.read_text(encoding="utf-8").strip()
            except OSError:
                token = ""
        self.token = str(token or "")
        if self.token:
            register_secrets([self.token])

    def describe(self) -> str:
        return f"backend '{self.label}' (Vault KV v2 at {self.address or '?'}, mount {self.mount})"

    def read(self, name: str) -> Mapping[str, Any]:
        if not self.address:
            raise SecretError("no Vault address: set address: on the backend or VAULT_ADDR")
        if not self.token:
            raise SecretError(
                "no Vault token: set token: (or token_file:) on the backend, or VAULT_TOKEN"
            )
        path = urllib.parse.quote(name.strip("/"), safe="/")
        url = f"{self.address}/v1/{self.mount}/data/{path}"
        headers = {"X-Vault-Token": self.token, "Accept": "application/json"}
        if self.namespace:
            headers["X-Vault-Namespace"] = self.namespace
        request = urllib.request.Request(url, headers=headers, method="GET")
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                body = json.loads(response.read().decode("utf-8"))
        except urllib.error.HTTPError as exc:
            if exc.code == 404:
                raise SecretError(f"no secret at {self.mount}/data/{path}") from None
            raise SecretError(
                f"Vault answered {exc.code} for {self.mount}/data/{path}: {_vault_errors(exc)}"
            ) from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise SecretError(f"cannot reach Vault at {self.address}: {reason}") from None
        except ValueError:
            raise SecretError(f"Vault's answer for {self.mount}/data/{path} is not JSON") from None
        data = (body.get("data") or {}).get("data") if isinstance(body, dict) else None
        if not isinstance(data, dict):
            raise SecretError(
                f"Vault's answer for {self.mount}/data/{path} has no data.data object "
                "(is the mount a KV version 2 engine?)"
            )
        return data


def _vault_errors(exc: urllib.error.HTTPError) -> str:
    try:
        errors = json.loads(exc.read().decode("utf-8")).get("errors") or []
    except (ValueError, AttributeError, OSError):
        errors = []
    return "; ".join(str(e) for e in errors) or str(exc.reason)


def _flag(settings: Mapping[str, Any], key: str, label: str, *, default: bool) -> bool:
    value = settings.get(key, default)
    if isinstance(value, bool):
        return value
    if str(value).lower() in ("true", "false"):
        return str(value).lower() == "true"
    raise ConfigError(f"secrets backend '{label}': {key} must be true or false, not {value!r}")


BackendFactory = Callable[[str, Mapping[str, Any], Mapping[str, str]], Backend]

_KINDS: dict[str, BackendFactory] = {
    "env": lambda label, s, env: EnvBackend(label, s, env),
    "files": lambda label, s, env: FilesBackend(label, s),
    "aws": lambda label, s, env: AwsBackend(label, s),
    "vault": lambda label, s, env: VaultBackend(label, s, env),
}

#: The entry-point group of backends from other packages: ``KIND = "module:Class"``,
#: a Backend subclass called as ``Class(label, settings, env)``.
ENTRY_POINT_GROUP = "dativo.secret_backends"


def _factory(kind: str) -> BackendFactory | None:
    """The built-in backend ``kind``, else the one an installed package declares."""
    if kind in _KINDS:
        return _KINDS[kind]
    from importlib.metadata import entry_points

    for point in entry_points(group=ENTRY_POINT_GROUP):
        if point.name == kind:
            factory: BackendFactory = point.load()
            return factory
    return None


def _known_kinds() -> list[str]:
    from importlib.metadata import entry_points

    return [*_KINDS, *sorted(p.name for p in entry_points(group=ENTRY_POINT_GROUP))]


class SecretStore:
    """The backends meltano.yml's ``dativo: secrets:`` configures, made on first use.

    ``secrets:`` is either one backend (``{backend: files, directory: /run/secrets}``) or
    ``{default: NAME, backends: {NAME: {backend: KIND, ...}, ...}}``. Without it, the one
    backend is ``env``. ``env`` is always available by name.
    """

    def __init__(self, settings: Any, env: Mapping[str, str], where: str = "meltano.yml") -> None:
        self.env = env
        self.where = where
        self._backends: dict[str, Backend] = {}
        self._cache: dict[tuple[str, str], str | Mapping[str, Any]] = {}
        if settings is None:
            settings = {"backend": "env"}
        if not isinstance(settings, Mapping):
            raise ConfigError(f"{where}: dativo: secrets: must be a mapping")
        if "backends" in settings:
            backends = settings.get("backends")
            if not isinstance(backends, Mapping) or not backends:
                raise ConfigError(f"{where}: dativo: secrets: backends: must be a mapping")
            self.settings = {str(k): dict(v or {}) for k, v in backends.items()}
            default = settings.get("default")
            if default is None and len(self.settings) == 1:
                default = next(iter(self.settings))
            if default is None:
                raise ConfigError(
                    f"{where}: dativo: secrets: names several backends; say which one "
                    f"${{SECRET:NAME}} uses with default: (one of {', '.join(self.settings)})"
                )
            self.default = str(default)
        else:
            kind = str(settings.get("backend") or "env")
            self.settings = {kind: dict(settings)}
            self.default = kind
        self.settings.setdefault("env", {"backend": "env"})
        for label, backend in self.settings.items():
            kind = str(backend.get("backend") or label)
            if kind not in _KINDS and kind not in _known_kinds():
                raise ConfigError(
                    f"{where}: secrets backend '{label}' is of unknown kind '{kind}' "
                    f"(known: {', '.join(_known_kinds())}; another package can add one "
                    f"with the entry point group {ENTRY_POINT_GROUP})"
                )
        if self.default not in self.settings:
            raise ConfigError(
                f"{where}: dativo: secrets: default '{self.default}' is not one of the "
                f"backends ({', '.join(self.settings)})"
            )

    def backend(self, label: str | None) -> Backend:
        label = label or self.default
        if label not in self.settings:
            raise KeyError(label)
        if label not in self._backends:
            settings = self.settings[label]
            kind = str(settings.get("backend") or label)
            register_secrets(secret_values(settings))  # the backend's own credentials
            factory = _factory(kind)
            if factory is None:
                raise KeyError(label)
            try:
                self._backends[label] = factory(label, settings, self.env)
            except ConfigError:
                raise
            except Exception as exc:  # a setting of the wrong type (timeout: soon)
                raise ConfigError(
                    f"{self.where}: secrets backend '{label}': {type(exc).__name__}: {exc}"
                ) from None
        return self._backends[label]

    def resolve(self, body: str) -> str:
        """The value of the reference ``${SECRET:body}``; SecretError names the reference
        and the backend when it cannot be resolved."""
        reference = f"${{SECRET:{body}}}"
        match = _BODY.match(body)
        if not match:
            raise SecretError(
                f"{reference} is not a secret reference: write ${{SECRET:NAME}}, "
                "${SECRET:BACKEND:NAME} or ${SECRET:NAME#KEY}"
            )
        label, name, key = match.group("backend"), match.group("name"), match.group("key")
        try:
            backend = self.backend(label)
        except KeyError:
            raise SecretError(
                f"{reference}: no secrets backend named '{label}' in {self.where} "
                f"(configured: {', '.join(self.settings)})"
            ) from None
        cache_key = (backend.label, name)
        try:
            if cache_key not in self._cache:
                self._cache[cache_key] = backend.read(name)
            value = _pick(self._cache[cache_key], key)
        except SecretError as exc:
            raise SecretError(f"{reference} from {backend.describe()}: {exc}") from None
        except Exception as exc:  # a backend from another package failing its own way
            raise SecretError(
                f"{reference} from {backend.describe()}: {type(exc).__name__}: {exc}"
            ) from None
        if value == "":
            raise SecretError(f"{reference} from {backend.describe()}: the secret is empty")
        return value


def project_secret_settings(data: Any, where: str) -> Any:
    """meltano.yml's ``dativo: secrets:`` (None when it has none)."""
    dativo = data.get("dativo") if isinstance(data, Mapping) else None
    if dativo is None:
        return None
    if not isinstance(dativo, Mapping):
        raise ConfigError(f"{where}: dativo: must be a mapping (of secrets:, ...)")
    return dativo.get("secrets")


def _pick(secret: str | Mapping[str, Any], key: str | None) -> str:
    """The secret itself, or its ``key`` when it is a JSON object."""
    if isinstance(secret, str):
        if key is None:
            return secret
        try:
            secret = json.loads(secret)
        except ValueError:
            raise SecretError(f"#{key} needs a JSON object, and the secret is not JSON") from None
        if not isinstance(secret, Mapping):
            raise SecretError(f"#{key} needs a JSON object, and the secret is not one")
    if key is None:
        if len(secret) != 1:
            keys = ", ".join(sorted(map(str, secret))) or "(none)"
            raise SecretError(f"the secret has several keys; name one with #KEY (keys: {keys})")
        key = next(iter(secret))
    if key not in secret:
        keys = ", ".join(sorted(map(str, secret))) or "(none)"
        raise SecretError(f"the secret has no key '{key}' (keys: {keys})")
    value = secret[key]
    return value if isinstance(value, str) else json.dumps(value)


def has_references(value: Any) -> bool:
    """True if some string in ``value`` contains ``${SECRET:``."""
    if isinstance(value, str):
        return "${SECRET:" in value
    if isinstance(value, list):
        return any(has_references(v) for v in value)
    if isinstance(value, Mapping):
        return any(has_references(v) for v in value.values())
    return False


def resolve_references(
    value: Any, store: SecretStore, plugin: str, path: str = ""
) -> tuple[Any, list[str], list[str]]:
    """``value`` with every ``${SECRET:...}`` replaced, the secret values used, and the
    names of the settings that used one.

    Raises:
        SecretError: a reference cannot be resolved; the message names the plugin, the
            setting, the reference and the backend.
    """
    values: list[str] = []
    settings: list[str] = []

    def walk(item: Any, where: str, leaf: str | None) -> Any:
        if isinstance(item, str):
            if "${SECRET:" not in item:
                return item

            def sub(m: re.Match[str]) -> str:
                try:
                    got = store.resolve(m.group(1))
                except SecretError as exc:
                    raise SecretError(f"plugin '{plugin}': setting '{where}': {exc}") from None
                values.append(got)
                return got

            out = REFERENCE.sub(sub, item)
            if leaf is not None:
                settings.append(leaf)
            return out
        if isinstance(item, list):
            return [walk(v, f"{where}[{i}]", leaf) for i, v in enumerate(item)]
        if isinstance(item, Mapping):
            return {
                k: walk(v, f"{where}.{k}" if where else str(k), str(k)) for k, v in item.items()
            }
        return item

    return walk(value, path, None), values, settings


def register_secrets(values: list[str]) -> None:
    """Mask ``values`` in every log record of the process and in what every installed
    Redactor masks (``dativo run`` installs its run's Redactor before reading the
    project)."""
    process_redactor().add(values)
    for redactor in list(_installed):
        redactor.add(values)


def resolve_singer_config(
    config: dict[str, Any], plugin: str, env: Mapping[str, str] | None = None
) -> list[str]:
    """Resolve, in place, the references of a Dativo plugin run as a Singer plugin (by
    Meltano, which passes config as it is, or in a shell pipe); returns the values, which
    are registered for masking.

    The backends are those of ``$MELTANO_PROJECT_ROOT/meltano.yml`` (Meltano sets it for
    the plugins it starts), else ``env``.
    """
    if not has_references(config):
        return []
    import yaml

    from dativo_bridge.project import expand_env

    env = dict(os.environ) if env is None else env
    settings: Any = None
    where = "the environment (no MELTANO_PROJECT_ROOT/meltano.yml)"
    root = env.get("MELTANO_PROJECT_ROOT")
    if root and (Path(root) / "meltano.yml").is_file():
        path = Path(root) / "meltano.yml"
        with open(path, encoding="utf-8") as fh:
            data = yaml.safe_load(fh) or {}
        where = str(path)
        settings = project_secret_settings(data, where)
    store = SecretStore(expand_env(settings, env), env, where)
    resolved, values, _ = resolve_references(config, store, plugin)
    register_secrets(values)
    config.clear()
    config.update(resolved)
    return values
