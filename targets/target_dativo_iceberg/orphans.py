"""Data file names that prove who wrote a file, and removal of files dead writers left.

Invariant: a file is deleted only when all of these hold: its name is one this module
gives (``dativo-<host>-<pid>-<run>-<seq>.parquet``, directly in the table's ``data/``
directory), ``<host>`` is this host, process ``<pid>`` is gone, and no snapshot of the
table references it. The snapshots are read after the writer is known to be dead, so a
file that writer committed just before it died is always seen as referenced.
"""

from __future__ import annotations

import logging
import os
import re
import uuid
from collections.abc import Callable

from pyarrow import fs as pafs
from pyiceberg.io.pyarrow import PyArrowFileIO
from pyiceberg.table import Table

from dativo_bridge.ownership import HOST_TAG, pid_alive

logger = logging.getLogger("dativo.iceberg")

_NAME = re.compile(r"^dativo-([0-9a-f]{8})-(\d+)-([0-9a-f]{8})-\d{5,}\.parquet$")


class DataFileNames:
    """Names for one writer's data files: host, pid and a run id, then a sequence."""

    def __init__(self) -> None:
        self.host = HOST_TAG
        self.pid = os.getpid()
        self.run = uuid.uuid4().hex[:8]
        self._seq = 0

    def next(self, table: Table) -> str:
        """The location of this writer's next data file in ``table``."""
        self._seq += 1
        name = f"dativo-{self.host}-{self.pid}-{self.run}-{self._seq:05d}.parquet"
        return f"{table.location()}/data/{name}"


def _dead_writers_files(table: Table) -> list[str]:
    """Locations of files in ``data/`` named by a writer of this host that is gone."""
    io = table.io
    if not isinstance(io, PyArrowFileIO):
        logger.debug("table %s: FileIO %s cannot list files", table.name(), type(io).__name__)
        return []
    data = f"{table.location()}/data"
    scheme, netloc, path = io.parse_location(data, io.properties)
    filesystem = io.fs_by_scheme(scheme, netloc)
    selector = pafs.FileSelector(path, recursive=False, allow_not_found=True)
    host = HOST_TAG
    found = []
    for info in filesystem.get_file_info(selector):
        name = info.base_name
        match = _NAME.match(name)
        if info.type != pafs.FileType.File or match is None or match.group(1) != host:
            continue
        if not pid_alive(int(match.group(2))):
            found.append(f"{data}/{name}")
    return found


def remove_orphans(load: Callable[[], Table]) -> list[str]:
    """Delete data files of a table that a dead writer of this host left unreferenced.

    Args:
        load: Loads the table from its catalog. Called once to list files and, when there
            are candidates, again afterwards: that later metadata says what is referenced.

    Returns:
        The locations deleted.
    """
    table = load()
    candidates = _dead_writers_files(table)
    if not candidates:
        return []
    table = load()
    referenced = {
        os.path.basename(str(p)) for p in table.inspect.all_files().column("file_path").to_pylist()
    }
    removed = []
    for location in candidates:
        if os.path.basename(location) in referenced:
            continue
        try:
            table.io.delete(location)
        except FileNotFoundError:
            continue
        except OSError as exc:
            logger.warning("could not delete orphan data file %s: %s", location, exc)
            continue
        removed.append(location)
    if removed:
        logger.info(
            "table %s: deleted %d data file(s) left uncommitted by writers that died",
            table.name(),
            len(removed),
        )
    return removed
