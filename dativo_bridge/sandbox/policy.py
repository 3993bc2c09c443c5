"""What a sandboxed command may do: the policy, and the paths it reads by default.

By default a command reads the system (/usr, /lib, /lib64, /bin, /sbin, and /etc minus
the files that hold secrets), its own installation (found from the executable, the
interpreter its shebang names, a Python venv's base interpreter and the source trees its
``.pth`` files and editable finders point to) and the regular files named on its command
line; it writes only a fresh scratch directory, which is its TMPDIR and HOME.
"""

from __future__ import annotations

import fnmatch
import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field

LEVELS = ("strict", "best-effort", "off")

SYSTEM_DIRS = ("/usr", "/lib", "/lib64", "/lib32", "/bin", "/sbin")
#: Names under /etc that are never readable: password hashes, private keys, sudo rules.
ETC_SECRETS = (
    "shadow",
    "shadow-",
    "gshadow",
    "gshadow-",
    "sudoers",
    "sudoers.d",
    "opasswd",
    "private",
    "*.key",
    "*_key",
    "*.keytab",
    "*.pem.key",
    "credentials*",
)
#: Read-only kernel interfaces runtimes ask for (CPU count, memory size, overcommit mode).
KERNEL_FILES = (
    "/proc/cpuinfo",
    "/proc/meminfo",
    "/proc/stat",
    "/proc/sys/vm/overcommit_memory",
    "/proc/self",
    "/sys/devices/system/cpu",
    "/sys/fs/cgroup",
)
DEVICES_RW = ("/dev/null", "/dev/zero", "/dev/full")
DEVICES_RO = ("/dev/urandom", "/dev/random")
INTERPRETERS = re.compile(r"^(python[0-9.]*|pypy[0-9.]*|node|ruby|perl|bash|sh|java)$")


@dataclass
class Policy:
    """One sandboxed run's rules; ``None`` means no limit."""

    command: list[str]
    name: str = ""
    network: bool = False
    memory_mb: int | None = None
    cpu_seconds: int | None = None
    wall_seconds: float | None = None
    max_file_mb: int | None = None
    max_processes: int | None = None
    max_open_files: int | None = None
    readable: list[str] = field(default_factory=list)
    writable: list[str] = field(default_factory=list)
    env: list[str] = field(default_factory=list)
    level: str = "best-effort"

    def __post_init__(self) -> None:
        if self.level not in LEVELS:
            raise ValueError(f"level must be one of {', '.join(LEVELS)}, not {self.level!r}")
        if not self.name and self.command:
            self.name = plugin_name(self.command)

    def describe(self) -> str:
        """The policy in force, on one line (for audit logs)."""
        parts = [f"level={self.level}", f"network={'on' if self.network else 'off'}"]
        for key in ("memory_mb", "cpu_seconds", "wall_seconds", "max_file_mb", "max_processes"):
            value = getattr(self, key)
            if value is not None:
                parts.append(f"{key}={value:g}" if isinstance(value, float) else f"{key}={value}")
        for key in ("readable", "writable", "env"):
            values = getattr(self, key)
            if values:
                parts.append(f"{key}={','.join(values)}")
        return " ".join(parts)


def plugin_name(command: list[str]) -> str:
    """What the breach message calls the command: its program, or the script an
    interpreter runs (``python tap_foo.py`` is ``tap_foo``)."""
    program = os.path.basename(command[0])
    if INTERPRETERS.match(program):
        for arg in command[1:]:
            if arg == "-m":
                continue
            if arg.startswith("-"):
                break
            return os.path.splitext(os.path.basename(arg))[0]
    return program


def resolve_executable(program: str, path: str | None) -> str | None:
    if os.sep in program:
        return os.path.abspath(program) if os.path.exists(program) else None
    return shutil.which(program, path=path)


def _root_of(executable: str) -> str:
    """The installation an executable belongs to: ``<prefix>`` for ``<prefix>/bin/x``
    (a venv, a Python, /usr/local; ``~/bin`` itself for ``~/bin/x``), else the executable
    alone: a script in a project directory must not make the project readable."""
    directory = os.path.dirname(executable)
    if os.path.basename(directory) == "bin":
        prefix = os.path.dirname(directory)
        return directory if prefix in ("/", os.path.expanduser("~")) else prefix
    return executable


def _shebang(path: str) -> list[str]:
    try:
        with open(path, "rb") as fh:
            head = fh.read(256)
    except OSError:
        return []
    if not head.startswith(b"#!"):
        return []
    return head[2:].split(b"\n", 1)[0].decode(errors="replace").split()


