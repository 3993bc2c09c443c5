"""Settings are validated and defaulted once, the same way on every path: validated()
itself, the Python API run() (before a reader's and a writer's open) and the singer-sdk
plugins made by make_tap / make_target."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pyarrow as pa
import pytest

from dativo_bridge import ArrowReader, ArrowWriter, CommitResult, ConfigError, StreamInfo, run
from dativo_bridge.sdk import make_tap, make_target
from dativo_bridge.settings import (
    CHECKPOINT_ROWS,
    CHECKPOINT_SECONDS,
    TARGET_COMMON_SETTINGS,
    validated,
)

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "files": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {
                    "stream": {"type": "string"},
                    "delimiter": {"type": "string", "default": ","},
                },
                "required": ["stream"],
            },
        },
        "null_values": {"type": "array", "items": {"type": "string"}, "default": [""]},
        "block_size_mb": {"type": "number", "default": 16},
        "auth": {
            "type": "object",
            "properties": {
                "type": {"type": "string", "enum": ["none", "bearer"], "default": "none"},
                "token": {"type": "string", "secret": True, "minLength": 40},
            },
        },
        "mode": {"type": "string", "enum": ["a", "b"]},
        "password": {"type": "string", "secret": True},
    },
    "required": ["files"],
}


def test_defaults_fill_the_top_level_nested_objects_and_array_items() -> None:
    given = {"files": [{"stream": "a"}, {"stream": "b", "delimiter": ";"}], "auth": {}}
    config = validated(SCHEMA, given)
    assert config["block_size_mb"] == 16 and config["null_values"] == [""]
    assert [f["delimiter"] for f in config["files"]] == [",", ";"]
    assert config["auth"] == {"type": "none"}
    assert given == {"files": [{"stream": "a"}, {"stream": "b", "delimiter": ";"}], "auth": {}}


def test_an_absent_object_is_not_created_and_a_null_is_not_replaced() -> None:
    config = validated(SCHEMA, {"files": []})
    assert "auth" not in config and "mode" not in config
    with pytest.raises(ConfigError, match="'block_size_mb': expected a number, got null"):
        validated(SCHEMA, {"files": [], "block_size_mb": None})


def test_defaults_are_copies() -> None:
    first = validated(SCHEMA, {"files": []})
    first["null_values"].append("NA")
    assert validated(SCHEMA, {"files": []})["null_values"] == [""]
    assert SCHEMA["properties"]["null_values"]["default"] == [""]


def test_a_malformed_setting_is_one_line_naming_plugin_path_and_expectation() -> None:
    with pytest.raises(ConfigError) as wrong_type:
        validated(SCHEMA, {"files": "a.csv"}, plugin="tap-x")
    assert str(wrong_type.value) == "tap-x: setting 'files': expected a list, got a string"
    with pytest.raises(ConfigError) as missing:
        validated(SCHEMA, {"files": [{"delimiter": ";"}]}, plugin="tap-x")
    assert str(missing.value) == "tap-x: setting 'files[0].stream' is required"
    with pytest.raises(ConfigError) as choice:
        validated(SCHEMA, {"files": [], "mode": "c"})
    assert str(choice.value) == "setting 'mode': expected one of 'a', 'b'"
    with pytest.raises(ConfigError) as several:
        validated(SCHEMA, {"files": 1, "mode": "c"}, plugin="tap-x")
    assert "(and 1 more problem(s))" in str(several.value)
    assert "\n" not in str(several.value)
    with pytest.raises(ConfigError, match=r"^setting 'files' is required$"):
        validated(SCHEMA, {})


def test_a_secret_value_never_appears_in_the_error() -> None:
    token = "short-but-secret-token"
    with pytest.raises(ConfigError) as short:
        validated(SCHEMA, {"files": [], "auth": {"type": "bearer", "token": token}})
    assert token not in str(short.value)
    assert "setting 'auth.token': expected at least 40 character(s)" in str(short.value)
    with pytest.raises(ConfigError) as wrong:
        validated(SCHEMA, {"files": [], "password": 9876543210})
    assert "9876543210" not in str(wrong.value)
    assert "'password': expected a string, got an integer" in str(wrong.value)


# -- the Python API ----------------------------------------------------------------------

ROWS = pa.schema([pa.field("id", pa.int64(), nullable=False)])


class Recorder(ArrowReader):
    """Records the config its open receives (and, unlike the built-in readers, fills no
    default itself)."""

    name = "tap-recorder"
    is_sorted = True
    config_jsonschema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {
            "rows": {"type": "integer", "default": 4},
            "label": {"type": "string", "default": "recorded"},
        },
    }
    opened: ClassVar[list[Mapping[str, Any]]] = []

    def open(self, config: Mapping[str, Any]) -> None:
        super().open(config)
        Recorder.opened.append(dict(config))

    def discover(self) -> Sequence[StreamInfo]:
        return [StreamInfo("s", ROWS, ("id",), "id", "INCREMENTAL")]

    def read(self, stream: StreamInfo, bookmark: Any | None) -> Iterator[pa.RecordBatch]:
        for i in range(int(self.config["rows"])):
            yield pa.record_batch([pa.array([i], pa.int64())], schema=ROWS)


class Memory(ArrowWriter):
    """Keeps what it was given; counts its commits."""

    name = "target-memory"
    config_jsonschema: ClassVar[dict[str, Any]] = {
        "type": "object",
        "properties": {"suffix": {"type": "string", "default": "-kept"}},
    }
    opened: ClassVar[list[Mapping[str, Any]]] = []
    commits: ClassVar[list[int]] = []

    def open(self, config: Mapping[str, Any], stream: StreamInfo) -> None:
        super().open(config, stream)
        Memory.opened.append(dict(config))
        self._rows = 0

    def write(self, batch: pa.RecordBatch) -> None:
        self._rows += batch.num_rows

    def commit(self) -> CommitResult:
        rows, self._rows = self._rows, 0
        if rows:
            Memory.commits.append(rows)
        return CommitResult(rows=rows)


@pytest.fixture(autouse=True)
def _fresh() -> None:
    Recorder.opened.clear()
    Memory.opened.clear()
    Memory.commits.clear()


def test_defaults_reach_the_reader_and_the_writer_under_run() -> None:
    result = run(Recorder, Memory, source_config={"rows": 2}, destination_config={})
    assert result.rows == 2
    assert Recorder.opened == [{"rows": 2, "label": "recorded"}]
    assert Memory.opened[0]["suffix"] == "-kept"
    assert Memory.opened[0]["checkpoint_rows"] == CHECKPOINT_ROWS


def test_a_malformed_setting_under_run_fails_before_the_reader_opens() -> None:
    with pytest.raises(ConfigError, match="tap-recorder: setting 'rows': expected an integer"):
        run(Recorder, Memory, source_config={"rows": "2"})
    with pytest.raises(ConfigError, match="target-memory: setting 'checkpoint_rows'"):
        run(Recorder, Memory, destination_config={"checkpoint_rows": "1"})
    assert Recorder.opened == [] and Memory.opened == []


def test_the_destinations_checkpoint_rows_is_used_unless_run_is_given_one() -> None:
    run(Recorder, Memory, destination_config={"checkpoint_rows": 1})
    assert Memory.commits == [1, 1, 1, 1]  # a commit at every STATE
    Memory.commits.clear()
    run(Recorder, Memory, destination_config={"checkpoint_rows": 1}, checkpoint_rows=1000)
    assert Memory.commits == [4]  # the argument wins: one commit, at the end
    Memory.commits.clear()
    run(Recorder, Memory)
    assert Memory.commits == [4]


def test_checkpoint_defaults_are_defined_once() -> None:
    assert TARGET_COMMON_SETTINGS["checkpoint_rows"]["default"] == CHECKPOINT_ROWS == 1_000_000
    assert TARGET_COMMON_SETTINGS["checkpoint_seconds"]["default"] == CHECKPOINT_SECONDS == 300


# -- the singer-sdk plugins ----------------------------------------------------------------


def test_the_sdk_tap_opens_its_reader_with_the_defaults() -> None:
    tap = make_tap(Recorder)(config={"rows": 1}, validate_config=False)
    assert tap.reader.config == {"rows": 1, "label": "recorded"}
    tap.close_reader()


def test_the_sdk_target_takes_its_settings_as_given_and_defaulted() -> None:
    target_class = make_target(Memory)
    target = target_class(config={"checkpoint_seconds": 0, "checkpoint_rows": 0})
    assert target.writers.checkpoint_seconds == 0 and target.writers.checkpoint_rows == 0
    plain = target_class(config={})
    assert plain.writers.checkpoint_rows == CHECKPOINT_ROWS
    assert plain.writers.checkpoint_seconds == CHECKPOINT_SECONDS


# -- errors both ways ------------------------------------------------------------------------


def test_a_tap_that_cannot_read_its_source_raises_read_error(tmp_path: Path) -> None:
    from dativo_bridge import DativoError, ReadError
    from tap_dativo_csv.reader import CsvReader

    assert issubclass(ReadError, DativoError)
    (tmp_path / "empty.csv").write_text("")
    reader = CsvReader()
    reader.open({"files": [{"stream": "s", "path": str(tmp_path / "empty.csv")}]})
    with pytest.raises(ReadError, match=r"stream 's', file .*empty.csv, the file is empty"):
        reader.discover()
    with pytest.raises(ConfigError, match="needs 'files'"):
        CsvReader().open({"files": []})
