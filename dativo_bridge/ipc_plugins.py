"""A user's ArrowReader / ArrowWriter run out of process, under its ``sandbox:`` policy.

:func:`sandboxed_class` returns a stand-in class that ``dativo run`` uses like any
in-process reader or writer. Each instance starts a worker (``python -m
dativo_bridge.ipc``) under ``dativo sandbox`` with the plugin's policy; the worker loads
the user's class there and every call crosses the pipes (``dativo_bridge.ipc``), the
batches as Arrow IPC. The class's metadata (name, settings schema, ``is_sorted``) comes
from one short worker run when the stand-in is made, so the settings are validated and
their secrets found before any instance starts.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator, Mapping, Sequence
from typing import IO, TYPE_CHECKING, Any

import pyarrow as pa

from dativo_bridge import errors
from dativo_bridge.errors import ConfigError, DativoError, PluginFailedError
from dativo_bridge.interfaces import ArrowReader, ArrowWriter, CommitResult, StreamInfo
from dativo_bridge.ipc import (
    ProtocolError,
    decode,
    encode,
    receive,
    receive_batches,
    schema_from,
    schema_text,
    send,
    send_batches,
    stream_desc,
)
from dativo_bridge.redact import process_redactor
from dativo_bridge.sandbox.plugins import audit_line, sandboxed_command

if TYPE_CHECKING:
    from dativo_bridge.project import PluginDef

logger = logging.getLogger("dativo.ipc")
audit = logging.getLogger("dativo.audit")


class SandboxedPluginError(DativoError):
    """The user's code failed inside the sandbox (its exception, by name and message)."""


def _raise_failure(plugin: str, reply: Mapping[str, Any]) -> None:
    name = str(reply.get("type") or "Exception")
    message = str(reply.get("message") or "")
    logger.debug("[%s] %s", plugin, reply.get("traceback", ""))
    known = getattr(errors, name, None)
    if (
        reply.get("module") == "dativo_bridge.errors"
        and isinstance(known, type)
        and issubclass(known, DativoError)
    ):
        with contextlib.suppress(TypeError):
            raise known(message)
    raise SandboxedPluginError(f"plugin '{plugin}': {name}: {message}")


