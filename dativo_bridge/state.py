"""Where a run's STATE is kept between runs: local JSON files by default, Meltano's
state store in a Meltano project (:mod:`dativo_bridge.meltano_state`)."""

from __future__ import annotations

import abc
import datetime as dt
import decimal
import json
import os
import re
import tempfile
from pathlib import Path
from typing import Any

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")

#: Where a `dativo run` keeps, in its STATE, the streams it has finished while it is under
#: way (``{"streams": [...], "completed": [...]}``); absent once a run read every stream.
RUN_KEY = "dativo_run"

#: ``--state-store`` values: pick by the project, or force one (``meltano_state.MODES``;
#: here so that the ``dativo`` command defines its options without importing
#: :mod:`dativo_bridge.meltano_state`).
STATE_STORE_MODES = ("auto", "meltano", "local")


class StateStore(abc.ABC):
    """Keeps the latest durable STATE value per state id."""

    #: What kind of store this is, as the ``--json`` summary names it.
    kind = "custom"

    def location(self, state_id: str) -> str:
        """Where ``state_id`` is kept (a path or URI, without credentials)."""
        return f"{type(self).__name__}[{state_id}]"

    def describe(self, state_id: str) -> str:
        """The store and the place of ``state_id`` in it, for a person to read."""
        return self.location(state_id)

    @abc.abstractmethod
    def get(self, state_id: str) -> dict[str, Any] | None:
        """The last value saved under ``state_id``, or None."""

    @abc.abstractmethod
    def put(self, state_id: str, value: dict[str, Any]) -> None:
        """Save ``value`` atomically (a crash leaves the old value or the new one)."""

    @abc.abstractmethod
    def clear(self, state_id: str) -> None:
        """Forget ``state_id`` (``--full-refresh``)."""

    def flush(self) -> None:  # noqa: B027 - most stores write at once
        """Write any value :meth:`put` left waiting; raise if a write failed."""


class LocalStateStore(StateStore):
    """One JSON file per state id in a directory (default ``.dativo/state``)."""

    kind = "local"

    def __init__(self, directory: str | os.PathLike[str] = ".dativo/state") -> None:
        self.directory = Path(directory)

    def path(self, state_id: str) -> Path:
        """The file holding ``state_id``."""
        return self.directory / (_UNSAFE.sub("_", state_id) + ".json")

    def location(self, state_id: str) -> str:
        return str(self.path(state_id))

    def describe(self, state_id: str) -> str:
        return f"dativo's local state store, {self.path(state_id)}"

    def get(self, state_id: str) -> dict[str, Any] | None:
        path = self.path(state_id)
        if not path.exists():
            return None
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
        return data.get("value") if isinstance(data, dict) else None

    def put(self, state_id: str, value: dict[str, Any]) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        path = self.path(state_id)
        fd, temp = tempfile.mkstemp(dir=self.directory, prefix=".state-", suffix=".tmp")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump({"state_id": state_id, "value": value}, fh, indent=1, default=str)
                fh.flush()
                os.fsync(fh.fileno())
            os.replace(temp, path)
        except BaseException:
            Path(temp).unlink(missing_ok=True)
            raise

    def clear(self, state_id: str) -> None:
        self.path(state_id).unlink(missing_ok=True)


def jsonable(value: Any) -> Any:
    """A bookmark value as the JSON value singer-sdk stores in STATE."""
    if isinstance(value, dt.datetime):
        if value.tzinfo is None:
            return value.isoformat()
        return value.astimezone(dt.UTC).isoformat()
    if isinstance(value, dt.date | dt.time):
        return value.isoformat()
    if isinstance(value, decimal.Decimal):
        return str(value)
    if isinstance(value, bytes):
        return value.hex()
    return value
