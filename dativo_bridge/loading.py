"""Loading user classes named `module:Class`, only from installed packages or allow-listed
directories, logging each load with the sha256 of the file it came from.

The origin is checked before the import: a module, package directory or bytecode file
that resolves (through symlinks) outside the allowed places is refused without any of
its code having run."""

from __future__ import annotations

import hashlib
import importlib
import importlib.machinery
import importlib.metadata
import importlib.util
import logging
import re
import sys
import sysconfig
from collections.abc import Sequence
from importlib.machinery import ModuleSpec
from importlib.metadata import entry_points
from pathlib import Path
from typing import TypeVar

from dativo_bridge.errors import PluginLoadError

logger = logging.getLogger("dativo.loading")

_REFERENCE = re.compile(
    r"^[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*:[A-Za-z_][A-Za-z0-9_]*$"
)
PLUGIN_GROUP = "dativo.plugins"

T = TypeVar("T")


def _installed_roots() -> list[Path]:
    roots = {Path(sysconfig.get_paths()[k]).resolve() for k in ("purelib", "platlib", "stdlib")}
    return sorted(roots)


def _is_installed(module: str, origin: Path) -> bool:
    if any(origin.is_relative_to(root) for root in _installed_roots()):
        return True
    top = module.split(".")[0]
    # Editable installs live outside site-packages but are still installed distributions.
    return top in importlib.metadata.packages_distributions()


def sha256_of(path: Path) -> str:
    """Hex sha256 of a file."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _spec_paths(spec: ModuleSpec) -> list[Path]:
    """The files and directories importing ``spec`` reads: its file, its bytecode cache and,
    for a package, every directory its submodules come from."""
    paths = [Path(p) for p in spec.submodule_search_locations or ()]
    if spec.has_location and spec.origin:
        paths.append(Path(spec.origin))
        if spec.cached and Path(spec.cached).exists():
            paths.append(Path(spec.cached))
    return paths


def _file_in_dirs(name: str, dirs: Sequence[Path]) -> Path | None:
    """A module file or package directory named ``name`` in an allowed directory."""
    for d in dirs:
        for candidate in (d / f"{name}.py", d / name / "__init__.py"):
            if candidate.is_file():
                return candidate if candidate.name != "__init__.py" else candidate.parent
    return None


def _check_not_shadowed(name: str, spec: ModuleSpec | None, dirs: Sequence[Path]) -> None:
    """Refuse a top-level name that resolves outside ``dirs`` while a file of that name is
    inside them: the standard library (or an installed package, or a module already
    imported) takes the name first, so the user's file would silently never load."""
    mine = _file_in_dirs(name, dirs)
    if mine is None or spec is None:
        return
    origin = spec.origin if spec.has_location else None
    if origin and any(Path(origin).absolute().is_relative_to(d) for d in dirs):
        return
    where = origin or f"Python's {spec.origin or 'built-in'} module"
    stem = f"{name}_plugin"
    raise PluginLoadError(
        f"module name '{name}' is taken: it resolves to {where}, not to your {mine} in "
        f"plugin_dirs (the standard library or an installed package is found first). "
        f"Rename the file (e.g. to {stem}.py) and the reference to '{stem}:...'"
    )


def _check_before_import(module_name: str, dirs: Sequence[Path]) -> None:
    """Refuse ``module_name`` before any of its code (or a parent package's) runs.

    Each dotted component is located without importing it (``find_spec`` for the top
    level, ``PathFinder`` on the parent's search path below). A component found inside an
    allowed directory must still be inside one once every symlink is resolved; one found
    elsewhere must be part of an installed distribution.
    """
    parts = module_name.split(".")
    search: list[str] | None = None
    for depth in range(1, len(parts) + 1):
        name = ".".join(parts[:depth])
        if name in sys.modules:
            spec = getattr(sys.modules[name], "__spec__", None)
        elif search is None:
            spec = importlib.util.find_spec(name)
        else:
            spec = importlib.machinery.PathFinder.find_spec(name, search)
        if depth == 1:
            _check_not_shadowed(name, spec, dirs)
        if spec is None:
            raise PluginLoadError(
                f"module '{name}' is not installed and not in the "
                f"allowed plugin directories {[str(d) for d in dirs]}"
            )
        for path in _spec_paths(spec):
            found_in_allowed = any(path.absolute().is_relative_to(d) for d in dirs)
            real = path.resolve()
            if found_in_allowed:
                allowed = any(real.is_relative_to(d) for d in dirs)
            else:
                allowed = any(real.is_relative_to(d) for d in dirs) or _is_installed(name, real)
            if not allowed:
                raise PluginLoadError(
                    f"module '{name}' would be imported from {real}, which is neither an "
                    "installed package nor inside an allowed plugin directory (a symlink "
                    "out of the directory is refused before anything is imported)"
                )
        search = list(spec.submodule_search_locations or [])
        if depth < len(parts) and not search:
            raise PluginLoadError(f"'{name}' is not a package, so '{module_name}' cannot exist")