class _Worker:
    """One worker process under the sandbox, and the calls to it."""

    def __init__(self, spec: _Spec, *, instantiate: bool = True) -> None:
        from dativo_bridge.foreign import _StderrTail

        self.spec = spec
        command = [sys.executable, "-m", "dativo_bridge.ipc"]
        line = audit_line(spec.plugin, command, spec.policy, spec.project_dir)
        audit.info("%s class=%s", line, spec.reference)
        argv = sandboxed_command(spec.plugin, spec.policy, command, cwd=spec.project_dir)
        self.proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            cwd=spec.project_dir,
            env=self._environment(command),
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        assert self.proc.stderr is not None
        self.inp: IO[bytes] = self.proc.stdout
        self.out: IO[bytes] = self.proc.stdin
        self.stderr = _StderrTail(spec.plugin, self.proc.stderr, process_redactor())
        #: False once a read was abandoned halfway: the pipe is out of step.
        self.usable = True
        try:
            self.described = self.call(
                "load",
                kind=spec.kind,
                reference=spec.reference,
                registered=spec.registered,
                plugin_dirs=list(spec.plugin_dirs),
                project_dir=spec.project_dir,
            )
            audit.info(
                "audit: %s loaded %s from %s sha256=%s",
                spec.plugin,
                spec.reference,
                self.described.get("origin"),
                self.described.get("sha256"),
            )
            if instantiate:
                self.call("new")
        except BaseException:
            self.stop()
            raise

    def _environment(self, command: list[str]) -> dict[str, str]:
        """The caller's for ``dativo sandbox`` to scrub; at ``level: off`` (no sandbox)
        the scrubbed one foreign plugins get (dativo_bridge.foreign)."""
        from dativo_bridge.foreign import plugin_environment

        policy = self.spec.policy
        if policy.get("level") != "off":
            return dict(os.environ)
        named = [str(n) for n in policy.get("env") or []]
        return plugin_environment(self.spec.plugin, command, {}, named)

    def died(self, reason: str | None = None) -> PluginFailedError:
        """The worker is gone (a sandbox breach, a crash) or broke the protocol
        (``reason``): stopped; its exit code and stderr tail."""
        for pipe in (self.out, self.inp):
            with contextlib.suppress(OSError):
                pipe.close()
        try:
            code = self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            # Still running (it sent garbage and went on): stopped, with its tree.
            self.proc.terminate()
            try:
                code = self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                code = self.proc.wait()
        self.usable = False
        tail = self.stderr.text()
        if reason:
            tail = f"{tail}\n(dativo: its worker broke the protocol: {reason})".lstrip()
        return PluginFailedError(self.spec.plugin, code, tail)

    def post(self, op: str, **fields: Any) -> None:
        if not self.usable:
            raise SandboxedPluginError(f"plugin '{self.spec.plugin}': its worker is stopped")
        try:
            send(self.out, {"op": op, **fields})
        except (BrokenPipeError, ValueError):
            raise self.died() from None

    def answer(self) -> dict[str, Any]:
        try:
            reply = receive(self.inp)
        except ProtocolError as exc:
            raise self.died(str(exc)) from None
        if not reply.get("ok", False):
            _raise_failure(self.spec.plugin, reply)
        return reply

    def call(self, op: str, **fields: Any) -> dict[str, Any]:
        self.post(op, **fields)
        return self.answer()

    def write(self, batch: pa.RecordBatch) -> None:
        self.post("write", arrow=True)
        try:
            send_batches(self.out, batch.schema, iter([(batch, None)]))
        except (BrokenPipeError, pa.ArrowException, OSError):
            raise self.died() from None

    def read(self, stream: StreamInfo, bookmark: Any, bookmarks: bool) -> Iterator[Any]:
        """Yield each batch of the read, then each batch's bookmark when asked."""
        self.post(
            "read", stream=stream_desc(stream), bookmark=encode(bookmark), bookmarks=bookmarks
        )
        self.usable = False
        while True:
            try:
                header = receive(self.inp)
            except ProtocolError as exc:
                raise self.died(str(exc)) from None
            if not header.get("ok", True):
                self.usable = True
                _raise_failure(self.spec.plugin, header)
            if header.get("done"):
                self.usable = True
                return
            try:
                for batch, metadata in receive_batches(self.inp):
                    text = metadata.get(b"bookmark")
                    value = decode(json.loads(text)) if text is not None else None
                    yield batch, value
            except (pa.ArrowException, OSError, ValueError) as exc:
                raise self.died(f"{type(exc).__name__}: {exc}") from None

    def close(self) -> int:
        retries = 0
        if self.usable and self.proc.poll() is None:
            try:
                retries = int(self.call("close").get("retries") or 0)
            finally:
                self.stop()
            return retries
        self.stop()
        return retries

    def stop(self) -> None:
        """End the worker: its stdin closed (it exits at the end of its requests), and its
        stdout too, so that a worker still writing a read nobody waits for gets EPIPE."""
        with contextlib.suppress(OSError):
            self.out.close()
        with contextlib.suppress(OSError):
            self.inp.close()
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


class _Spec:
    def __init__(
        self,
        kind: str,
        plugin: str,
        reference: str,
        policy: Mapping[str, Any],
        project_dir: str,
        plugin_dirs: Sequence[str],
    ) -> None:
        self.kind = kind
        self.plugin = plugin
        self.reference = reference
        #: A Dativo plugin's registered name: the worker loads it by its entry point.
        self.registered: str | None = None
        #: The worker that described the class, kept for the first instance (one
        #: sandboxed start less per plugin).
        self.spare: _Worker | None = None
        self.project_dir = project_dir
        self.plugin_dirs = list(plugin_dirs)
        # The worker reads the user's module where load_class may find it.
        readable = policy.get("readable") or []
        readable = [readable] if isinstance(readable, str) else list(readable)
        extra = [os.path.join(project_dir, d) for d in plugin_dirs]
        self.policy = {**policy, "readable": [*readable, *extra]}


