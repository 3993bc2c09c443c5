"""A seccomp filter for the network fallback: where no network namespace can be made,
Landlock denies TCP ``bind`` and ``connect`` but knows nothing of other protocols, so a
command could still send UDP (DNS tunnels, syslog, statsd) or SCTP to any host. This
filter lets ``socket()`` make an IPv4/IPv6 socket only as TCP (type ``SOCK_STREAM``,
protocol 0 or ``IPPROTO_TCP``), which Landlock then governs; any other internet socket
fails with EACCES. Unix sockets and socketpairs are untouched.

The program is classic BPF over ``struct seccomp_data`` (nr at 0, arch at 4, args from
16, 8 bytes each, little-endian here). A system call of another ABI (i386 through
``int 0x80``, x32) is refused outright, since its numbers differ. Runs in the forked child
after no_new_privs, which an unprivileged filter needs.
"""

from __future__ import annotations

import ctypes
import os
import platform
import socket
import struct

_PR_SET_SECCOMP = 22
_SECCOMP_MODE_FILTER = 2
_RET_ALLOW = 0x7FFF0000
_RET_ERRNO = 0x00050000
_X32_BIT = 0x40000000

_LD_ABS_W = 0x20
_JEQ = 0x15
_JGE = 0x35
_AND = 0x54
_RET = 0x06

#: machine -> (AUDIT_ARCH_*, the socket system call's number)
_ARCHES = {"x86_64": (0xC000003E, 41), "aarch64": (0xC00000B7, 198)}

_libc = ctypes.CDLL(None, use_errno=True)


class _Filter(ctypes.Structure):
    _fields_ = [("len", ctypes.c_ushort), ("filter", ctypes.c_char_p)]


def _op(code: int, k: int, jt: int = 0, jf: int = 0) -> bytes:
    return struct.pack("<HBBI", code, jt, jf, k)


def program(arch: int, socket_nr: int) -> bytes:
    """The filter; jumps count instructions skipped (DENY is 14, ALLOW 15)."""
    return b"".join(
        [
            _op(_LD_ABS_W, 4),  # 0: arch
            _op(_JEQ, arch, 0, 12),  # 1: another ABI -> DENY
            _op(_LD_ABS_W, 0),  # 2: nr
            _op(_JGE, _X32_BIT, 10, 0),  # 3: x32 -> DENY
            _op(_JEQ, socket_nr, 0, 10),  # 4: not socket() -> ALLOW
            _op(_LD_ABS_W, 16),  # 5: domain
            _op(_JEQ, socket.AF_INET, 1, 0),  # 6
            _op(_JEQ, socket.AF_INET6, 0, 7),  # 7: not internet -> ALLOW
            _op(_LD_ABS_W, 24),  # 8: type
            _op(_AND, 0xF),  # 9: without SOCK_NONBLOCK / SOCK_CLOEXEC
            _op(_JEQ, socket.SOCK_STREAM, 0, 3),  # 10: not a stream -> DENY
            _op(_LD_ABS_W, 32),  # 11: protocol
            _op(_JEQ, 0, 2, 0),  # 12: default (TCP) -> ALLOW
            _op(_JEQ, socket.IPPROTO_TCP, 1, 0),  # 13: TCP -> ALLOW, else DENY
            _op(_RET, _RET_ERRNO | 13),  # 14: DENY with EACCES
            _op(_RET, _RET_ALLOW),  # 15: ALLOW
        ]
    )


def deny_non_tcp_internet_sockets() -> None:
    """Install the filter on this process (inherited by everything it starts)."""
    arch = _ARCHES.get(platform.machine())
    if arch is None:
        raise OSError(0, f"no seccomp filter for the {platform.machine()} architecture")
    code = program(*arch)
    prog = _Filter(len(code) // 8, code)
    if _libc.prctl(_PR_SET_SECCOMP, _SECCOMP_MODE_FILTER, ctypes.byref(prog), 0, 0) != 0:
        err = ctypes.get_errno()
        raise OSError(err, f"seccomp: {os.strerror(err)}")