def _venv_base(root: str) -> Iterator[str]:
    """A venv's base interpreter (``home =`` in pyvenv.cfg) and what its site-packages
    ``.pth`` files and setuptools editable finders point to."""
    if not os.path.isdir(root):
        return
    cfg = os.path.join(root, "pyvenv.cfg")
    if os.path.isfile(cfg):
        with open(cfg, encoding="utf-8", errors="replace") as fh:
            for line in fh:
                key, _, value = line.partition("=")
                if key.strip() == "home" and value.strip():
                    yield _root_of(os.path.join(os.path.realpath(value.strip()), "python"))
    lib = os.path.join(root, "lib")
    if not os.path.isdir(lib):
        return
    for version in os.listdir(lib):
        site = os.path.join(lib, version, "site-packages")
        if not os.path.isdir(site):
            continue
        for entry in os.listdir(site):
            full = os.path.join(site, entry)
            if entry.endswith(".pth"):
                yield from _pth_dirs(full)
            elif entry.startswith("__editable__") and entry.endswith("_finder.py"):
                yield from _quoted_dirs(full)


def _pth_dirs(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        for line in fh:
            line = line.strip()
            if line.startswith("/") and os.path.isdir(line):
                yield line


def _quoted_dirs(path: str) -> Iterator[str]:
    with open(path, encoding="utf-8", errors="replace") as fh:
        text = fh.read(200_000)
    for match in re.finditer(r"['\"](/[^'\"\n]+)['\"]", text):
        if os.path.isdir(match.group(1)):
            yield match.group(1)


def installation(program: str, search_path: str | None, depth: int = 0) -> list[str]:
    """The directories the command's own installation lives in (see the module doc)."""
    found = resolve_executable(program, search_path)
    if found is None or depth > 3:
        return []
    roots: list[str] = []
    for candidate in dict.fromkeys((found, os.path.realpath(found))):
        root = _root_of(candidate)
        roots.append(root)
        roots.extend(_venv_base(root))
    words = _shebang(found)
    if words:
        interpreter, rest = words[0], words[1:]
        if os.path.basename(interpreter) == "env":
            rest = [word for word in rest if not word.startswith("-") and "=" not in word]
            if rest:
                roots.extend(installation(rest[0], search_path, depth + 1))
        else:
            roots.extend(installation(interpreter, search_path, depth + 1))
    return list(dict.fromkeys(roots))


_FD_ARG = re.compile(r"^/(?:dev|proc/self)/fd/(\d+)$")


def _arguments(command: list[str]) -> Iterator[str]:
    for arg in command[1:]:
        yield arg
        if arg.startswith("-") and "=" in arg:
            yield arg.partition("=")[2]


def command_line_files(command: list[str]) -> list[str]:
    """Regular files named by the command's arguments (``x.json``, ``--config=x.json``);
    not open descriptors (``/dev/fd/N``: see ``command_line_fds``)."""
    return [
        os.path.abspath(arg)
        for arg in _arguments(command)
        if arg and not _FD_ARG.match(arg) and os.path.isfile(arg)
    ]


def command_line_fds(command: list[str]) -> tuple[int, ...]:
    """Descriptors the arguments name as ``/dev/fd/N`` (how ``dativo run`` passes a config
    held in memory): they stay open in the sandbox, all others are closed."""
    fds = set()
    for arg in _arguments(command):
        match = _FD_ARG.match(arg)
        if match and int(match.group(1)) > 2:
            fds.add(int(match.group(1)))
    return tuple(sorted(fds))


#: ETC_SECRETS as one regular expression: what fnmatch.fnmatch matches on POSIX (no case
#: folding), a single match per name instead of one fnmatch call per pattern (every
#: sandboxed start walks /etc: ~1,200 names here, 13 ms with fnmatch, issue 19).
_SECRET = re.compile("|".join(fnmatch.translate(pattern) for pattern in ETC_SECRETS))


def _is_secret(name: str) -> bool:
    return _SECRET.match(name) is not None


def _holds_secret(path: str) -> bool:
    match = _SECRET.match
    return any(any(map(match, (*dirs, *files))) for _, dirs, files in os.walk(path))


def etc_paths(root: str = "/etc") -> list[str]:
    """/etc as the fewest paths that cover everything in it except the secrets: a
    directory with no secret beneath is one path, otherwise its entries one by one."""
    paths: list[str] = []
    try:
        entries = sorted(os.listdir(root))
    except OSError:
        return paths
    for name in entries:
        if _is_secret(name):
            continue
        full = os.path.join(root, name)
        if os.path.isdir(full) and not os.path.islink(full) and _holds_secret(full):
            paths.extend(etc_paths(full))
        else:
            paths.append(full)
    return paths


def default_readable(policy: Policy, search_path: str | None) -> list[str]:
    """Everything the command reads besides what the policy names (see the module doc)."""
    paths = [*SYSTEM_DIRS, *etc_paths(), *KERNEL_FILES]
    paths.extend(installation(policy.command[0], search_path))
    paths.extend(command_line_files(policy.command))
    return list(dict.fromkeys(paths))
