"""Linux namespaces for the sandboxed child: a user namespace (so an unprivileged user may
make the others, and so the child holds no capability over the host, even as root), a
network namespace whose only interface is loopback, and a mount namespace whose only
change is a fresh, size-capped tmpfs on /dev/shm (so ``multiprocessing`` semaphores and
shared memory work without sharing the host's /dev/shm).

Python 3.11 has no ``os.unshare``: the call goes through libc. Everything here runs in
the forked child, single-threaded, before exec.
"""

from __future__ import annotations

import ctypes
import fcntl
import os
import socket
import struct

CLONE_NEWUSER = 0x10000000
CLONE_NEWNET = 0x40000000
CLONE_NEWNS = 0x00020000

_MS_NOSUID = 0x2
_MS_NODEV = 0x4
_MS_NOEXEC = 0x8
_MS_REC = 0x4000
_MS_PRIVATE = 0x40000

SHM = "/dev/shm"

_SIOCGIFFLAGS = 0x8913
_SIOCSIFFLAGS = 0x8914
_IFF_UP = 0x1

_libc = ctypes.CDLL(None, use_errno=True)


def unshare(flags: int) -> None:
    if _libc.unshare(ctypes.c_int(flags)) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"unshare: {os.strerror(err)}")


def _mount(
    source: bytes | None, target: bytes, fstype: bytes | None, flags: int, data: bytes | None
) -> None:
    if _libc.mount(source, target, fstype, ctypes.c_ulong(flags), data) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"mount {target.decode()}: {os.strerror(err)}")


def _write(path: str, text: str) -> None:
    fd = os.open(path, os.O_WRONLY)
    try:
        os.write(fd, text.encode())
    finally:
        os.close(fd)


def enter_user_namespace() -> None:
    """A new user namespace in which the caller keeps its own uid and gid (files keep
    their owners, and the plugin sees who it is) but has no capability outside it."""
    uid, gid = os.getuid(), os.getgid()
    unshare(CLONE_NEWUSER)
    _write("/proc/self/setgroups", "deny")
    _write("/proc/self/uid_map", f"{uid} {uid} 1\n")
    _write("/proc/self/gid_map", f"{gid} {gid} 1\n")


def enter_network_namespace() -> None:
    """A new network namespace with loopback up and nothing else."""
    unshare(CLONE_NEWNET)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        request = struct.pack("16sH22x", b"lo", 0)
        flags = struct.unpack("16sH22x", fcntl.ioctl(sock, _SIOCGIFFLAGS, request))[1]
        fcntl.ioctl(sock, _SIOCSIFFLAGS, struct.pack("16sH22x", b"lo", flags | _IFF_UP))


def enter_private_shm(size_mb: int) -> None:
    """A new mount namespace (nothing in it propagates back to the host) with an empty
    tmpfs of at most ``size_mb`` MB on /dev/shm: the host's shared memory is not visible,
    and what the command puts there is gone with its namespace."""
    unshare(CLONE_NEWNS)
    _mount(None, b"/", None, _MS_REC | _MS_PRIVATE, None)
    options = f"size={size_mb}m,mode=1777".encode()
    _mount(b"tmpfs", SHM.encode(), b"tmpfs", _MS_NOSUID | _MS_NODEV | _MS_NOEXEC, options)
