"""Data files written apart from the committing process (a Ray task) and committed later
by one driver, in one snapshot.

Invariant: every file of a run is named after the driver (``dativo-<host>-<pid>-<run>-``,
orphans.py's scheme), so a driver that dies leaves only files the next run on its host can
prove dead and delete (``remove_orphans``); a live driver deletes its own run's files that
its commit did not take (a failed attempt of a task, a task whose worker died mid-write).
A task's sequence numbers start with its partition index and a random part, so two attempts
of one partition never write the same name.
"""

from __future__ import annotations

import json
import logging
import secrets
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pyarrow import fs as pafs
from pyiceberg.exceptions import CommitFailedException, ValidationException
from pyiceberg.io.pyarrow import PyArrowFileIO, parquet_file_to_data_file
from pyiceberg.manifest import DataFile, DataFileContent
from pyiceberg.table import Table, TableProperties

from dativo_bridge.aws import describe_s3_error
from dativo_bridge.errors import WriteError
from dativo_bridge.ownership import HOST_TAG, pid_alive
from dativo_bridge.row_groups import ICEBERG_ROW_GROUP_ROWS as ROW_GROUP_ROWS
from dativo_bridge.row_groups import ROW_GROUP_BYTES, RowGroup
from target_dativo_iceberg.cow import split_partitions
from target_dativo_iceberg.orphans import _NAME, DataFileNames
from target_dativo_iceberg.tables import STATE_ID_PROPERTY, STATE_PROPERTY, STREAM_PROPERTY
from target_dativo_iceberg.types import to_iceberg

logger = logging.getLogger("dativo.iceberg")


@dataclass(frozen=True)
class RunFileNames:
    """The driver's part of every data file name of one run (picklable for tasks)."""

    host: str
    pid: int
    run: str

    @classmethod
    def for_driver(cls) -> RunFileNames:
        names = DataFileNames()
        return cls(names.host, names.pid, names.run)

    @property
    def prefix(self) -> str:
        return f"dativo-{self.host}-{self.pid}-{self.run}-"

    def for_task(self, table: Table, index: int) -> Iterable[str]:
        """Endless locations for the files of one attempt at partition ``index``."""
        attempt = secrets.randbelow(10**6)
        seq = 0
        while True:
            seq += 1
            yield f"{table.location()}/data/{self.prefix}{index:05d}{attempt:06d}{seq:04d}.parquet"


def write_data_files(
    table: Table,
    schema: pa.Schema,
    batches: Iterable[pa.RecordBatch],
    locations: Iterable[str],
    *,
    compression: str,
    target_bytes: int,
    keep: Callable[[pa.RecordBatch], pa.RecordBatch] | None = None,
) -> tuple[list[str], int]:
    """Write ``batches`` (cast to the table's Arrow ``schema``) as Parquet data files.

    One file per partition value when the table is partitioned, else files of about
    ``target_bytes``. ``keep`` filters each converted batch (the rows at the committed
    bookmark the table already holds out: the writer's boundary). On any error the files
    written so far are deleted.

    Returns:
        The files' locations and the rows written.
    """
    files: list[str] = []
    rows = 0
    names = iter(locations)
    writer: pq.ParquetWriter | None = None
    sink: Any = None
    group = RowGroup()  # rows gathered for the open file's next row group

    def write_group() -> None:
        table_ = group.take()
        if table_ is not None and writer is not None:
            writer.write_table(table_, row_group_size=ROW_GROUP_ROWS)

    def finish() -> None:
        nonlocal writer, sink
        write_group()
        group.flushed_bytes = 0
        if writer is not None:
            writer.close()
            sink.close()
            writer, sink = None, None

    partitioned = bool(table.spec().fields)
    try:
        for batch in batches:
            batch = to_iceberg(batch.select(schema.names), schema)
            if keep is not None:
                batch = keep(batch)
            if batch.num_rows == 0:
                continue
            parts = (
                [
                    b
                    for p in split_partitions(table, pa.Table.from_batches([batch]))
                    for b in p.combine_chunks().to_batches()
                ]
                if partitioned
                else [batch]
            )
            for part in parts:
                if partitioned:
                    finish()
                if writer is None:
                    location = next(names)
                    sink = table.io.new_output(location).create(overwrite=False)
                    writer = pq.ParquetWriter(sink, schema, compression=compression)
                    files.append(location)
                if partitioned:
                    writer.write_batch(part)
                    rows += part.num_rows
                    finish()
                    continue
                # Unpartitioned: rows gathered into row groups (dativo_bridge.row_groups).
                group.add(part)
                rows += part.num_rows
                if (
                    group.rows >= ROW_GROUP_ROWS
                    or group.bytes >= ROW_GROUP_BYTES
                    or group.fills(sink.tell(), target_bytes)
                ):
                    write_group()
                    if sink.tell() >= target_bytes:
                        finish()
        finish()
    except BaseException:
        finish_quietly(writer, sink)
        delete_files(table, files)
        raise
    return files, rows


