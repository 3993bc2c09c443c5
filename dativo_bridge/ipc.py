"""The pipe protocol between ``dativo run`` and a user's ArrowReader / ArrowWriter that
runs out of process (under ``dativo sandbox``), and the worker that runs the class.

Both directions carry *frames*: a 4-byte big-endian length and a JSON header. A header
with ``"arrow": true`` is followed on the same pipe by one Arrow IPC stream (a schema,
record batches, the end-of-stream marker), so batches cross as Arrow buffers, not JSON.
The parent writes requests to the worker's stdin and reads replies from its stdout; the
worker points its own fd 1 at stderr, so what the user's code prints cannot corrupt the
protocol. Nothing is unpickled: values are JSON with tagged dates, times, decimals and
bytes (:func:`encode` / :func:`decode`), schemas are Arrow IPC.

Run as ``python -m dativo_bridge.ipc``; see ``dativo_bridge.ipc_plugins`` for the parent.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import os
import struct
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import pyarrow as pa

_LENGTH = struct.Struct(">I")
#: The largest header accepted (a discover reply with many streams stays far below; a
#: hostile worker must not make the run allocate what it likes).
MAX_HEADER = 32 * 1024 * 1024


class ProtocolError(Exception):
    """The other side closed the pipe or sent something that is not a frame."""


def encode(value: Any) -> Any:
    """``value`` as JSON-safe data; dates, times, decimals and bytes are tagged."""
    if isinstance(value, dt.datetime):
        return {"$datetime": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$date": value.isoformat()}
    if isinstance(value, dt.time):
        return {"$time": value.isoformat()}
    if isinstance(value, decimal.Decimal):
        return {"$decimal": str(value)}
    if isinstance(value, bytes | bytearray | memoryview):
        return {"$bytes": base64.b64encode(bytes(value)).decode()}
    if isinstance(value, dict):
        return {str(k): encode(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    return value


_DECODERS = {
    "$datetime": dt.datetime.fromisoformat,
    "$date": dt.date.fromisoformat,
    "$time": dt.time.fromisoformat,
    "$decimal": decimal.Decimal,
    "$bytes": base64.b64decode,
}


def decode(value: Any) -> Any:
    """The inverse of :func:`encode`."""
    if isinstance(value, dict):
        if len(value) == 1:
            ((tag, text),) = value.items()
            if tag in _DECODERS and isinstance(text, str):
                return _DECODERS[tag](text)
        return {k: decode(v) for k, v in value.items()}
    if isinstance(value, list):
        return [decode(v) for v in value]
    return value


def schema_text(schema: pa.Schema) -> str:
    return base64.b64encode(schema.serialize().to_pybytes()).decode()


def schema_from(text: str) -> pa.Schema:
    return pa.ipc.read_schema(pa.py_buffer(base64.b64decode(text)))


def send(out: IO[bytes], header: dict[str, Any], *, flush: bool = True) -> None:
    data = json.dumps(header, separators=(",", ":")).encode()
    out.write(_LENGTH.pack(len(data)) + data)
    if flush:
        out.flush()


def receive(inp: IO[bytes]) -> dict[str, Any]:
    """The next header; ProtocolError at end of file or on garbage."""
    head = inp.read(_LENGTH.size)
    if len(head) < _LENGTH.size:
        raise ProtocolError("the other side closed the pipe")
    (length,) = _LENGTH.unpack(head)
    if length > MAX_HEADER:
        raise ProtocolError(f"a frame header of {length} bytes")
    data = inp.read(length)
    if len(data) < length:
        raise ProtocolError("the other side closed the pipe inside a frame")
    try:
        header = json.loads(data)
    except ValueError as exc:
        raise ProtocolError(f"a frame that is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("a frame that is not a JSON object")
    return header


def send_batches(
    out: IO[bytes],
    schema: pa.Schema,
    batches: Iterator[tuple[pa.RecordBatch, dict[str, str] | None]],
) -> None:
    """One Arrow IPC stream of ``batches`` (each with optional custom metadata)."""
    with pa.ipc.new_stream(out, schema) as writer:
        for batch, metadata in batches:
            writer.write_batch(batch, custom_metadata=metadata)
    out.flush()


def receive_batches(inp: IO[bytes]) -> Iterator[tuple[pa.RecordBatch, dict[bytes, bytes]]]:
    """The batches of the Arrow IPC stream that comes next, with their custom metadata.

    Each batch is fully validated (offsets, lengths, UTF-8): the other side may be a
    hostile plugin, and a malformed batch must be an error, not memory read out of
    bounds. It costs about 10 ms of CPU per million rows."""
    reader = pa.ipc.open_stream(inp)
    while True:
        try:
            batch, metadata = reader.read_next_batch_with_custom_metadata()
        except StopIteration:
            return
        batch.validate(full=True)
        yield batch, dict(metadata) if metadata is not None else {}


def failure(exc: BaseException) -> dict[str, Any]:
    """The reply for an exception raised by the user's code."""
    return {
        "ok": False,
        "type": type(exc).__name__,
        "module": type(exc).__module__,
        "message": str(exc),
        "traceback": "".join(traceback.format_exception(exc)),
    }


