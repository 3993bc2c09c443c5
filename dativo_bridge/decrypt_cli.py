"""`dativo decrypt`: stream the plaintext of an encrypted object to a file or stdout."""

from __future__ import annotations

import contextlib
import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import click

from dativo_bridge.errors import DativoError


def _parse_context(pairs: tuple[str, ...]) -> dict[str, str]:
    context: dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--context")
        context[key] = value
    return context


@contextlib.contextmanager
def _output(path: str | None) -> Iterator[IO[bytes]]:
    """stdout, or a private temporary file renamed to ``path`` only on success."""
    if path is None or path == "-":
        yield sys.stdout.buffer
        sys.stdout.buffer.flush()
        return
    target = Path(path)
    fd, temp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(temp, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temp)
        raise


@click.command("decrypt")
@click.argument("source", metavar="INPUT")
@click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, writable=True),
    default=None,
    help="Write the plaintext here (created 0600, only if the whole object verifies) "
    "[default: stdout].",
)
@click.option(
    "--key-file",
    type=click.Path(exists=True, dir_okay=False),
    help="Local key: a file of exactly 32 bytes. Without a local key, KMS is used.",
)
@click.option("--key-env", help="Local key: env var holding 32 bytes in base64.")
@click.option(
    "--kms-key-id",
    "kms_key_ids",
    multiple=True,
    help="Accept only data keys of this KMS key (id or ARN; repeatable). "
    "Default: the KMS key named in the header.",
)
@click.option(
    "--context",
    "contexts",
    multiple=True,
    metavar="KEY=VALUE",
    help="Require this encryption-context entry (repeatable). For s3:// inputs the "
    "bucket and key are always required to match the URI.",
)
@click.option("--endpoint-url", help="S3-compatible endpoint.")
@click.option("--kms-endpoint-url", help="KMS endpoint.")
@click.option("--region", help="AWS region.")
@click.option("--profile", "aws_profile", help="AWS profile for credentials.")
def decrypt(
    source: str,
    output: str | None,
    key_file: str | None,
    key_env: str | None,
    kms_key_ids: tuple[str, ...],
    contexts: tuple[str, ...],
    endpoint_url: str | None,
    kms_endpoint_url: str | None,
    region: str | None,
    aws_profile: str | None,
) -> None:
    """Decrypt INPUT (a local file or s3://bucket/key) written by target-dativo-s3.

    Each frame is authenticated before its plaintext is written. To stdout, a failure
    after the first frames leaves a partial output and exits non-zero: discard it. With
    -o, the file appears only if the whole object verified.
    """
    aws: dict[str, Any] = {
        "endpoint_url": endpoint_url,
        "kms_endpoint_url": kms_endpoint_url,
        "region": region,
        "aws_profile": aws_profile,
        "key_file": key_file,
        "key_env": key_env,
    }
    expected = _parse_context(contexts)
    if not source.startswith("s3://") and not Path(source).is_file():
        raise click.ClickException(f"{source}: no such file (or use s3://bucket/key)")
    # The crypto and AWS modules cost ~75 ms to import: only this command pays for them.
    from dativo_bridge.crypto.aws import decryption_providers
    from dativo_bridge.crypto.reading import iter_plaintext

    try:
        providers = decryption_providers(aws, kms_key_ids)
        chunks = iter_plaintext(source, providers, expected_context=expected, aws=aws)
        with _output(output) as out:
            for chunk in chunks:
                out.write(chunk)
    except DativoError as exc:
        raise click.ClickException(str(exc)) from None
    except OSError as exc:
        raise click.ClickException(f"{source}: {exc.strerror or exc}") from None
