"""Replacing a stream's folder with another in one step (``load_method: overwrite``).

Invariant: at every moment the stream's folder name holds either the complete old folder
or the complete new one. Linux swaps the two with ``renameat2(RENAME_EXCHANGE)``, one
system call; where that is unavailable (another OS, a filesystem without it) the fallback
is two renames, live -> ``.<name>.replaced-<run>`` then staged -> live, during which the
folder name is briefly absent; a kill between them is rolled back by the next open
(:func:`target_dativo_parquet.leftovers.recover_folders`).
"""

from __future__ import annotations

import ctypes
import ctypes.util
import errno
import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

logger = logging.getLogger("dativo.parquet")

_AT_FDCWD = -100
_RENAME_EXCHANGE = 2
_UNSUPPORTED = {errno.ENOSYS, errno.EINVAL, errno.ENOTSUP, errno.EOPNOTSUPP}


def _load_renameat2() -> Callable[..., int] | None:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or None, use_errno=True)
        fn: Any = libc.renameat2  # glibc 2.28+
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn  # type: ignore[no-any-return]


_renameat2 = _load_renameat2()


def exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths atomically; False when the system or filesystem cannot.

    Raises:
        OSError: The swap was possible but failed (missing path, permissions...).
    """
    if _renameat2 is None:
        return False
    if _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE) == 0:
        return True
    code = ctypes.get_errno()
    if code in _UNSUPPORTED:
        return False
    raise OSError(code, os.strerror(code), str(a), None, str(b))


def sync_dir(path: Path) -> None:
    """fsync a directory, so the renames in it survive a power loss."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def replace_dir(staged: Path, live: Path, replaced: Path) -> None:
    """Make ``staged`` the folder ``live`` in one step, then remove the old folder.

    Args:
        staged: The complete new folder (a hidden sibling of ``live``).
        live: The folder readers read.
        replaced: Where the fallback parks the old folder between its two renames.
    """
    for folder, _subdirs, _files in os.walk(staged):
        sync_dir(Path(folder))
    if not live.exists():
        os.rename(staged, live)
        old = None
    elif exchange(staged, live):
        old = staged  # now holds the old folder
    else:
        logger.info("no atomic directory exchange here: replacing %s with two renames", live)
        os.rename(live, replaced)
        os.rename(staged, live)
        old = replaced
    sync_dir(live.parent)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
