"""A PostgreSQL server that only accepts TLS over TCP, with certificates made for the test.

pgserver's build has no OpenSSL, so this uses a system PostgreSQL (Debian's `postgresql`
package, installed by scripts/test.sh; DATIVO_TEST_PG_BIN names another bin directory).
As root, the server runs as the `pgserver` system user, as pgserver itself does.
"""

from __future__ import annotations

import datetime as dt
import glob
import ipaddress
import os
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID


def postgres_bin() -> Path | None:
    """A PostgreSQL bin directory whose server was built with OpenSSL, if any."""
    configured = os.environ.get("DATIVO_TEST_PG_BIN")
    candidates = [configured] if configured else sorted(glob.glob("/usr/lib/postgresql/*/bin"))
    for directory in reversed(candidates):
        if directory and (Path(directory) / "postgres").exists():
            return Path(directory)
    return None


@dataclass
class TlsServer:
    port: int
    ca: Path  # the root certificate that signed the server's certificate
    other_ca: Path  # a root certificate that did not
    directory: Path
    bin: Path
    user: str | None

    def dsn(self, host: str = "localhost", **params: str) -> str:
        extra = " ".join(f"{k}={v}" for k, v in params.items())
        return f"host={host} port={self.port} user=postgres dbname=postgres {extra}".strip()

    def stop(self) -> None:
        _run([str(self.bin / "pg_ctl"), "-D", str(self.directory / "data"), "-m", "fast", "stop"],
             self.user, check=False)  # fmt: skip
        shutil.rmtree(self.directory, ignore_errors=True)


def _run(args: list[str], user: str | None, check: bool = True) -> None:
    subprocess.run(args, check=check, capture_output=True, user=user, timeout=120)


def _key_and_cert(
    name: str, issuer: tuple[ec.EllipticCurvePrivateKey, x509.Certificate] | None, ca: bool
) -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(issuer[1].subject if issuer else subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), True
        )
    else:
        # Only the DNS name: verify-full must fail when the server is reached by address.
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.DNSName("localhost")]), critical=False
        )
    signer = issuer[0] if issuer else key
    return key, builder.sign(signer, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def start() -> TlsServer:
    """Start the server (raises RuntimeError when no system PostgreSQL is available)."""
    bin_dir = postgres_bin()
    if bin_dir is None:
        raise RuntimeError("no system PostgreSQL (apt-get install postgresql)")
    user = None
    if os.geteuid() == 0:
        user = "pgserver"
        try:
            import pwd

            pwd.getpwnam(user)
        except KeyError:
            subprocess.run(["useradd", "-s", "/bin/bash", user], check=True, capture_output=True)
    directory = Path(tempfile.mkdtemp(prefix="dativo-pg-tls-"))
    directory.chmod(0o755)
    ca_key, ca_cert = _key_and_cert("dativo test CA", None, ca=True)
    _, other_cert = _key_and_cert("another CA", None, ca=True)
    key, cert = _key_and_cert("localhost", (ca_key, ca_cert), ca=False)
    (directory / "ca.crt").write_bytes(_pem(ca_cert))
    (directory / "other-ca.crt").write_bytes(_pem(other_cert))
    (directory / "server.crt").write_bytes(_pem(cert) + _pem(ca_cert))
    (directory / "server.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (directory / "server.key").chmod(0o600)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    if user is not None:
        shutil.chown(directory, user)
        for f in directory.iterdir():
            shutil.chown(f, user)
    data = directory / "data"
    _run([str(bin_dir / "initdb"), "-D", str(data), "-U", "postgres", "--auth=trust"], user)
    with open(data / "postgresql.conf", "a", encoding="utf-8") as conf:
        conf.write(
            f"listen_addresses = '127.0.0.1'\nport = {port}\n"
            f"unix_socket_directories = '{directory}'\nssl = on\n"
            f"ssl_cert_file = '{directory / 'server.crt'}'\n"
            f"ssl_key_file = '{directory / 'server.key'}'\nfsync = off\n"
        )
    # TLS only: a plain TCP connection is refused, so a read that works used TLS.
    (data / "pg_hba.conf").write_text(
        "local all all trust\n"
        "hostssl all all 127.0.0.1/32 trust\n"
        "hostnossl all all 127.0.0.1/32 reject\n",
        encoding="utf-8",
    )
    if user is not None:
        shutil.chown(data / "pg_hba.conf", user)
    _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(directory / "log"), "-w", "start"],
         user)  # fmt: skip
    ipaddress.ip_address("127.0.0.1")
    return TlsServer(
        port=port,
        ca=directory / "ca.crt",
        other_ca=directory / "other-ca.crt",
        directory=directory,
        bin=bin_dir,
        user=user,
    )
