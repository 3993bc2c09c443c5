"""Reading plugin definitions from meltano.yml, the way Meltano would."""

from __future__ import annotations

import copy
import difflib
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from dotenv import dotenv_values

from dativo_bridge.errors import ConfigError

if TYPE_CHECKING:
    from dativo_bridge.secret_refs import SecretStore

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand_env(
    value: Any,
    env: Mapping[str, str],
    unset: dict[str, UnsetVar] | None = None,
    path: str = "",
) -> Any:
    """Expand ``$VAR`` and ``${VAR}`` in every string of ``value`` (unset -> empty).

    With ``unset``, every setting (dotted ``path``) that used a variable which is unset
    or empty is recorded there, so that the user can be told which one and where.
    """
    if isinstance(value, str):

        def sub(m: re.Match[str]) -> str:
            name = m.group(1) or m.group(2)
            got = env.get(name, "")
            if not got and unset is not None:
                whole = m.group(0) == value.strip()
                unset[path] = UnsetVar(name, name in env, whole)
            return got

        return _VAR.sub(sub, value)
    if isinstance(value, list):
        return [expand_env(v, env, unset, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, dict):
        return {
            k: expand_env(v, env, unset, f"{path}.{k}" if path else str(k))
            for k, v in value.items()
        }
    return value


#: Capabilities that decide the arguments Meltano passes (``--catalog``, ``--state``,
#: ``--discover``, ``--properties``).
_INVOCATION_CAPABILITIES = frozenset({"catalog", "state", "discover", "properties"})


@dataclass(frozen=True)
class UnsetVar:
    """A variable a setting's value refers to that is unset (or set to the empty string).

    Attributes:
        var: The variable's name.
        empty: True if it is set, to the empty string; False if it is not set at all.
        whole: True if the setting's whole value is the variable (so it is now empty).
    """

    var: str
    empty: bool
    whole: bool


#: Settings that are useless, or worse, misleading, when empty: a DSN or URL that is the
#: empty string makes a client connect to its defaults (``role "root"`` on localhost).
_MUST_NOT_BE_EMPTY = re.compile(r"(^|_)(dsn|url|uri|connection_string|host|path)$")

#: The executables that run a user's ArrowReader/ArrowWriter class, and the setting naming it.
CUSTOM_EXECUTABLES = {"extractors": "tap-dativo-custom", "loaders": "target-dativo-custom"}
CUSTOM_SETTINGS = {"extractors": "reader_class", "loaders": "writer_class"}


def _merge(base: dict[str, Any], over: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in over.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = copy.deepcopy(value)
    return out


@dataclass
class PluginDef:
    """One extractor or loader from meltano.yml, with its environment applied."""

    name: str
    kind: str  # "extractors" or "loaders"
    executable: str
    namespace: str | None = None
    config: dict[str, Any] = field(default_factory=dict)
    select: list[str] = field(default_factory=list)
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)
    sensitive: list[str] = field(default_factory=list)
    #: Settings whose value used an unset or empty environment variable.
    unset_env: dict[str, UnsetVar] = field(default_factory=dict)
    #: Where the plugin's settings came from (meltano.yml, its .env).
    source_file: Path | None = None
    #: meltano.yml's ``capabilities:`` (None when it has none).
    capabilities: list[str] | None = None
    #: meltano.yml's ``sandbox:`` policy for a foreign plugin (docs/sandbox.md).
    sandbox: dict[str, Any] | None = None
    #: The values its ``${SECRET:...}`` references resolved to (docs/secrets.md).
    secrets: list[str] = field(default_factory=list)

    def check_env(self) -> list[str]:
        """Raise ConfigError for a connection or path setting that is empty because its
        environment variable is unset or empty; return a warning for each other setting
        that used one, and one for a Dativo plugin that lacks capabilities it supports
        (:meth:`capabilities_warning`)."""
        warnings = [w for w in (self.capabilities_warning(),) if w]
        for setting, unset in self.unset_env.items():
            where = self.source_file or Path("meltano.yml")
            how = "is set to the empty string" if unset.empty else "is not set"
            message = (
                f"plugin '{self.name}': setting '{setting}' uses ${unset.var} ({where}), "
                f"which {how} in the environment or in {where.parent / '.env'}"
            )
            leaf = setting.rsplit(".", 1)[-1]
            if unset.whole and _MUST_NOT_BE_EMPTY.search(leaf):
                raise ConfigError(
                    f"{message}, so '{setting}' is empty: export {unset.var}=... or add "
                    f"it to {where.parent / '.env'}"
                )
            warnings.append(message)
        return warnings

    def supported_capabilities(self) -> list[str] | None:
        """The capabilities ``--about`` lists for this plugin if it is a Dativo plugin (a
        registered one, or a user class run by tap-/target-dativo-custom), else None."""
        from dativo_bridge.plugin_docs import capabilities_of, plugin_class

        for name in (self.executable, self.name):
            cls = plugin_class(name)
            if cls is not None:
                return capabilities_of(cls)
        custom = CUSTOM_EXECUTABLES.get(self.kind)
        if self.executable == custom or self.config.get(CUSTOM_SETTINGS[self.kind]):
            from dativo_bridge.sdk import ArrowTap, ArrowTarget

            return capabilities_of(ArrowTap if self.kind == "extractors" else ArrowTarget)
        return None

    def capabilities_warning(self) -> str | None:
        """One line naming the capabilities a Dativo plugin supports that meltano.yml does
        not declare for it, and the ``capabilities:`` line to add (None: nothing missing).

        Meltano passes ``--catalog`` and ``--state`` only to a plugin that declares
        ``catalog`` and ``state``: without them every ``meltano run`` reads everything
        again and ``select:``/``metadata:`` are ignored, silently.
        """
        supported = self.supported_capabilities()
        if supported is None:
            return None
        declared = set(self.capabilities or ())
        missing = [c for c in supported if c not in declared]
        # Only these change how Meltano invokes a plugin; the rest are descriptive.
        if not set(missing) & _INVOCATION_CAPABILITIES:
            return None
        where = self.source_file or Path("meltano.yml")
        consequence = ""
        if {"catalog", "state", "discover"} & set(missing):
            consequence = (
                ": Meltano runs it without --catalog/--state, so every `meltano run` reads "
                "everything again and select:/metadata: are ignored"
            )
        wanted = [c for c in supported if c in declared or c in missing]
        extra = [c for c in self.capabilities or () if c not in wanted]
        return (
            f"plugin '{self.name}' ({where}) does not declare the capabilities "
            f"{', '.join(missing)}, which it supports{consequence}; add to it: "
            f"capabilities: [{', '.join([*wanted, *extra])}]"
        )

    def command(self, project_dir: Path) -> list[str]:
        """argv to run the plugin as a subprocess (PATH, then Meltano's plugin venvs)."""
        found = shutil.which(self.executable)
        if found:
            return [found]
        venv = project_dir / ".meltano" / self.kind / self.name / "venv" / "bin" / self.executable
        if venv.exists():
            return [str(venv)]
        local = project_dir / self.executable
        if local.exists() and os.access(local, os.X_OK):
            return [str(local)]
        raise ConfigError(
            f"plugin '{self.name}': executable '{self.executable}' not found on PATH or in "
            f"{venv.parent}; install it (e.g. `meltano install`) or fix 'executable'"
        )


class Project:
    """A meltano.yml project: plugins, environments and the .env file beside it."""

    def __init__(
        self, path: str | os.PathLike[str] = "meltano.yml", environment: str | None = None
    ) -> None:
        self.file = Path(path).resolve()
        if not self.file.exists():
            raise ConfigError(f"no project file at {self.file} (use --project)")
        self.dir = self.file.parent
        with open(self.file, encoding="utf-8") as fh:
            self.data: dict[str, Any] = yaml.safe_load(fh) or {}
        env_file = self.dir / ".env"
        dotenv = (
            {k: v for k, v in dotenv_values(env_file).items() if v is not None}
            if env_file.exists()
            else {}
        )
        self.env: dict[str, str] = {**dotenv, **os.environ}
        self.environment = (
            environment
            or os.environ.get("MELTANO_ENVIRONMENT")
            or self.data.get("default_environment")
        )
        self._secret_store: SecretStore | None = None
        env_def = self._environment_def()
        self.env = {**{k: str(v) for k, v in (env_def.get("env") or {}).items()}, **self.env}

    def _environment_def(self) -> dict[str, Any]:
        if not self.environment:
            return {}
        for env in self.data.get("environments") or []:
            if env.get("name") == self.environment:
                return dict(env.get("config") or {}) | {"env": env.get("env") or {}}
        raise ConfigError(f"environment '{self.environment}' is not defined in {self.file}")

    def plugin(self, name: str) -> PluginDef:
        """The named extractor or loader with its environment overrides and env expansion."""
        for kind in ("extractors", "loaders"):
            for raw in (self.data.get("plugins") or {}).get(kind) or []:
                if raw.get("name") != name:
                    continue
                merged = self._with_inheritance(kind, raw)
                env_plugins = (self._environment_def().get("plugins") or {}).get(kind) or []
                for over in env_plugins:
                    if over.get("name") == name:
                        merged = _merge(merged, over)
                unset: dict[str, UnsetVar] = {}
                config = expand_env(merged.get("config") or {}, self.env, unset)
                sensitive = [
                    s["name"]
                    for s in merged.get("settings") or []
                    if isinstance(s, Mapping) and s.get("sensitive")
                ]
                config, secrets = self._resolve_secrets(name, config, sensitive)
                return PluginDef(
                    name=name,
                    kind=kind,
                    executable=str(merged.get("executable") or name),
                    namespace=merged.get("namespace"),
                    config=config,
                    select=list(merged.get("select") or []),
                    metadata=dict(merged.get("metadata") or {}),
                    sensitive=sensitive,
                    unset_env=unset,
                    source_file=self.file,
                    capabilities=(
                        [str(c) for c in merged["capabilities"]]
                        if isinstance(merged.get("capabilities"), list)
                        else None
                    ),
                    sandbox=merged.get("sandbox"),
                    secrets=secrets,
                )
        names = self.plugin_names()
        defined = "; ".join(f"{kind}: {', '.join(n) or '(none)'}" for kind, n in names.items())
        close = difflib.get_close_matches(name, [n for ns in names.values() for n in ns], 1)
        hint = f"did you mean '{close[0]}'? " if close else ""
        raise ConfigError(
            f"no extractor or loader named '{name}' in {self.file}; {hint}defined: {defined}"
        )

    def _resolve_secrets(
        self, name: str, config: dict[str, Any], sensitive: list[str]
    ) -> tuple[dict[str, Any], list[str]]:
        """``config`` with its ``${SECRET:...}`` references resolved (after ``$VAR``
        expansion, so a secret's value is never expanded); each value is registered for
        masking and each setting that used one is added to ``sensitive``."""
        from dativo_bridge.secret_refs import (
            SecretStore,
            has_references,
            project_secret_settings,
            register_secrets,
            resolve_references,
        )

        if not has_references(config):
            return config, []
        if self._secret_store is None:
            settings = project_secret_settings(self.data, str(self.file))
            self._secret_store = SecretStore(
                expand_env(settings, self.env), self.env, str(self.file)
            )
        resolved, values, settings_used = resolve_references(config, self._secret_store, name)
        register_secrets(values)
        sensitive.extend(s for s in settings_used if s not in sensitive)
        return resolved, values

    def plugin_names(self) -> dict[str, list[str]]:
        """The names of the extractors and of the loaders meltano.yml defines."""
        plugins = self.data.get("plugins") or {}
        return {
            kind: [str(p.get("name")) for p in plugins.get(kind) or [] if p.get("name")]
            for kind in ("extractors", "loaders")
        }

    def _with_inheritance(self, kind: str, raw: Mapping[str, Any]) -> dict[str, Any]:
        parent = raw.get("inherit_from")
        if not parent:
            return dict(raw)
        for other in (self.data.get("plugins") or {}).get(kind) or []:
            if other.get("name") == parent:
                base = self._with_inheritance(kind, other)
                merged = _merge(base, {k: v for k, v in raw.items() if k != "inherit_from"})
                return merged
        raise ConfigError(f"plugin '{raw.get('name')}' inherits from unknown '{parent}'")

    def state_id(self, tap: str, target: str) -> str:
        """Meltano's state id: ``<environment>:<tap>-to-<target>``."""
        return f"{self.environment or 'default'}:{tap}-to-{target}"