def finish_quietly(writer: pq.ParquetWriter | None, sink: Any) -> None:
    for closable in (writer, sink):
        if closable is not None:
            try:
                closable.close()
            except Exception:  # the file is deleted next; its close error adds nothing
                logger.debug("closing a failed data file failed", exc_info=True)


def delete_files(table: Table, files: Iterable[str]) -> None:
    for location in files:
        try:
            table.io.delete(location)
        except FileNotFoundError:
            continue
        except Exception:
            logger.warning("could not delete uncommitted data file %s", location)


def run_files(table: Table, names: RunFileNames) -> list[str]:
    """Locations of the files in the table's ``data/`` that carry this run's names."""
    io = table.io
    if not isinstance(io, PyArrowFileIO):
        return []
    data = f"{table.location()}/data"
    scheme, netloc, path = io.parse_location(data, io.properties)
    filesystem = io.fs_by_scheme(scheme, netloc)
    selector = pafs.FileSelector(path, recursive=False, allow_not_found=True)
    return [
        f"{data}/{info.base_name}"
        for info in filesystem.get_file_info(selector)
        if info.type == pafs.FileType.File and info.base_name.startswith(names.prefix)
    ]


def remove_uncommitted(table: Table, names: RunFileNames, committed: Sequence[str]) -> list[str]:
    """Delete this run's files that ``committed`` does not hold, and abort this run's
    unfinished multipart uploads (a task killed mid-file leaves one, billed until a bucket
    lifecycle rule aborts it); returns the files deleted. Call it once no task of the run
    is writing any more."""
    kept = {location.rsplit("/", 1)[-1] for location in committed}
    extra = [f for f in run_files(table, names) if f.rsplit("/", 1)[-1] not in kept]
    delete_files(table, extra)
    if extra:
        logger.info("table %s: deleted %d uncommitted data file(s)", table.name(), len(extra))
    abort_uploads(table, lambda name: name.startswith(names.prefix))
    return extra


def abort_dead_uploads(table: Table) -> int:
    """Abort the unfinished multipart uploads in the table's ``data/`` of writers of this
    host that are gone (orphans.py's names and rule: ``dativo-<host>-<pid>-...`` with
    ``<host>`` this host and ``<pid>`` not running); an upload of a live writer, or of
    another host, is left alone. Returns how many were aborted."""
    return abort_uploads(table, dead_writers_name)


def dead_writers_name(name: str) -> bool:
    """True for a data file name of a writer of this host that is gone (orphans.py)."""
    match = _NAME.match(name)
    return match is not None and match.group(1) == HOST_TAG and not pid_alive(int(match[2]))