# --- the worker -----------------------------------------------------------------------


def _stream(desc: dict[str, Any]) -> Any:
    from dativo_bridge.interfaces import StreamInfo

    return StreamInfo(
        desc["name"],
        schema_from(desc["schema"]),
        tuple(desc.get("key_properties") or ()),
        desc.get("replication_key"),
        desc.get("replication_method") or "FULL_TABLE",
    )


def stream_desc(stream: Any) -> dict[str, Any]:
    return {
        "name": stream.name,
        "schema": schema_text(stream.schema),
        "key_properties": list(stream.key_properties),
        "replication_key": stream.replication_key,
        "replication_method": stream.replication_method,
    }


class _Worker:
    def __init__(self, inp: IO[bytes], out: IO[bytes]) -> None:
        self.inp = inp
        self.out = out
        self.cls: Any = None
        self.plugin: Any = None
        #: A write's error, reported at the next request that waits for a reply.
        self.deferred: dict[str, Any] | None = None

    def reply(self, header: dict[str, Any]) -> None:
        if self.deferred is not None:
            header, self.deferred = self.deferred, None
        send(self.out, header)

    def load(self, request: dict[str, Any]) -> dict[str, Any]:
        from dativo_bridge.interfaces import ArrowReader, ArrowWriter
        from dativo_bridge.loading import load_class, registered_plugin, sha256_of

        base = ArrowReader if request["kind"] == "reader" else ArrowWriter
        registered = request.get("registered")
        found = registered_plugin(str(registered)) if registered else None
        if isinstance(found, type) and issubclass(found, base):
            self.cls = found  # a Dativo plugin, by its entry point (as in process)
        else:
            self.cls = load_class(
                request["reference"],
                base,
                allowed_dirs=request.get("plugin_dirs") or [],
                project_dir=request.get("project_dir") or ".",
            )
        cls = self.cls
        origin = str(getattr(sys.modules.get(cls.__module__), "__file__", "") or "?")
        return {
            "ok": True,
            "origin": origin,
            "sha256": sha256_of(Path(origin)) if origin != "?" else "?",
            "name": cls.name,
            "config_jsonschema": cls.config_jsonschema,
            "is_sorted": bool(getattr(cls, "is_sorted", False)),
            "interface_version": cls.interface_version,
            "custom_bookmark": base is ArrowReader and cls.bookmark is not ArrowReader.bookmark,
            "custom_recover": base is ArrowWriter
            and getattr(cls.recover_state, "__func__", None)
            is not getattr(ArrowWriter.recover_state, "__func__", None),
        }

    def read(self, request: dict[str, Any]) -> None:
        stream = _stream(request["stream"])
        bookmark = decode(request.get("bookmark"))
        with_bookmarks = bool(request.get("bookmarks"))
        value = bookmark
        try:
            batches = iter(self.plugin.read(stream, bookmark))
            pending = next(batches, None)
            while pending is not None:
                schema = pending.schema
                send(self.out, {"arrow": True}, flush=False)

                def same_schema(
                    schema: pa.Schema = schema,
                ) -> Iterator[tuple[pa.RecordBatch, dict[str, str] | None]]:
                    nonlocal pending, value
                    while pending is not None and pending.schema == schema:
                        metadata = None
                        if with_bookmarks:
                            value = self.plugin.bookmark(stream, pending, value)
                            metadata = {"bookmark": json.dumps(encode(value))}
                        yield pending, metadata
                        pending = next(batches, None)

                send_batches(self.out, schema, same_schema())
        except Exception as exc:  # the user's read failed: end the read with its error
            send(self.out, failure(exc))
            return
        send(self.out, {"ok": True, "done": True})

    def handle(self, request: dict[str, Any]) -> bool:
        """Serve one request; False once the worker should exit."""
        op = request.get("op")
        if op == "write":
            batches = [batch for batch, _ in receive_batches(self.inp)]
            if self.deferred is None:
                try:
                    for batch in batches:
                        self.plugin.write(batch)
                except Exception as exc:
                    self.deferred = failure(exc)
            return True
        if op == "read":
            if self.deferred is not None:
                self.reply({})
                return True
            self.read(request)
            return True
        try:
            answer = self.serve(op, request)
        except Exception as exc:
            answer = failure(exc)
        self.reply(answer)
        return op != "close"

    def serve(self, op: Any, request: dict[str, Any]) -> dict[str, Any]:
        plugin = self.plugin
        if op == "load":
            return self.load(request)
        if op == "new":
            self.plugin = self.cls()
            return {"ok": True}
        if op == "open":
            config = decode(request.get("config") or {})
            if "stream" in request:
                plugin.state_id = request.get("state_id")
                plugin.open(config, _stream(request["stream"]))
                return {"ok": True, "publishes_at_end": bool(plugin.publishes_at_end)}
            plugin.open(config)
            return {"ok": True}
        if op == "discover":
            return {"ok": True, "streams": [stream_desc(s) for s in plugin.discover()]}
        if op == "estimated_rows":
            stream = _stream(request["stream"])
            rows = plugin.estimated_rows(stream, decode(request.get("bookmark")))
            return {"ok": True, "value": rows if isinstance(rows, int) else None}
        if op == "update_schema":
            plugin.update_schema(schema_from(request["schema"]))
            return {"ok": True}
        if op == "adopt_schema":
            plugin.adopt_schema(schema_from(request["schema"]))
            return {"ok": True}
        if op == "stage_state":
            plugin.stage_state(decode(request.get("state")))
            return {"ok": True}
        if op == "commit":
            result = plugin.commit()
            return {
                "ok": True,
                "paths": list(result.paths),
                "rows": int(result.rows),
                "bytes": int(result.bytes),
                "checksums": dict(result.checksums),
                "publishes_at_end": bool(plugin.publishes_at_end),
            }
        if op == "recover_state":
            value = self.cls.recover_state(
                decode(request.get("config") or {}), request.get("state_id")
            )
            return {"ok": True, "value": encode(value)}
        if op == "close":
            if plugin is not None:
                plugin.close()
            return {"ok": True, "retries": int(getattr(plugin, "retries", 0) or 0)}
        raise ProtocolError(f"unknown request {op!r}")


def main() -> None:
    """The worker: requests on stdin, replies on stdout (moved off fd 0 and 1 first)."""
    inp = os.fdopen(os.dup(0), "rb")
    out = os.fdopen(os.dup(1), "wb")
    null = os.open(os.devnull, os.O_RDONLY)
    os.dup2(null, 0)
    os.close(null)
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    worker = _Worker(inp, out)
    try:
        while worker.handle(receive(inp)):
            pass
    except ProtocolError:
        sys.exit(0 if worker.plugin is None else 1)
    except BrokenPipeError:
        sys.exit(1)


if __name__ == "__main__":
    main()
