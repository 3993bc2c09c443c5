"""Meltano's state store, read and written the way Meltano does, so that `dativo run` and
`meltano run` of the same pair (state id ``<environment>:<tap>-to-<target>``) continue
from each other's state.

Meltano keeps two values per state id, each ``{"singer_state": {...}}``: the *completed*
state and a *partial* one. A reader merges the partial over the completed (objects key by
key at every depth, any other value replaced). `meltano run` stores every STATE its target
prints as the completed state and empties the partial one, also when the run fails later
(a target prints a STATE only after the rows before it are durable); `--full-refresh` and
`--state-strategy merge` store partial states instead. Dativo stores its STATE the way a
plain `meltano run` does: as the completed state, the partial one emptied. Beside
``singer_state`` it keeps the digest of a state that holds the marker of an unfinished
run (:data:`~dativo_bridge.state.RUN_KEY`): the marker counts only while the state is
still the one dativo saved, not once a tap that echoes its input state carried it on.

Where Meltano keeps it (its ``state_backend.uri`` setting):

- ``systemdb`` (the default): the table ``state`` (``state_id``, ``partial_state``,
  ``completed_state`` as JSON text, ``updated_at``) of the system database,
  ``database_uri``, by default SQLite at ``.meltano/meltano.db``.
- ``file://<directory>``: ``<directory>/<state id>/state.json`` holding
  ``{"completed": ..., "partial": ...}``. A writer holds ``<directory>/<state id>/lock``
  (the UTC time it was taken, in seconds) while it writes; a lock older than
  ``state_backend.lock_timeout_seconds`` is stale.
- ``s3://[key:secret@]bucket/prefix``: the same layout, as objects under the prefix.

When Meltano is installed for the project (``.venv/bin/meltano`` or ``meltano`` on
PATH), its own `meltano state get/set/clear` reads and writes the system database and the
cloud backends. The ``file://`` backend is always written here, with Meltano's lock,
because Meltano rewrites ``state.json`` in place, and a crash mid-write would leave half a
file; here a new value replaces the old one in one rename. Without Meltano, the system
database (SQLite) and S3 are written here too, each in one atomic step.
"""

from __future__ import annotations

import abc
import contextlib
import copy
import datetime as dt
import hashlib
import json
import logging
import os
import shutil
import sqlite3
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from dativo_bridge.errors import ConfigError, DativoError
from dativo_bridge.project import Project, expand_env
from dativo_bridge.state import RUN_KEY, STATE_STORE_MODES, LocalStateStore, StateStore

logger = logging.getLogger(__name__)

#: The key of the Singer state inside each of Meltano's two values.
SINGER_STATE = "singer_state"
SYSTEMDB = "systemdb"
#: ``--state-store`` values: pick by the project, or force one.
MODES = STATE_STORE_MODES


class StateStoreError(DativoError):
    """Meltano's state store could not be read or written."""


def merged(completed: Mapping[str, Any] | None, partial: Mapping[str, Any] | None) -> dict:
    """Meltano's view of a state id: ``partial`` merged over ``completed``, objects key by
    key at every depth, any other value (lists included) replaced."""
    out: dict[str, Any] = copy.deepcopy(dict(completed or {}))

    def into(dest: dict[str, Any], src: Mapping[str, Any]) -> None:
        for key, value in src.items():
            if isinstance(value, Mapping):
                node = dest.get(key)
                if not isinstance(node, dict):
                    node = dest[key] = {}
                into(node, value)
            else:
                dest[key] = copy.deepcopy(value)

    into(out, partial or {})
    return out


def _dumps(value: Any) -> str:
    return json.dumps(value, default=str)


