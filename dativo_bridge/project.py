"""Reading plugin definitions from meltano.yml, the way Meltano would."""

from __future__ import annotations

import copy
import os
import re
import shutil
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from dotenv import dotenv_values

from dativo_bridge.errors import ConfigError

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}|\$([A-Za-z_][A-Za-z0-9_]*)")


def expand_env(value: Any, env: Mapping[str, str]) -> Any:
    """Expand ``$VAR`` and ``${VAR}`` in every string of ``value`` (unset -> empty)."""
    if isinstance(value, str):
        return _VAR.sub(lambda m: env.get(m.group(1) or m.group(2), ""), value)
    if isinstance(value, list):
        return [expand_env(v, env) for v in value]
    if isinstance(value, dict):
        return {k: expand_env(v, env) for k, v in value.items()}
    return value


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
                config = expand_env(merged.get("config") or {}, self.env)
                sensitive = [
                    s["name"]
                    for s in merged.get("settings") or []
                    if isinstance(s, Mapping) and s.get("sensitive")
                ]
                return PluginDef(
                    name=name,
                    kind=kind,
                    executable=str(merged.get("executable") or name),
                    namespace=merged.get("namespace"),
                    config=config,
                    select=list(merged.get("select") or []),
                    metadata=dict(merged.get("metadata") or {}),
                    sensitive=sensitive,
                )
        raise ConfigError(f"no extractor or loader named '{name}' in {self.file}")

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
