"""A small ctypes binding to Linux Landlock (filesystem, TCP and scope rules).

Landlock is an allow-list: once a ruleset is enforced on a process, every access right the
ruleset *handles* is denied except beneath the paths (or on the ports) a rule grants it to.
The rights a kernel knows grow with its ABI version; this module asks the kernel for its
version and handles only what that version knows, so a ruleset never fails to build on an
older kernel, it just covers less (``abi()`` says how much).
"""

from __future__ import annotations

import ctypes
import errno
import os
import struct
from collections.abc import Iterable

# x86_64 and aarch64 share these numbers (the syscalls were added after the tables unified).
_SYS_CREATE_RULESET = 444
_SYS_ADD_RULE = 445
_SYS_RESTRICT_SELF = 446
_CREATE_RULESET_VERSION = 1
_RULE_PATH_BENEATH = 1

# Filesystem rights, by the ABI that introduced them.
EXECUTE = 1 << 0
WRITE_FILE = 1 << 1
READ_FILE = 1 << 2
READ_DIR = 1 << 3
REMOVE_DIR = 1 << 4
REMOVE_FILE = 1 << 5
MAKE_CHAR = 1 << 6
MAKE_DIR = 1 << 7
MAKE_REG = 1 << 8
MAKE_SOCK = 1 << 9
MAKE_FIFO = 1 << 10
MAKE_BLOCK = 1 << 11
MAKE_SYM = 1 << 12
REFER = 1 << 13  # ABI 2
TRUNCATE = 1 << 14  # ABI 3
IOCTL_DEV = 1 << 15  # ABI 5

# Network rights (ABI 4) and scopes (ABI 6).
NET_BIND_TCP = 1 << 0
NET_CONNECT_TCP = 1 << 1
SCOPE_ABSTRACT_UNIX_SOCKET = 1 << 0
SCOPE_SIGNAL = 1 << 1

_FS_BY_ABI = {1: (1 << 13) - 1, 2: (1 << 14) - 1, 3: (1 << 15) - 1, 4: (1 << 15) - 1}
_FILE_ONLY = EXECUTE | WRITE_FILE | READ_FILE | TRUNCATE | IOCTL_DEV

#: What a readable path grants: list, read and execute.
READ = EXECUTE | READ_FILE | READ_DIR
#: What a device such as /dev/null grants: read and write an existing file.
DEVICE = READ_FILE | WRITE_FILE | TRUNCATE | IOCTL_DEV

_libc = ctypes.CDLL(None, use_errno=True)
_libc.syscall.restype = ctypes.c_long


class LandlockError(OSError):
    """The kernel refused to build or enforce a ruleset."""


def abi() -> int:
    """The kernel's Landlock ABI version, 0 when Landlock is unavailable or disabled."""
    version = _libc.syscall(_SYS_CREATE_RULESET, None, ctypes.c_size_t(0), _CREATE_RULESET_VERSION)
    return max(int(version), 0)


def fs_rights(version: int) -> int:
    """Every filesystem right the given ABI version knows."""
    if version <= 0:
        return 0
    return _FS_BY_ABI.get(version, (1 << 16) - 1)


class Ruleset:
    """One ruleset under construction; ``enforce`` applies it to the calling process (and,
    after that, to everything it executes or forks). The caller must have set
    no_new_privs first (``limits.no_new_privs``)."""

    def __init__(self, version: int, *, deny_tcp: bool, scoped: bool) -> None:
        if version <= 0:
            raise LandlockError(0, "Landlock is not available on this kernel")
        self.version = version
        self.handled_fs = fs_rights(version)
        net = NET_BIND_TCP | NET_CONNECT_TCP if deny_tcp and version >= 4 else 0
        scope = SCOPE_ABSTRACT_UNIX_SOCKET | SCOPE_SIGNAL if scoped and version >= 6 else 0
        if version >= 6:
            attr = struct.pack("=QQQ", self.handled_fs, net, scope)
        elif version >= 4:
            attr = struct.pack("=QQ", self.handled_fs, net)
        else:
            attr = struct.pack("=Q", self.handled_fs)
        buf = ctypes.create_string_buffer(attr, len(attr))
        fd = _libc.syscall(_SYS_CREATE_RULESET, buf, ctypes.c_size_t(len(attr)), 0)
        if fd < 0:
            err = ctypes.get_errno()
            raise LandlockError(err, f"landlock_create_ruleset: {os.strerror(err)}")
        self.fd = int(fd)
        self.denies_tcp = bool(net)
        self.scoped = bool(scope)

    def allow(self, path: str, rights: int) -> bool:
        """Grant ``rights`` beneath ``path`` (only the file rights when it is not a
        directory). A path that does not exist is skipped: returns False."""
        try:
            fd = os.open(path, os.O_PATH | os.O_CLOEXEC)
        except OSError:
            return False
        try:
            rights &= self.handled_fs
            if not os.path.isdir(path):
                rights &= _FILE_ONLY
            if not rights:
                return True
            attr = struct.pack("=Qi", rights, fd)
            buf = ctypes.create_string_buffer(attr, len(attr))
            rc = _libc.syscall(_SYS_ADD_RULE, self.fd, _RULE_PATH_BENEATH, buf, 0)
            if rc < 0:
                err = ctypes.get_errno()
                if err == errno.EBADFD:
                    # An internal filesystem (memfd, pipe): Landlock never restricts those.
                    return False
                raise LandlockError(err, f"landlock_add_rule {path}: {os.strerror(err)}")
            return True
        finally:
            os.close(fd)

    def allow_all(self, paths: Iterable[str], rights: int) -> None:
        for path in paths:
            self.allow(path, rights)

    def enforce(self) -> None:
        rc = _libc.syscall(_SYS_RESTRICT_SELF, self.fd, 0)
        err = ctypes.get_errno()
        os.close(self.fd)
        if rc < 0:
            raise LandlockError(err, f"landlock_restrict_self: {os.strerror(err)}")
