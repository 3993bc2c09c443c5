"""What a killed ParquetWriter leaves behind, and how the next open proves it may remove it.

Every name a writer gives to unfinished work carries its run id ``<8 hex>-<pid>-<host>``,
where ``<host>`` tags the machine and pid namespace the writer ran in. A leftover is
removed only when its writer is provably gone: same host tag and the pid is not running.
On S3, where another machine may be writing, an unfinished multipart upload with another
host tag is aborted only once it is older than :data:`STALE_UPLOAD_SECONDS`.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import shutil
import uuid
from pathlib import Path

from dativo_bridge.ownership import HOST_TAG, pid_alive, writer_gone

logger = logging.getLogger("dativo.parquet")

#: Unfinished uploads from other machines are aborted once they are this old (a file
#: open longer than a day is not a live writer's; S3 lifecycle rules are still advised).
STALE_UPLOAD_SECONDS = 24 * 3600

#: ``.part-<8 hex>-<pid>[-<host>]-<seq>.parquet.inprogress`` (older runs had no host tag).
IN_PROGRESS = re.compile(
    r"\.part-[0-9a-f]{8}-(?P<pid>\d+)(?:-(?P<host>[0-9a-f]{8}))?-\d{5,}\.parquet\.inprogress"
)


def new_run_id() -> str:
    """A fresh run id for this process."""
    return f"{uuid.uuid4().hex[:8]}-{os.getpid()}-{HOST_TAG}"


def remove_orphans(root: Path) -> None:
    """Delete in-progress files left by writers that died (their process is gone)."""
    for temp in root.rglob(".part-*.parquet.inprogress"):
        match = IN_PROGRESS.fullmatch(temp.name)
        if match and writer_gone(match["pid"], match["host"]):
            logger.info("removing %s, left by a writer that did not finish", temp)
            temp.unlink(missing_ok=True)


def staged_name(folder: str, run: str) -> str:
    """The hidden sibling an overwrite run builds the stream's new folder in."""
    return f".{folder}.overwrite-{run}"


def replaced_name(folder: str, run: str) -> str:
    """Where the two-rename fallback parks the old folder (target_dativo_parquet.swap)."""
    return f".{folder}.replaced-{run}"


def recover_folders(parent: Path, folder: str) -> None:
    """Clean up after overwrite runs of the stream ``folder`` that were killed.

    A ``.replaced-`` folder of a dead writer with no live folder is the old data of a
    fallback replacement killed between its two renames: it is put back (the run's STATE
    was never released). Every other dead writer's staged or replaced folder is removed.
    """
    pattern = re.compile(
        re.escape(f".{folder}.")
        + r"(?P<kind>overwrite|replaced)-[0-9a-f]{8}-(?P<pid>\d+)-(?P<host>[0-9a-f]{8})"
    )
    found = []
    for entry in parent.iterdir() if parent.is_dir() else []:
        match = pattern.fullmatch(entry.name)
        if match and entry.is_dir() and writer_gone(match["pid"], match["host"]):
            found.append((match["kind"] != "replaced", entry))
    live = parent / folder
    for _staged, entry in sorted(found):
        if not _staged and not live.exists():
            logger.info("restoring %s from %s (an overwrite was interrupted)", live, entry)
            os.rename(entry, live)
        else:
            logger.info("removing %s, left by an overwrite that did not finish", entry)
            shutil.rmtree(entry, ignore_errors=True)


def abandoned_upload(key: str, initiated: dt.datetime, now: dt.datetime) -> bool:
    """True for an unfinished multipart upload of a ParquetWriter's in-progress file whose
    writer is gone: same host tag and dead pid, or older than STALE_UPLOAD_SECONDS."""
    match = IN_PROGRESS.fullmatch(key.rsplit("/", 1)[-1])
    if match is None:
        return False
    if match["host"] == HOST_TAG:
        return not pid_alive(int(match["pid"]))
    return (now - initiated).total_seconds() > STALE_UPLOAD_SECONDS