def _digest(value: Any) -> str:
    text = json.dumps(json.loads(_dumps(value)), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()


def _run_mark(stored: Mapping[str, Any]) -> str | None:
    """The digest of the state an interrupted dativo run saved, kept beside Meltano's
    ``singer_state`` (Meltano replaces it with the next state it stores)."""
    mark = stored.get(RUN_KEY)
    return str(mark.get("state_sha256")) if isinstance(mark, Mapping) else None


class MeltanoStateStore(StateStore):
    """The Singer state of a state id as Meltano keeps it.

    ``legacy`` is dativo's local store of the same project: a state id Meltano has no
    state for continues from it once (so adopting Meltano's store re-reads nothing), and
    the local copy is removed once Meltano's store holds the state.
    """

    kind = "meltano"
    #: Meltano's name of the backend (``systemdb``, ``file``, ``s3``).
    backend = ""

    def __init__(self, legacy: LocalStateStore | None = None) -> None:
        self.legacy = legacy

    @abc.abstractmethod
    def read(self, state_id: str) -> dict[str, Any] | None:
        """Meltano's merged value of ``state_id`` (``{"singer_state": ...}``), or None."""

    @abc.abstractmethod
    def write(self, state_id: str, completed: dict[str, Any]) -> None:
        """Store ``completed`` as the completed state, the partial one emptied, atomically."""

    @abc.abstractmethod
    def delete(self, state_id: str) -> None:
        """Remove ``state_id`` from the store."""

    def get(self, state_id: str) -> dict[str, Any] | None:
        stored = self.read(state_id) or {}
        value = stored.get(SINGER_STATE)
        if isinstance(value, dict) and value:
            if RUN_KEY in value and _run_mark(stored) != _digest(value):
                # A tap that echoes the whole state it was given (pipelinewise taps do)
                # carries the marker of an interrupted dativo run into a later run's state:
                # the marker holds only while the state is the one that dativo run saved.
                logger.info(
                    "state id '%s' was changed by another run since the interrupted dativo "
                    "run that marked it: reading every selected stream from its bookmark",
                    state_id,
                )
                value = {k: v for k, v in value.items() if k != RUN_KEY}
            return value
        if self.legacy is not None:
            old = self.legacy.get(state_id)
            if old:
                logger.info(
                    "no Meltano state for '%s' yet: continuing from dativo's local state in "
                    "%s (it moves to Meltano's store with the first state this run saves)",
                    state_id,
                    self.legacy.path(state_id),
                )
                return old
        return None

    def put(self, state_id: str, value: dict[str, Any]) -> None:
        if not value:
            # Meltano does not store an empty state either: it would erase the bookmarks.
            return
        payload: dict[str, Any] = {SINGER_STATE: value}
        if RUN_KEY in value:
            payload[RUN_KEY] = {"state_sha256": _digest(value)}
        self.write(state_id, payload)
        if self.legacy is not None:
            self.legacy.clear(state_id)

    def clear(self, state_id: str) -> None:
        self.delete(state_id)
        if self.legacy is not None:
            self.legacy.clear(state_id)

    def describe(self, state_id: str) -> str:
        return f"Meltano's state backend '{self.backend}', {self.location(state_id)}"


class SystemDbStateStore(MeltanoStateStore):
    """Meltano's system database when it is SQLite: its table ``state``."""

    backend = SYSTEMDB

    def __init__(self, database: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.database = Path(database)

    def location(self, state_id: str) -> str:
        return f"{self.database}, table state, state_id '{state_id}'"

    @contextlib.contextmanager
    def _connect(self) -> Iterator[sqlite3.Connection]:
        if not self.database.exists():
            raise StateStoreError(
                f"Meltano's system database {self.database} does not exist: run a meltano "
                "command in the project once (e.g. `meltano install`), or use --state-store local"
            )
        conn = sqlite3.connect(self.database, timeout=30, isolation_level=None)
        try:
            yield conn
        finally:
            conn.close()

    def read(self, state_id: str) -> dict[str, Any] | None:
        with self._connect() as conn:
            try:
                row = conn.execute(
                    "SELECT completed_state, partial_state FROM state WHERE state_id = ?",
                    (state_id,),
                ).fetchone()
            except sqlite3.OperationalError as exc:
                raise StateStoreError(f"{self.database} has no Meltano state table: {exc}") from exc
        if row is None:
            return None
        completed, partial = (json.loads(v) if v else None for v in row)
        return merged(completed, partial)

    def write(self, state_id: str, completed: dict[str, Any]) -> None:
        # SQLAlchemy's text form of a DATETIME in SQLite, as Meltano's model stores it.
        now = dt.datetime.now().strftime("%Y-%m-%d %H:%M:%S.%f")
        with self._connect() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(
                    "INSERT INTO state (state_id, partial_state, completed_state, updated_at) "
                    "VALUES (?, ?, ?, ?) ON CONFLICT (state_id) DO UPDATE SET "
                    "partial_state = excluded.partial_state, "
                    "completed_state = excluded.completed_state, updated_at = excluded.updated_at",
                    (state_id, "{}", _dumps(completed), now),
                )
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def delete(self, state_id: str) -> None:
        with self._connect() as conn:
            conn.execute("DELETE FROM state WHERE state_id = ?", (state_id,))


class _Blobs(abc.ABC):
    """The few operations the file-like backends need: whole-object reads and writes."""

    @abc.abstractmethod
    def read(self, key: str) -> str | None:
        """The text at ``key``, or None if there is none."""

    @abc.abstractmethod
    def write(self, key: str, text: str) -> None:
        """Replace ``key`` by ``text`` in one step (old or new, never half)."""

    @abc.abstractmethod
    def create(self, key: str, text: str) -> bool:
        """Write ``key`` only if it does not exist; False if it does."""

    @abc.abstractmethod
    def delete(self, key: str) -> None:
        """Remove ``key`` if it exists."""

    def done(self, prefix: str) -> None:  # noqa: B027 - nothing to tidy in an object store
        """Tidy up after the state under ``prefix`` was deleted."""


class _LocalBlobs(_Blobs):
    def read(self, key: str) -> str | None:
        try:
            return Path(key).read_text(encoding="utf-8")
        except FileNotFoundError:
            return None

    def write(self, key: str, text: str) -> None:
        path = Path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".state-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise
        with contextlib.suppress(OSError):
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)

    def create(self, key: str, text: str) -> bool:
        # Written aside, then linked: a reader never sees an empty lock file.
        path = Path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, temp = tempfile.mkstemp(dir=path.parent, prefix=".lock-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(text)
            os.link(temp, path)
            return True
        except FileExistsError:
            return False
        finally:
            Path(temp).unlink(missing_ok=True)

    def delete(self, key: str) -> None:
        Path(key).unlink(missing_ok=True)

    def done(self, prefix: str) -> None:
        with contextlib.suppress(OSError):
            Path(prefix).rmdir()


class _S3Blobs(_Blobs):
    def __init__(self, client: Any, bucket: str) -> None:
        self.client = client
        self.bucket = bucket

    @staticmethod
    def _missing(exc: Exception) -> bool:
        code = str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))
        return code in {"NoSuchKey", "404", "NotFound"}

    def read(self, key: str) -> str | None:
        try:
            body = self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except Exception as exc:
            if self._missing(exc):
                return None
            raise
        return str(body.decode("utf-8"))

    def write(self, key: str, text: str) -> None:
        self.client.put_object(
            Bucket=self.bucket, Key=key, Body=text.encode(), ContentType="application/json"
        )

    def create(self, key: str, text: str) -> bool:
        # Meltano checks, then writes; so do we (S3 has no portable create-if-absent).
        if self.read(key) is not None:
            return False
        self.write(key, text)
        return True

    def delete(self, key: str) -> None:
        self.client.delete_object(Bucket=self.bucket, Key=key)


