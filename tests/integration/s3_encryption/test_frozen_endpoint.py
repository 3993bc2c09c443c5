"""A frozen S3 endpoint (accepts TCP, never answers): both S3 targets fail within their
timeouts with one clear error naming the endpoint, the operation and the timeout."""

from __future__ import annotations

import json
import socket
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ..s3server import CREDENTIALS

#: Small timeouts so that the bound is quick to check; the defaults are 10s/60s/3 attempts.
TIMEOUTS = {"connect_timeout": 1, "read_timeout": 1, "max_attempts": 2}

#: Seconds the run may take: every request the target makes (including clean-up) is bounded.
BOUND = 40

MESSAGES = "\n".join(
    json.dumps(m)
    for m in [
        {
            "type": "SCHEMA",
            "stream": "orders",
            "schema": {"type": "object", "properties": {"id": {"type": "integer"}}},
            "key_properties": ["id"],
        },
        {"type": "RECORD", "stream": "orders", "record": {"id": 1}},
        {"type": "STATE", "value": {"bookmarks": {}}},
    ]
)


@pytest.fixture
def frozen_endpoint() -> Iterator[str]:
    """``http://127.0.0.1:<port>``: accepts connections and never sends a byte."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(128)
    held: list[socket.socket] = []
    stop = threading.Event()

    def accept() -> None:
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            held.append(conn)

    thread = threading.Thread(target=accept, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        for conn in held:
            conn.close()
        server.close()


def _run(command: str, config: dict[str, Any], tmp_path: Path) -> tuple[int, str, float]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    started = time.monotonic()
    try:
        done = subprocess.run(
            [command, "--config", str(path)],
            input=MESSAGES,
            capture_output=True,
            text=True,
            timeout=BOUND,
        )
    except subprocess.TimeoutExpired:
        pytest.fail(f"{command} still running after {BOUND}s against a frozen endpoint")
    return done.returncode, done.stderr, time.monotonic() - started


def _assert_clear(stderr: str, endpoint: str) -> None:
    """The last line is the error: the operation, the endpoint and the bounds."""
    last = [line for line in stderr.splitlines() if line.strip()][-1]
    assert "AttributeError" not in stderr
    assert "Error: " in last, last
    assert endpoint in last, last
    assert "read_timeout 1s" in last, last
    assert "2 attempt" in last, last


@pytest.mark.e2e
def test_encrypted_s3_target_fails_within_its_timeouts(
    frozen_endpoint: str, key_file: Path, tmp_path: Path
) -> None:
    config = {
        **CREDENTIALS,
        **TIMEOUTS,
        "endpoint_url": frozen_endpoint,
        "bucket": "frozen",
        "key_file": str(key_file),
    }
    code, stderr, took = _run("target-dativo-s3", config, tmp_path)
    assert code != 0
    assert took < BOUND
    _assert_clear(stderr, frozen_endpoint)
    assert "S3 CreateMultipartUpload at" in stderr.splitlines()[-1]


@pytest.mark.e2e
def test_parquet_target_on_s3_fails_within_its_timeouts(
    frozen_endpoint: str, tmp_path: Path
) -> None:
    config = {
        **CREDENTIALS,
        **TIMEOUTS,
        "endpoint_url": frozen_endpoint,
        "path": "s3://frozen/lake",
    }
    code, stderr, took = _run("target-dativo-parquet", config, tmp_path)
    assert code != 0
    assert took < BOUND
    _assert_clear(stderr, frozen_endpoint)
