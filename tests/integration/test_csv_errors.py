"""tap-dativo-csv on bad input: every error names the stream, the file, the line and, where
one is at fault, the column; a column new in a later file of a glob is an error (inferred
schema) or a warning (declared schema); null_values apply to string columns too."""

from __future__ import annotations

import gzip
import logging
import os
from pathlib import Path
from typing import Any

import pyarrow as pa
import pytest

from dativo_bridge.errors import DativoError
from tap_dativo_csv.reader import CsvReader

HEADER = "id,name,amount\n"


def read(path: Path | str, **settings: Any) -> pa.Table:
    """Every row of stream ``orders`` at ``path`` (a file or a glob)."""
    files = [{"stream": "orders", "path": str(path), **settings.pop("stream", {})}]
    reader = CsvReader()
    reader.open({"files": files, **settings})
    try:
        [info] = reader.discover()
        return pa.Table.from_batches(list(reader.read(info, None)), schema=info.schema)
    finally:
        reader.close()


def write(path: Path, text: str, mtime: int = 1_700_000_000) -> Path:
    path.write_text(text)
    os.utime(path, (mtime, mtime))
    return path


def test_truncated_gzip_names_the_file_and_the_last_whole_line(tmp_path: Path) -> None:
    body = HEADER + "".join(f"{i},n{i},{i}.5\n" for i in range(200_000))
    data = gzip.compress(body.encode())
    path = tmp_path / "orders.csv.gz"
    path.write_bytes(data[: len(data) // 2])
    with pytest.raises(DativoError) as caught:
        read(path)
    message = str(caught.value)
    assert f"stream 'orders', file {path}" in message
    assert "truncated or corrupt after line" in message


def test_a_row_with_extra_values_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "o.csv", HEADER + "1,a,1.5\n2,b,2.5,9\n")
    with pytest.raises(DativoError, match=r"o\.csv, line 3: 4 values, more than the header's 3"):
        read(path)


def test_a_row_with_fewer_values_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "o.csv", HEADER + "1,a,1.5\n\n2,b,2.5\n3,c\n")
    with pytest.raises(DativoError, match=r"o\.csv, line 5: 2 values, fewer than the header's 3"):
        read(path)


def test_an_unterminated_quote_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "o.csv", HEADER + '1,a,1.5\n2,"b,2.5\n3,c,3.5\n')
    with pytest.raises(DativoError, match=r"o\.csv, line 3: a quoted value is not closed"):
        read(path)


def test_an_empty_file_is_an_error_naming_it(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", HEADER + "1,a,1.5\n", mtime=1_700_000_000)
    empty = write(tmp_path / "b.csv", "", mtime=1_700_000_100)
    with pytest.raises(DativoError, match=rf"file {empty}: the file is empty"):
        read(tmp_path / "*.csv")


def test_an_empty_first_file_is_an_error_when_inferring(tmp_path: Path) -> None:
    empty = write(tmp_path / "a.csv", "")
    with pytest.raises(DativoError, match=rf"file {empty}, the file is empty .*while inferring"):
        read(empty)


def test_a_conversion_error_names_line_column_and_value(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", HEADER + "1,a,1.5\n", mtime=1_700_000_000)
    bad = write(tmp_path / "b.csv", HEADER + "2,b,2.5\n\n3,c,x\n", mtime=1_700_000_100)
    with pytest.raises(DativoError) as caught:
        read(tmp_path / "*.csv")
    message = str(caught.value)
    assert f"file {bad}, line 4, column 'amount': value 'x' is not a valid double" in message
    assert "#2" not in message


def test_a_conversion_error_against_a_declared_schema(tmp_path: Path) -> None:
    path = write(tmp_path / "o.csv", HEADER + "1,a,1.5\nseven,b,2\n")
    schema = {
        "type": "object",
        "properties": {
            "id": {"type": "integer"},
            "name": {"type": ["string", "null"]},
            "amount": {"type": ["number", "null"]},
        },
    }
    with pytest.raises(DativoError, match=r"line 3, column 'id': value 'seven' is not a valid"):
        read(path, stream={"schema": schema})


def test_a_new_column_in_a_later_file_fails_with_an_inferred_schema(tmp_path: Path) -> None:
    write(tmp_path / "a.csv", HEADER + "1,a,1.5\n", mtime=1_700_000_000)
    later = write(tmp_path / "b.csv", "id,name,amount,region\n2,b,2.5,eu\n", mtime=1_700_000_100)
    with pytest.raises(DativoError) as caught:
        read(tmp_path / "*.csv")
    message = str(caught.value)
    assert f"file {later}, line 1: column(s) 'region' are not in the stream's schema" in message
    assert "declare a 'schema'" in message


def test_a_new_column_with_a_declared_schema_is_a_warning(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    write(tmp_path / "a.csv", HEADER + "1,a,1.5\n", mtime=1_700_000_000)
    write(tmp_path / "b.csv", "id,name,amount,region\n2,b,2.5,eu\n", mtime=1_700_000_100)
    schema = {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "name": {"type": ["string", "null"]}},
    }
    with caplog.at_level(logging.WARNING, logger="dativo.csv"):
        table = read(tmp_path / "*.csv", stream={"schema": schema})
    assert table.column("id").to_pylist() == [1, 2]
    warned = [
        r.getMessage() for r in caplog.records if "not in the declared schema" in r.getMessage()
    ]
    assert any("'amount'" in w for w in warned)
    assert any("'region'" in w and "b.csv" in w for w in warned)


def test_null_values_apply_to_string_columns(tmp_path: Path) -> None:
    path = write(tmp_path / "o.csv", HEADER + "1,NA,1.5\n2,,2.5\n3,c,NA\n")
    table = read(path, null_values=["", "NA"])
    assert table.column("name").to_pylist() == [None, None, "c"]
    assert table.column("amount").to_pylist() == [1.5, 2.5, None]


def test_a_null_in_a_column_that_may_not_be_null_names_its_line(tmp_path: Path) -> None:
    path = write(tmp_path / "o.csv", HEADER + "1,a,1.5\n2,,2.5\n")
    schema = {
        "type": "object",
        "properties": {"id": {"type": "integer"}, "name": {"type": "string"}},
    }
    with pytest.raises(DativoError, match=r"o\.csv, line 3, column 'name': a null value"):
        read(path, stream={"schema": schema})