def _take(spec: _Spec) -> _Worker:
    """A worker with a fresh instance of the class: the spare one if it is still there."""
    worker, spec.spare = spec.spare, None
    if worker is not None and worker.usable and worker.proc.poll() is None:
        try:
            worker.call("new")
            return worker
        except DativoError:
            worker.stop()
    return _Worker(spec)


_spares: list[_Spec] = []


@atexit.register
def _stop_spares() -> None:
    for spec in _spares:
        worker, spec.spare = spec.spare, None
        if worker is not None:
            worker.stop()


class SandboxedReader(ArrowReader):
    """Stand-in for a user's reader run under a sandbox (made by :func:`sandboxed_class`)."""

    spec: _Spec
    custom_bookmark = False

    def __init__(self) -> None:
        super().__init__()
        self._worker: _Worker | None = None
        self._bookmarks: list[Any] = []
        self.retries = 0

    def _started(self) -> _Worker:
        if self._worker is None:
            self._worker = _take(self.spec)
        return self._worker

    def open(self, config: Mapping[str, Any]) -> None:
        super().open(config)
        self._started().call("open", config=encode(dict(config)))

    def discover(self) -> Sequence[StreamInfo]:
        reply = self._started().call("discover")
        return [
            StreamInfo(
                s["name"],
                schema_from(s["schema"]),
                tuple(s.get("key_properties") or ()),
                s.get("replication_key"),
                s.get("replication_method") or "FULL_TABLE",
            )
            for s in reply["streams"]
        ]

    def estimated_rows(self, stream: StreamInfo, bookmark: Any | None) -> int | None:
        reply = self._started().call(
            "estimated_rows", stream=stream_desc(stream), bookmark=encode(bookmark)
        )
        value = reply.get("value")
        return value if isinstance(value, int) else None

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        self._bookmarks.clear()
        for batch, value in self._started().read(stream, bookmark, self.custom_bookmark):
            if self.custom_bookmark:
                self._bookmarks.append(value)
            yield batch

    def bookmark(self, stream: StreamInfo, batch: pa.RecordBatch, previous: Any | None) -> Any:
        if self.custom_bookmark and self._bookmarks:
            # The user's own bookmark(), computed in the worker for this batch.
            return self._bookmarks.pop(0)
        return super().bookmark(stream, batch, previous)

    def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            self.retries = worker.close()


class SandboxedWriter(ArrowWriter):
    """Stand-in for a user's writer run under a sandbox (made by :func:`sandboxed_class`)."""

    spec: _Spec
    custom_recover = False

    def __init__(self) -> None:
        super().__init__()
        self._worker: _Worker | None = None
        self._publishes_at_end = False
        self.retries = 0

    @property
    def publishes_at_end(self) -> bool:
        return self._publishes_at_end

    def _started(self) -> _Worker:
        if self._worker is None:
            self._worker = _take(self.spec)
        return self._worker

    def open(self, config: Mapping[str, Any], stream: StreamInfo) -> None:
        super().open(config, stream)
        reply = self._started().call(
            "open", config=encode(dict(config)), stream=stream_desc(stream), state_id=self.state_id
        )
        self._publishes_at_end = bool(reply.get("publishes_at_end"))

    def write(self, batch: pa.RecordBatch) -> None:
        self._started().write(batch)

    def commit(self) -> CommitResult:
        reply = self._started().call("commit")
        self._publishes_at_end = bool(reply.get("publishes_at_end"))
        return CommitResult(
            paths=list(reply.get("paths") or []),
            rows=int(reply.get("rows") or 0),
            bytes=int(reply.get("bytes") or 0),
            checksums=dict(reply.get("checksums") or {}),
        )

    def update_schema(self, schema: pa.Schema) -> None:
        self._started().call("update_schema", schema=schema_text(schema))

    def adopt_schema(self, schema: pa.Schema) -> None:
        super().adopt_schema(schema)
        self._started().call("adopt_schema", schema=schema_text(schema))

    def stage_state(self, state: Any) -> None:
        self._started().call("stage_state", state=encode(state))

    @classmethod
    def recover_state(
        cls, config: Mapping[str, Any], state_id: str | None = None
    ) -> dict[str, Any] | None:
        if not cls.custom_recover:
            return None
        worker = _Worker(cls.spec, instantiate=False)
        try:
            value = worker.call("recover_state", config=encode(dict(config)), state_id=state_id)
        finally:
            worker.close()
        recovered = decode(value.get("value"))
        return recovered if isinstance(recovered, dict) else None

    def close(self) -> None:
        worker, self._worker = self._worker, None
        if worker is not None:
            self.retries = worker.close()