class _FileLayoutStore(MeltanoStateStore):
    """``<state dir>/<state id>/state.json`` and its ``lock``: Meltano's file and S3 layout."""

    def __init__(
        self,
        blobs: _Blobs,
        state_dir: str,
        *,
        lock_timeout_seconds: float = 10,
        lock_retry_seconds: float = 1,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.blobs = blobs
        self.state_dir = state_dir
        self.lock_timeout_seconds = lock_timeout_seconds
        self.lock_retry_seconds = lock_retry_seconds

    def key(self, state_id: str, name: str = "") -> str:
        """The path or object key of ``name`` in the folder of ``state_id``."""
        return "/".join(p for p in (self.state_dir.rstrip("/"), state_id, name) if p)

    def read(self, state_id: str) -> dict[str, Any] | None:
        for attempt in range(3):
            text = self.blobs.read(self.key(state_id, "state.json"))
            if text is None:
                return None
            try:
                data = json.loads(text)
                break
            except ValueError as exc:
                # Meltano rewrites the file in place, under its lock: it may be mid-write.
                if attempt == 2 or self.blobs.read(self.key(state_id, "lock")) is None:
                    raise StateStoreError(
                        f"Meltano's state {self.location(state_id)} is not JSON ({exc}): "
                        "repair it with `meltano state set`, or remove it to read everything "
                        "again"
                    ) from None
                time.sleep(self.lock_retry_seconds)
        if not isinstance(data, dict):
            return None
        return merged(data.get("completed"), data.get("partial"))

    @contextlib.contextmanager
    def locked(self, state_id: str) -> Iterator[None]:
        """Hold Meltano's lock of ``state_id``: wait while another writer's lock is fresh,
        take over one older than the lock timeout."""
        lock = self.key(state_id, "lock")
        while True:
            stamp = dt.datetime.now(dt.UTC).timestamp()
            if self.blobs.create(lock, str(stamp)):
                break
            held = self.blobs.read(lock)
            try:
                since = float(held) if held is not None else None
            except ValueError:
                since = None  # a lock being written: wait for it
            if since is not None and stamp - since > self.lock_timeout_seconds:
                logger.info("state id '%s': taking over a stale lock %s", state_id, lock)
                self.blobs.delete(lock)
                continue
            time.sleep(self.lock_retry_seconds)
        try:
            yield
        finally:
            self.blobs.delete(lock)

    def write(self, state_id: str, completed: dict[str, Any]) -> None:
        with self.locked(state_id):
            self.blobs.write(
                self.key(state_id, "state.json"), _dumps({"completed": completed, "partial": {}})
            )

    def delete(self, state_id: str) -> None:
        with self.locked(state_id):
            self.blobs.delete(self.key(state_id, "state.json"))
        self.blobs.done(self.key(state_id))


class FileStateStore(_FileLayoutStore):
    """Meltano's ``file://`` state backend: one folder per state id under a directory."""

    backend = "file"

    def __init__(self, directory: str | os.PathLike[str], **kwargs: Any) -> None:
        super().__init__(_LocalBlobs(), str(directory), **kwargs)

    def location(self, state_id: str) -> str:
        return self.key(state_id, "state.json")


class S3StateStore(_FileLayoutStore):
    """Meltano's ``s3://`` state backend, through boto3."""

    backend = "s3"

    def __init__(self, client: Any, bucket: str, prefix: str, **kwargs: Any) -> None:
        super().__init__(_S3Blobs(client, bucket), prefix.strip("/"), **kwargs)
        self.bucket = bucket

    def location(self, state_id: str) -> str:
        return f"s3://{self.bucket}/{self.key(state_id, 'state.json')}"


class MeltanoCliStateStore(MeltanoStateStore):
    """Meltano's own `meltano state get/set/clear`, for any backend it is configured with.

    Each call starts Meltano (a second or more), so a STATE that comes less than
    ``min_interval`` seconds after the last write waits, and only the newest waiting one is
    written: when the interval is over, at :meth:`flush`, at the next read, or before the
    process exits. A state saved late is only older, never ahead of the data.
    """

    min_interval = 5.0

    def __init__(
        self,
        executable: str | os.PathLike[str],
        project_dir: Path,
        environment: str | None,
        backend: str,
        where: str,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.executable = str(executable)
        self.project_dir = project_dir
        self.environment = environment
        self.backend = backend
        self.where = where
        self._lock = threading.Lock()
        self._pending: dict[str, dict[str, Any]] = {}
        self._last_write = -float("inf")
        self._timer: threading.Timer | None = None
        self._error: BaseException | None = None

    def location(self, state_id: str) -> str:
        return f"{self.where}, state_id '{state_id}' (through {self.executable} state)"

    def _meltano(self, *args: str) -> str:
        command = [self.executable]
        if self.environment:
            command += ["--environment", self.environment]
        command += ["state", *args]
        try:
            done = subprocess.run(
                command,
                cwd=self.project_dir,
                stdin=subprocess.DEVNULL,
                capture_output=True,
                text=True,
                timeout=600,
                check=False,
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise StateStoreError(
                f"`meltano state {args[0]}` could not run: {exc} (or run with --state-store local)"
            ) from exc
        if done.returncode != 0:
            tail = "\n".join(done.stderr.strip().splitlines()[-5:])
            raise StateStoreError(
                f"`meltano state {' '.join(args[:1] + args[-1:])}` failed "
                f"(exit {done.returncode}): {tail} (fix Meltano's state backend, or run with "
                "--state-store local to keep dativo's own store)"
            )
        return done.stdout

    def read(self, state_id: str) -> dict[str, Any] | None:
        self.flush()
        lines = [line for line in self._meltano("get", state_id).splitlines() if line.strip()]
        if not lines:
            return None
        try:
            value = json.loads(lines[-1])
        except ValueError as exc:
            raise StateStoreError(
                f"`meltano state get {state_id}` printed no JSON: {exc}"
            ) from None
        return value if isinstance(value, dict) else None

    def write(self, state_id: str, completed: dict[str, Any]) -> None:
        with self._lock:
            self._pending[state_id] = completed
            wait = self._last_write + self.min_interval - time.monotonic()
            if wait > 0:
                if self._timer is None:
                    # Not a daemon: the process does not exit before the state is written.
                    self._timer = threading.Timer(wait, self._flush_later)
                    self._timer.daemon = False
                    self._timer.start()
                return
        self.flush()

    def _flush_later(self) -> None:
        try:
            self.flush()
        except BaseException as exc:
            logger.error("saving the state through `meltano state set` failed: %s", exc)
            with self._lock:
                self._error = exc

    def flush(self) -> None:
        with self._lock:
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
            pending, self._pending = self._pending, {}
            error, self._error = self._error, None
            for state_id, completed in pending.items():
                self._set(state_id, completed)
            if pending:
                self._last_write = time.monotonic()
        if error is not None:
            raise error

    def _set(self, state_id: str, completed: dict[str, Any]) -> None:
        # A file, not an argument: a large state would pass the limit of one argument.
        fd, temp = tempfile.mkstemp(prefix="dativo-state-", suffix=".json")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                fh.write(_dumps(completed))
            self._meltano("set", "--force", "--input-file", temp, state_id)
        finally:
            Path(temp).unlink(missing_ok=True)

    def delete(self, state_id: str) -> None:
        with self._lock:
            self._pending.pop(state_id, None)
        self._meltano("clear", "--force", state_id)


@dataclass
class MeltanoSettings:
    """The project's Meltano settings that say where its state is, resolved as Meltano
    does: an environment variable (``MELTANO_STATE_BACKEND_URI``; also from ``.env`` and
    the environment's ``env``), else meltano.yml, else Meltano's default.

    Attributes:
        backend_uri: ``state_backend.uri`` (``systemdb`` unless set).
        database_uri: ``database_uri`` (SQLite in ``.meltano`` unless set).
        configured: True if the project sets either of them.
        sys_dir: Meltano's folder in the project (``$MELTANO_SYS_DIR_ROOT``, ``.meltano``).
        values: Every ``state_backend.*`` setting found (``state_backend.s3.bucket``, ...).
    """

    backend_uri: str
    database_uri: str
    configured: bool
    sys_dir: Path
    values: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, project: Project) -> MeltanoSettings:
        """The settings of ``project``."""
        env = {**project.env, "MELTANO_PROJECT_ROOT": str(project.dir)}
        sys_dir = project.dir / env.get("MELTANO_SYS_DIR_ROOT", ".meltano")
        env["MELTANO_SYS_DIR_ROOT"] = str(sys_dir)
        flat: dict[str, Any] = {}

        def walk(prefix: str, value: Any) -> None:
            if isinstance(value, Mapping):
                for key, inner in value.items():
                    walk(f"{prefix}.{key}" if prefix else str(key), inner)
            else:
                flat[prefix] = value

        for key in ("state_backend", "database_uri"):
            if key in project.data:
                walk(key, project.data[key])
        for key, value in project.data.items():
            if isinstance(key, str) and key.startswith("state_backend."):
                walk(key, value)
        for name, value in env.items():
            if name.startswith("MELTANO_STATE_BACKEND_") or name == "MELTANO_DATABASE_URI":
                flat[_setting_name(name)] = value
        values = {k: str(expand_env(str(v), env)) for k, v in flat.items() if v is not None}
        backend = values.get("state_backend.uri") or SYSTEMDB
        database = (
            values.get("database_uri") or f"sqlite:///{env['MELTANO_SYS_DIR_ROOT']}/meltano.db"
        )
        configured = bool(values.get("state_backend.uri") or values.get("database_uri"))
        return cls(backend, database, configured, sys_dir, values)

    def number(self, name: str, default: float) -> float:
        """A numeric ``state_backend.<name>`` setting."""
        try:
            return float(self.values.get(f"state_backend.{name}", default))
        except ValueError:
            raise ConfigError(f"Meltano setting state_backend.{name} must be a number") from None


def _setting_name(variable: str) -> str:
    """The dotted setting of a ``MELTANO_...`` variable (``..._S3_AWS_ACCESS_KEY_ID`` ->
    ``state_backend.s3.aws_access_key_id``)."""
    if variable == "MELTANO_DATABASE_URI":
        return "database_uri"
    rest = variable[len("MELTANO_STATE_BACKEND_") :].lower()
    for backend in ("s3", "azure", "gcs"):
        if rest.startswith(backend + "_"):
            return f"state_backend.{backend}.{rest[len(backend) + 1 :]}"
    return f"state_backend.{rest}"


def meltano_executable(
    project_dir: Path, which: Callable[[str], str | None] = shutil.which
) -> str | None:
    """The Meltano installed for the project: its ``.venv``'s, else the one on PATH."""
    local = project_dir / ".venv" / "bin" / "meltano"
    if local.exists() and os.access(local, os.X_OK):
        return str(local)
    return which("meltano")


def _sqlite_path(uri: str, project_dir: Path) -> Path | None:
    """The file of a ``sqlite:///`` database URI (relative to the project), else None."""
    if not uri.startswith("sqlite:///"):
        return None
    path = Path(uri[len("sqlite:///") :].split("?", 1)[0])
    return path if path.is_absolute() else project_dir / path


def _public(uri: str) -> str:
    """``uri`` without a password or key in it."""
    parsed = urlparse(uri)
    if parsed.password is None and parsed.username is None:
        return uri
    host = parsed.hostname or ""
    if parsed.port:
        host += f":{parsed.port}"
    return parsed._replace(netloc=host).geturl()


def choose_state_store(
    project: Project,
    *,
    mode: str = "auto",
    state_dir: str | os.PathLike[str] | None = None,
    which: Callable[[str], str | None] = shutil.which,
) -> StateStore:
    """The store a run of ``project`` keeps its state in.

    ``local`` (or a ``state_dir``) is dativo's own JSON files. ``meltano`` is Meltano's
    store for the project. ``auto`` is Meltano's when the project uses Meltano (a
    ``.meltano`` folder, or ``state_backend.uri`` / ``database_uri`` set), else local.

    Raises:
        ConfigError: ``mode`` is unknown, contradicts ``state_dir``, or Meltano's store
            cannot be reached without Meltano installed.
    """
    if mode not in MODES:
        raise ConfigError(f"--state-store must be one of {', '.join(MODES)}, not '{mode}'")
    legacy = LocalStateStore(project.dir / ".dativo" / "state")
    if state_dir is not None:
        if mode == "meltano":
            raise ConfigError(
                "--state-dir is the local store: it cannot go with --state-store meltano"
            )
        return LocalStateStore(state_dir)
    if mode == "local":
        return legacy
    settings = MeltanoSettings.of(project)
    if mode == "auto" and not (settings.configured or settings.sys_dir.is_dir()):
        return legacy
    uri = settings.backend_uri
    scheme = "" if uri == SYSTEMDB else urlparse(uri).scheme
    lock = {
        "lock_timeout_seconds": settings.number("lock_timeout_seconds", 10),
        "lock_retry_seconds": settings.number("lock_retry_seconds", 1),
    }
    if scheme == "file":
        return FileStateStore(urlparse(uri).path, legacy=legacy, **lock)
    exe = meltano_executable(project.dir, which) if project.file.name == "meltano.yml" else None
    if exe is not None:
        where = _public(settings.database_uri if uri == SYSTEMDB else uri)
        return MeltanoCliStateStore(
            exe, project.dir, project.environment, scheme or SYSTEMDB, where, legacy=legacy
        )
    if uri == SYSTEMDB:
        database = _sqlite_path(settings.database_uri, project.dir)
        if database is None:
            raise ConfigError(
                f"Meltano's system database {_public(settings.database_uri)} is reached only "
                "through Meltano: install Meltano for the project (on PATH or in .venv), "
                "or use --state-store local"
            )
        if not database.exists():
            if mode == "meltano":
                raise ConfigError(
                    f"Meltano's system database {database} does not exist: run a meltano "
                    "command in the project once (e.g. `meltano install`), or use "
                    "--state-store local"
                )
            logger.info(
                "no Meltano system database at %s yet: keeping state in %s",
                database,
                legacy.directory,
            )
            return legacy
        return SystemDbStateStore(database, legacy=legacy)
    if scheme == "s3":
        return _s3_store(uri, settings, legacy, lock)
    raise ConfigError(
        f"Meltano's state backend {_public(uri)} is reached only through Meltano: install "
        "Meltano for the project (on PATH or in .venv), or use --state-store local"
    )


def _s3_store(
    uri: str, settings: MeltanoSettings, legacy: LocalStateStore, lock: dict[str, float]
) -> S3StateStore:
    import boto3

    parsed = urlparse(uri)
    s3 = {
        k.split(".", 2)[2]: v
        for k, v in settings.values.items()
        if k.startswith("state_backend.s3.")
    }
    key_id = s3.get("aws_access_key_id") or parsed.username
    secret = s3.get("aws_secret_access_key") or parsed.password
    if bool(key_id) != bool(secret):
        raise ConfigError(
            "Meltano's s3 state backend needs both aws_access_key_id and aws_secret_access_key "
            "(or neither, for boto3's default credentials)"
        )
    session = (
        boto3.Session(aws_access_key_id=key_id, aws_secret_access_key=secret)
        if key_id
        else boto3.Session()
    )
    client = session.client("s3", endpoint_url=s3.get("endpoint_url") or None)
    bucket = s3.get("bucket") or parsed.hostname or ""
    if not bucket:
        raise ConfigError(f"Meltano's state backend {_public(uri)} names no bucket")
    return S3StateStore(client, bucket, s3.get("prefix") or parsed.path, legacy=legacy, **lock)
