"""A plugin's reader or writer class named ``module:Class`` and imported on first use.

A Singer entry point (``target-dativo-parquet = ...:TargetDativoParquet.cli``) builds its
singer-sdk class at import. Built around the writer class itself, ``--about`` would import
the writer's module and with it pyarrow, pyiceberg or psycopg; built around a
:class:`DeferredClass`, it needs only the plugin's name and settings (a light ``settings``
module), and the class is imported when the plugin first reads or writes.

Invariant: the class, once imported, has the name and the very settings the plugin was
built with, or its first use fails with a PluginLoadError naming both (a plugin never runs
with settings other than those its ``--about`` shows).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Mapping
from typing import Any

from dativo_bridge.errors import PluginLoadError

_REFERENCE = re.compile(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")


class DeferredClass:
    """A class attribute (``reader_class``, ``writer_class``) whose value is the class
    ``reference`` names, imported the first time the attribute is read."""

    def __init__(self, reference: str, name: str, config_jsonschema: Mapping[str, Any]) -> None:
        """Args:
        reference: ``package.module:Class``.
        name: The class's ``name`` (the plugin's).
        config_jsonschema: The class's ``config_jsonschema``, which it must have.

        Raises:
            PluginLoadError: ``reference`` is not ``module:Class``.
        """
        if not _REFERENCE.match(reference):
            raise PluginLoadError(f"{name}: {reference!r} is not a module:Class reference")
        self.reference = reference
        self.module, self.class_name = reference.split(":")
        self.name = name
        self.config_jsonschema = config_jsonschema
        self._loaded: type | None = None

    def load(self) -> type:
        """The class (imported once).

        Raises:
            PluginLoadError: It cannot be imported, or its name or settings are not the
                plugin's.
        """
        if self._loaded is None:
            try:
                found = getattr(importlib.import_module(self.module), self.class_name)
            except (ImportError, AttributeError) as exc:
                raise PluginLoadError(f"{self.name}: cannot load {self.reference}: {exc}") from exc
            if getattr(found, "name", None) != self.name:
                raise PluginLoadError(
                    f"{self.name}: {self.reference} is named {getattr(found, 'name', None)!r}"
                )
            if getattr(found, "config_jsonschema", None) != self.config_jsonschema:
                raise PluginLoadError(
                    f"{self.name}: the config_jsonschema of {self.reference} is not the "
                    "settings the plugin was built with (its settings module)"
                )
            self._loaded = found
        return self._loaded

    def __get__(self, instance: object, owner: type | None = None) -> type:
        return self.load()

    def __repr__(self) -> str:
        return f"DeferredClass({self.reference!r})"