def load_class(
    reference: str,
    base: type[T],
    *,
    allowed_dirs: Sequence[str | Path] = (),
    project_dir: str | Path = ".",
) -> type[T]:
    """Import ``module:Class`` and check it subclasses ``base``.

    Args:
        reference: ``package.module:ClassName``; no paths.
        base: Required base class (ArrowReader or ArrowWriter).
        allowed_dirs: Directories (relative to ``project_dir``) user modules may come from,
            in addition to installed packages.
        project_dir: Where relative ``allowed_dirs`` are resolved; they must stay inside it.

    Raises:
        PluginLoadError: Malformed reference, module outside the allowed places, import
            failure, or a class of the wrong kind.
    """
    if not _REFERENCE.match(reference or ""):
        raise PluginLoadError(
            f"{reference!r} is not a class reference of the form 'package.module:ClassName'"
        )
    module_name, class_name = reference.split(":")
    project = Path(project_dir).resolve()
    dirs: list[Path] = []
    for entry in allowed_dirs:
        path = (project / entry).resolve()
        if not path.is_relative_to(project):
            raise PluginLoadError(
                f"plugin directory {entry!r} is outside the project directory {project}"
            )
        dirs.append(path)
    saved = list(sys.path)
    try:
        # Only installed locations and the allow-list: never the current directory.
        sys.path[:] = [str(d) for d in dirs] + [
            p for p in saved if p not in ("", ".") and Path(p).resolve() != Path.cwd().resolve()
        ]
        _check_before_import(module_name, dirs)
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise PluginLoadError(f"cannot import '{module_name}': {exc}") from None
    finally:
        sys.path[:] = saved
    origin = Path(getattr(module, "__file__", "") or "").resolve()
    allowed = any(origin.is_relative_to(d) for d in dirs) or _is_installed(module_name, origin)
    if not allowed:
        raise PluginLoadError(
            f"module '{module_name}' comes from {origin}, which is neither an installed "
            "package nor inside an allowed plugin directory"
        )
    cls = getattr(module, class_name, None)
    if not isinstance(cls, type) or not issubclass(cls, base):
        raise PluginLoadError(f"'{reference}' is not a subclass of {base.__name__}")
    check_interface(cls, f"'{reference}' ({origin})")
    logger.info("loaded %s from %s (sha256 %s)", reference, origin, sha256_of(origin))
    return cls


_INTERFACE = re.compile(r"^(\d+)\.(\d+)$")


def _interface_parts(version: object, what: str) -> tuple[int, int]:
    found = _INTERFACE.match(str(version)) if isinstance(version, str) else None
    if found is None:
        raise PluginLoadError(
            f"{what} declares interface_version {version!r}; it must be 'MAJOR.MINOR' "
            "(a string such as '1.0')"
        )
    return int(found.group(1)), int(found.group(2))


def check_interface(cls: type, what: str) -> None:
    """Refuse a reader or writer built for another major version of the interface than
    this Dativo's (``interface_version`` against INTERFACE_VERSION); warn for a newer
    minor. ``what`` names the plugin in the message (its reference and package).

    Raises:
        PluginLoadError: Another major, or a malformed ``interface_version``.
    """
    from dativo_bridge.interfaces import INTERFACE_VERSION, ArrowReader, ArrowWriter

    if not issubclass(cls, ArrowReader | ArrowWriter):
        return
    kind = "reader" if issubclass(cls, ArrowReader) else "writer"
    declared = getattr(cls, "interface_version", INTERFACE_VERSION)
    major, minor = _interface_parts(declared, what)
    ours_major, ours_minor = _interface_parts(INTERFACE_VERSION, "Dativo")
    if major != ours_major:
        age = "an older" if major < ours_major else "a newer"
        raise PluginLoadError(
            f"{what} was built for {age} Dativo {kind} interface ({declared}); this "
            f"Dativo ({_dativo_version()}) provides interface {INTERFACE_VERSION}. Install a "
            f"release of the plugin built for interface {ours_major}.x, or a Dativo that "
            f"provides {major}.x (`dativo plugins` lists what each plugin needs)"
        )
    if minor > ours_minor:
        logger.warning(
            "%s was built for %s interface %s, newer than this Dativo's %s (%s): it may "
            "use what this Dativo lacks; upgrade Dativo if it fails",
            what,
            kind,
            declared,
            INTERFACE_VERSION,
            _dativo_version(),
        )


def _dativo_version() -> str:
    try:
        return importlib.metadata.version("dativo")
    except importlib.metadata.PackageNotFoundError:
        return "version unknown"


def describe_entry_point(ep: importlib.metadata.EntryPoint) -> str:
    """``plugin 'NAME' (module:Class from DIST VERSION)`` for messages."""
    dist = f" from {ep.dist.name} {ep.dist.version}" if ep.dist is not None else ""
    return f"plugin '{ep.name}' ({ep.value}{dist})"


def registered_plugin(name: str) -> type | None:
    """The ArrowReader/ArrowWriter class a Dativo plugin name is registered for, if any.

    Raises:
        PluginLoadError: The class was built for another major version of the interface.
    """
    for ep in entry_points(group=PLUGIN_GROUP):
        if ep.name == name:
            loaded: type = ep.load()
            check_interface(loaded, describe_entry_point(ep))
            return loaded
    return None