def sandboxed_class(
    kind: str,
    plugin: str,
    reference: str,
    policy: Mapping[str, Any],
    *,
    project_dir: str,
    plugin_dirs: Sequence[str] = (),
    registered: str | None = None,
) -> type[ArrowReader] | type[ArrowWriter]:
    """A stand-in for ``reference`` (``package.module:Class``) whose instances run the
    class in a worker under ``policy`` (a meltano.yml ``sandbox:`` mapping). ``kind`` is
    ``reader`` or ``writer``. Loads the class once in a worker, for its metadata.

    Raises:
        ConfigError: the policy is malformed (naming the plugin and key).
        PluginLoadError / PluginFailedError: the worker could not load the class.
    """
    if kind not in ("reader", "writer"):
        raise ConfigError(f"plugin '{plugin}': unknown plugin kind {kind!r}")
    spec = _Spec(kind, plugin, reference, policy, project_dir, plugin_dirs)
    spec.registered = registered
    probe = _Worker(spec, instantiate=False)
    described = probe.described
    spec.spare = probe
    _spares.append(spec)
    base: type[SandboxedReader] | type[SandboxedWriter]
    base = SandboxedReader if kind == "reader" else SandboxedWriter
    attributes: dict[str, Any] = {
        "spec": spec,
        "name": described["name"],
        "config_jsonschema": described["config_jsonschema"],
        "interface_version": described["interface_version"],
        "__module__": __name__,
    }
    if kind == "reader":
        attributes["is_sorted"] = bool(described["is_sorted"])
        attributes["custom_bookmark"] = bool(described["custom_bookmark"])
    else:
        attributes["custom_recover"] = bool(described["custom_recover"])
    made: type[ArrowReader] | type[ArrowWriter] = type(
        f"Sandboxed{reference.rpartition(':')[2]}", (base,), attributes
    )
    return made


def sandboxed_plugin_class(
    plugin: PluginDef, config: dict[str, Any], setting: str, project_dir: str
) -> type[ArrowReader] | type[ArrowWriter]:
    """``dativo run``'s route for a plugin that runs in process (``reader_class`` /
    ``writer_class``, or a Dativo plugin) and has a ``sandbox:`` mapping: the stand-in
    class. Takes ``setting`` and ``plugin_dirs`` out of ``config``, as the in-process
    route does."""
    from dativo_bridge.loading import registered_plugin

    dirs = [str(d) for d in (config.pop("plugin_dirs", None) or [])]
    reference = config.pop(setting, None)
    registered = None
    if not reference:
        for registered in (plugin.executable or "", plugin.name):
            found = registered_plugin(registered)
            if found is not None:
                break
        else:
            raise ConfigError(f"plugin '{plugin.name}': the config needs '{setting}'")
        reference = f"{found.__module__}:{found.__qualname__}"
    return sandboxed_class(
        "reader" if setting == "reader_class" else "writer",
        plugin.name,
        str(reference),
        plugin.sandbox or {},
        project_dir=project_dir,
        plugin_dirs=dirs,
        registered=registered,
    )