def abort_uploads(table: Table, chosen: Callable[[str], bool]) -> int:
    """Abort the unfinished multipart uploads directly in the table's ``data/`` (on S3)
    whose file name ``chosen`` accepts; a failure is logged, not raised (the uploads are
    invisible to readers). Returns how many were aborted."""
    data = f"{table.location()}/data/"
    if not data.startswith(("s3://", "s3a://", "s3n://")):
        return 0
    bucket, _, prefix = data.split("://", 1)[1].partition("/")
    aborted = 0
    client: Any = None
    try:
        client = _s3_client(table.io.properties)
        pages = client.get_paginator("list_multipart_uploads").paginate(
            Bucket=bucket, Prefix=prefix
        )
        for page in pages:
            for upload in page.get("Uploads") or []:
                key = str(upload["Key"])
                name = key[len(prefix) :]
                # The prefix is checked here too: some S3 services ignore it.
                if not key.startswith(prefix) or "/" in name or not chosen(name):
                    continue
                client.abort_multipart_upload(Bucket=bucket, Key=key, UploadId=upload["UploadId"])
                aborted += 1
    except Exception as exc:
        logger.warning(
            "table %s: could not abort unfinished uploads under s3://%s/%s: %s",
            table.name(),
            bucket,
            prefix,
            describe_s3_error(exc, client, "list_multipart_uploads"),
        )
    if aborted:
        logger.info(
            "table %s: aborted %d unfinished multipart upload(s) of data files",
            table.name(),
            aborted,
        )
    return aborted


def _s3_client(properties: Mapping[str, Any]) -> Any:
    """A boto3 S3 client with the FileIO's settings (pyiceberg's ``s3.*`` properties)."""
    import boto3

    options = {
        "endpoint_url": properties.get("s3.endpoint"),
        "aws_access_key_id": properties.get("s3.access-key-id"),
        "aws_secret_access_key": properties.get("s3.secret-access-key"),
        "aws_session_token": properties.get("s3.session-token"),
        "region_name": properties.get("s3.region") or properties.get("client.region"),
    }
    return boto3.client("s3", **{k: v for k, v in options.items() if v})


def snapshot_properties(stream: str, state_id: str | None, state: Any) -> dict[str, str]:
    """The summary a commit carries: the stream, the pipeline's state id, the STATE (the
    same keys IcebergWriter commits, read back by tables.committed_state)."""
    props = {
        STREAM_PROPERTY: stream,
        STATE_PROPERTY: json.dumps(state, default=str, sort_keys=True),
    }
    if state_id is not None:
        props[STATE_ID_PROPERTY] = state_id
    return props


def data_file(table: Table, location: str) -> DataFile:
    """The metadata of one written file (statistics, partition) as its commit needs it:
    made where the file was written, so the driver does not read its footer again."""
    return parquet_file_to_data_file(table.io, table.metadata, location)


def commit_files(
    load: Callable[[], Table],
    files: Sequence[DataFile],
    props: dict[str, str],
    *,
    retries: int,
    replace: bool = False,
) -> Table:
    """Append ``files`` to the table in one snapshot with ``props`` (retried on conflicts),
    as ``add_files`` would, from metadata made by the writers.

    Args:
        load: Loads the table from its catalog (again after a conflict).
        replace: One OVERWRITE snapshot instead: every data file of the table's current
            snapshot out, ``files`` in (a full refresh; readers see the old rows or the
            new ones, never both). Replaces even with no ``files`` (an empty source).

    Raises:
        WriteError: The commit kept conflicting.
    """
    delay = 0.1
    for attempt in range(retries + 1):
        table = load()
        try:
            with table.transaction() as tx:
                if tx.table_metadata.name_mapping() is None:
                    mapping = tx.table_metadata.schema().name_mapping.model_dump_json()
                    tx.set_properties({TableProperties.DEFAULT_NAME_MAPPING: mapping})
                update = tx.update_snapshot(snapshot_properties=props)
                with update.overwrite() if replace else update.fast_append() as snapshot:
                    if replace:
                        for old in _current_data_files(table):
                            snapshot.delete_data_file(old)
                    for file in files:
                        snapshot.append_data_file(file)
            return table
        except (CommitFailedException, ValidationException) as exc:
            if attempt == retries:
                raise WriteError(
                    f"commit to {table.name()} failed after {retries + 1} attempts: {exc}"
                ) from exc
            logger.warning("commit to %s conflicted (%s); retrying", table.name(), exc)
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise AssertionError("unreachable")


def _current_data_files(table: Table) -> list[DataFile]:
    """The data files of the table's current snapshot (none for a new table)."""
    current = table.current_snapshot()
    if current is None:
        return []
    return [
        entry.data_file
        for manifest in current.manifests(table.io)
        for entry in manifest.fetch_manifest_entry(table.io, discard_deleted=True)
        if entry.data_file.content == DataFileContent.DATA
    ]
