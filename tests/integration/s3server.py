"""An S3 (and KMS) endpoint for the tests: DATIVO_TEST_S3_ENDPOINT if set, else moto's
server started as its own process on 127.0.0.1 (once per test session)."""

from __future__ import annotations

import atexit
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.request
import uuid

_lock = threading.Lock()
_state: dict[str, str] = {}

#: Credentials the tests pass explicitly (moto accepts any).
CREDENTIALS = {
    "aws_access_key_id": "testing",
    "aws_secret_access_key": "testing",
    "region": "us-east-1",
}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def s3_endpoint() -> str:
    """The endpoint URL, starting moto's server on first use."""
    external = os.environ.get("DATIVO_TEST_S3_ENDPOINT")
    if external:
        return external
    with _lock:
        if "endpoint" not in _state:
            port = _free_port()
            proc = subprocess.Popen(
                [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            atexit.register(proc.terminate)
            endpoint = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 30
            while True:
                try:
                    urllib.request.urlopen(endpoint + "/moto-api/", timeout=1)
                    break
                except OSError:
                    if proc.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError("moto server did not start") from None
                    time.sleep(0.1)
            _state["endpoint"] = endpoint
        return _state["endpoint"]


def new_bucket(prefix: str = "dativo-test") -> str:
    """Create a fresh bucket and return its name."""
    import boto3

    name = f"{prefix}-{uuid.uuid4().hex[:10]}"
    client = boto3.client(
        "s3",
        endpoint_url=s3_endpoint(),
        aws_access_key_id=CREDENTIALS["aws_access_key_id"],
        aws_secret_access_key=CREDENTIALS["aws_secret_access_key"],
        region_name=CREDENTIALS["region"],
    )
    client.create_bucket(Bucket=name)
    return name
