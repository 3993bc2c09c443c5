"""The Rust COPY path over TLS, against a server that refuses plain TCP connections:
libpq's sslmode meanings (require, verify-ca, verify-full), the reader picking the Rust
path for a TLS connection, parallel partitions over TLS, and certificate errors."""

from __future__ import annotations

import os
from collections.abc import Iterator

import psycopg
import pyarrow as pa
import pytest

from dativo_bridge.errors import ConfigError
from tap_dativo_postgres import accel
from tap_dativo_postgres.catalog import ColumnPlan
from tap_dativo_postgres.reader import PostgresReader

from . import tls_server

pytest.importorskip("dativo_accel", reason="the dativo_accel extension is not installed")

PLANS = [ColumnPlan("g", "int4", pa.int32(), "plain")]
QUERY = "COPY (SELECT g FROM generate_series(1, 5000) g) TO STDOUT (FORMAT binary)"


@pytest.fixture(scope="module")
def server() -> Iterator[tls_server.TlsServer]:
    if tls_server.postgres_bin() is None:
        if os.environ.get("CI"):
            pytest.fail("CI needs a system PostgreSQL for the TLS tests (scripts/test.sh)")
        pytest.skip("no system PostgreSQL with TLS (apt-get install postgresql)")
    srv = tls_server.start()
    with psycopg.connect(srv.dsn(sslmode="require"), autocommit=True) as conn:
        conn.execute("CREATE SCHEMA tls")
        conn.execute(
            "CREATE TABLE tls.t (id int PRIMARY KEY, s text, n numeric(12,2), "
            "t timestamptz, j jsonb)"
        )
        conn.execute(
            "INSERT INTO tls.t SELECT g, 'row ' || g, g / 100.0, "
            "timestamptz '2024-01-01' + g * interval '1 minute', jsonb_build_object('g', g) "
            "FROM generate_series(1, 30000) g"
        )
    yield srv
    srv.stop()


def _read(dsn: str, accelerator: str, parallelism: int = 1) -> tuple[pa.Table, PostgresReader]:
    reader = PostgresReader()
    reader.open(
        {
            "dsn": dsn,
            "filter_schemas": ["tls"],
            "accelerator": accelerator,
            "max_parallelism": parallelism,
            "pages_per_partition": 20,
        }
    )
    with reader:
        info = {s.name: s for s in reader.discover()}["tls-t"]
        table = pa.Table.from_batches(list(reader.read(info, None)), schema=info.schema)
    return table.sort_by("id"), reader


def test_plain_tcp_is_refused(server: tls_server.TlsServer) -> None:
    with pytest.raises(psycopg.OperationalError, match=r"no encryption|reject"):
        psycopg.connect(server.dsn(host="127.0.0.1", sslmode="disable")).close()


@pytest.mark.parametrize(
    ("params", "mode"),
    [
        ({"host": "127.0.0.1", "sslmode": "require"}, "require"),
        ({"host": "127.0.0.1", "sslmode": "require", "sslrootcert": "CA"}, "verify-ca"),
        ({"host": "127.0.0.1", "sslmode": "verify-ca", "sslrootcert": "CA"}, "verify-ca"),
        ({"host": "localhost", "sslmode": "verify-full", "sslrootcert": "CA"}, "verify-full"),
    ],
    ids=["require", "require+root", "verify-ca", "verify-full"],
)
def test_the_tap_reads_over_tls_with_rust(
    server: tls_server.TlsServer, params: dict[str, str], mode: str
) -> None:
    params = {k: str(server.ca) if v == "CA" else v for k, v in params.items()}
    dsn = server.dsn(**params)
    python, _ = _read(dsn, "python")
    for parallelism in (1, 3):
        rust, reader = _read(dsn, "auto", parallelism)
        assert reader.accelerator == "rust"
        assert reader._rust_tls is not None and reader._rust_tls["mode"] == mode
        assert rust.num_rows == 30000
        assert rust.equals(python)


def test_certificates_are_checked(server: tls_server.TlsServer) -> None:
    by_address = server.dsn(host="127.0.0.1", sslmode="require")
    # The certificate names localhost only: verify-full by address fails, verify-ca passes.
    ok = accel.read_copy(by_address, QUERY, PLANS, 1 << 20, "x", tls={"mode": "verify-ca",
                         "root_cert": str(server.ca)})  # fmt: skip
    assert sum(b.num_rows for b in ok) == 5000
    with pytest.raises(ConfigError, match=r"(?i)certificate.*(name|valid)"):
        accel.read_copy(
            by_address,
            QUERY,
            PLANS,
            1,
            "x",
            tls={"mode": "verify-full", "root_cert": str(server.ca)},
        )
    for mode in ("verify-ca", "verify-full"):
        with pytest.raises(ConfigError, match=r"(?i)certificate.*(issuer|unknown)"):
            accel.read_copy(
                server.dsn(sslmode="require"),
                QUERY,
                PLANS,
                1,
                "x",
                tls={"mode": mode, "root_cert": str(server.other_ca)},
            )
    with pytest.raises(ConfigError, match="sslrootcert"):
        accel.read_copy(by_address, QUERY, PLANS, 1, "x", tls={"mode": "verify-ca"})
    parallel = accel.read_copy_parallel(
        by_address, [QUERY] * 3, PLANS, 4096, "x", 2, tls={"mode": "require"}
    )
    assert sum(b.num_rows for b in parallel) == 15000


def test_without_tls_the_extension_is_refused_by_this_server(server: tls_server.TlsServer) -> None:
    plain = server.dsn(host="127.0.0.1", sslmode="disable")
    with pytest.raises(ConfigError, match="could not connect"):
        accel.read_copy(plain, QUERY, PLANS, 1, "x")
