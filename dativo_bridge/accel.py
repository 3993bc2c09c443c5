"""The optional Rust extension ``dativo_accel``: the one place that looks for it.

Every Rust path (the Singer decoder and encoder, the block reader of a target's input, the
PostgreSQL binary COPY reader) asks here instead of importing the extension itself, so
"not installed" means the same thing everywhere: the Python paths run, and a setting that
demands Rust (``accelerator: rust``) names what to install.
"""

from __future__ import annotations

import functools
import importlib
from types import ModuleType
from typing import Any

#: What to install for the Rust paths (the extension's distribution, built from rust_accel/).
INSTALL = "pip install dativo-accel"


@functools.cache
def module() -> ModuleType | None:
    """The ``dativo_accel`` module, or None when it is not installed."""
    try:
        return importlib.import_module("dativo_accel")
    except ImportError:
        return None


def available() -> bool:
    """Whether ``dativo_accel`` is installed."""
    return module() is not None


def function(name: str) -> Any | None:
    """``dativo_accel.<name>`` (a function or class), or None when the extension is not
    installed or is a build without it."""
    found = module()
    return None if found is None else getattr(found, name, None)


def required() -> ModuleType:
    """The ``dativo_accel`` module, for a path that runs only in Rust.

    Raises:
        ImportError: It is not installed (the message says what to install).
    """
    found = module()
    if found is None:
        raise ImportError(f"the dativo_accel extension is not installed ({INSTALL})")
    return found
