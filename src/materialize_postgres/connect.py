"""Connections to PostgreSQL from an endpoint config: TLS, SSH tunnel, credentials, timeouts.

Everything about reaching the server lives here, so that a connection made for Validate, Apply,
the transactor or `check` behaves the same, and so that errors are turned, in one place, into
messages that say what to fix and never contain a secret.
"""

from __future__ import annotations

import atexit
import contextlib
import os
import re
import ssl
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import psycopg
from psycopg import errors as pgerr

from . import __version__, pgtypes
from .config import AWSIAM, GCPIAM, AzureIAM, EndpointConfig

CONNECT_TIMEOUT_S = 20
KEEPALIVES = {"keepalives": 1, "keepalives_idle": 120, "keepalives_interval": 30, "keepalives_count": 6}


class ConnectError(RuntimeError):
    """The database could not be reached or refused us; the message says what to fix."""


@dataclass
class Target:
    """Where to connect. Through an SSH tunnel, `host`/`port` are the local end of the forward
    and `via_tunnel` is set; TLS host name checks and IAM tokens still use the database's own
    address from the config."""

    host: str
    port: int
    via_tunnel: bool = False


def _password(cfg: EndpointConfig) -> str | None:
    creds = cfg.credentials
    if isinstance(creds, AWSIAM | GCPIAM | AzureIAM):
        from .iam import token_for

        host, port = cfg.host_port()  # tokens are signed for the database, never the tunnel
        return token_for(creds, user=cfg.user, host=host, port=port)
    return cfg.password_value()


def connection_kwargs(cfg: EndpointConfig, target: Target, *, application: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "host": target.host,
        "port": target.port,
        **_tunnel_addressing(cfg, target),
        "user": cfg.user,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": f"materialize-postgres {__version__} {application}"[:63],
        **KEEPALIVES,
    }
    if cfg.database:
        kwargs["dbname"] = cfg.database
    password = _password(cfg)
    if password:
        kwargs["password"] = password
    sslmode = cfg.advanced.sslmode
    if sslmode is None and isinstance(cfg.credentials, GCPIAM | AzureIAM):
        sslmode = "require"
    if sslmode:
        kwargs["sslmode"] = sslmode
        if sslmode in ("verify-ca", "verify-full"):
            kwargs["sslrootcert"] = _root_cert(cfg)
    return kwargs


def _tunnel_addressing(cfg: EndpointConfig, target: Target) -> dict[str, Any]:
    """Through a tunnel, connect to the forward's address but name the database host, so that
    verify-full checks the certificate against the name the user configured."""
    if not target.via_tunnel:
        return {}
    host, _ = cfg.host_port()
    return {"host": host, "hostaddr": target.host}


_root_cert_files: dict[str, str] = {}


def _root_cert(cfg: EndpointConfig) -> str:
    """A user-supplied CA (PEM text) in a file for libpq; otherwise the system trust store's bundle."""
    pem = cfg.advanced.sslrootcert
    if not pem:
        return _system_ca_file()
    path = _root_cert_files.get(pem)
    if path is None or not os.path.exists(path):
        fd, path = tempfile.mkstemp(prefix="materialize-postgres-ca-", suffix=".pem")
        with os.fdopen(fd, "w") as f:
            f.write(pem)
        _root_cert_files[pem] = path
        atexit.register(_remove, path)  # libpq needs a file; it must not outlive the process
    return path


def _remove(path: str) -> None:
    with contextlib.suppress(OSError):
        os.unlink(path)


def _system_ca_file() -> str:
    """The operating system's CA bundle, named as a file.

    libpq's `sslrootcert=system` is not used: psycopg-binary's bundled OpenSSL looks in its own
    directory (/usr/lib/psycopg-openssl), which does not exist, so it would trust nothing; and
    libpq rejects verify-ca with `system`. SSL_CERT_FILE wins, as it does for OpenSSL.
    """
    paths = ssl.get_default_verify_paths()
    candidates = [os.environ.get("SSL_CERT_FILE"), paths.cafile, paths.openssl_cafile]
    candidates += ["/etc/ssl/certs/ca-certificates.crt", "/etc/pki/tls/certs/ca-bundle.crt", "/etc/ssl/cert.pem"]
    for candidate in candidates:
        if candidate and os.path.isfile(candidate):
            return candidate
    return "system"


@contextlib.contextmanager
def endpoint(cfg: EndpointConfig) -> Iterator[Target]:
    """The address to connect to: the configured one, or a local SSH forward to it."""
    host, port = cfg.host_port()
    ssh = cfg.ssh()
    if ssh is None or not ssh.sshEndpoint:
        yield Target(host, port)
        return
    from .tunnel import open_tunnel

    with open_tunnel(ssh, host, port) as (local_host, local_port):
        yield Target(local_host, local_port, via_tunnel=True)


def connect(cfg: EndpointConfig, target: Target, *, application: str, autocommit: bool = False) -> psycopg.Connection:
    kwargs = connection_kwargs(cfg, target, application=application)
    try:
        conn = psycopg.connect(autocommit=autocommit, **kwargs)
    except psycopg.Error as err:
        raise ConnectError(explain(err, cfg, target)) from None
    pgtypes.register(conn)
    return conn


def explain(err: BaseException, cfg: EndpointConfig, target: Target | None = None) -> str:
    """A user-facing reason for a connection failure, free of secrets.

    libpq reports one line per address tried (e.g. ::1 refused, then 127.0.0.1 failed TLS), so
    reasons that prove a server answered (authentication, TLS) are looked for before network ones.
    """
    raw = str(err)
    address = cfg.address
    for reason in (_auth_reason, _tls_reason, _network_reason):
        message = reason(err, raw, cfg)
        if message:
            return message
    return f"cannot connect to {address} as {cfg.user!r}: {_detail(raw, cfg)}"


def _auth_reason(err: BaseException, raw: str, cfg: EndpointConfig) -> str | None:
    address = cfg.address
    if isinstance(err, pgerr.InvalidPassword) or "password authentication failed" in raw:
        return f"incorrect username or password for user {cfg.user!r} at {address}"
    if "no password supplied" in raw:
        return f"the server at {address} asks user {cfg.user!r} for a password, but none is configured"
    if isinstance(err, pgerr.InvalidCatalogName) or re.search(r'database ".*" does not exist', raw):
        return f"database {cfg.database!r} does not exist on {address}; create it or fix 'database'"
    refused_by_hba = "no pg_hba.conf entry" in raw or "pg_hba.conf rejects connection" in raw
    if refused_by_hba and "no encryption" in raw:
        return f"the server at {address} requires TLS: set advanced.sslmode to require (or verify-full)"
    if refused_by_hba:
        rule = _detail(raw, cfg)
        return f"the server at {address} does not accept user {cfg.user!r} from this host (pg_hba.conf): {rule}"
    return None


# OpenSSL's words for a certificate chain it could not verify against the trusted CAs. A CA
# with the right name but the wrong key shows up as a signature failure.
_UNTRUSTED = (
    "certificate verify failed",
    "provider signature failure",
    "bad signature",
    "unable to get local issuer certificate",
    "self-signed certificate",
    "self signed certificate",
    "root certificate file",
)


def _tls_reason(err: BaseException, raw: str, cfg: EndpointConfig) -> str | None:
    address, mode = cfg.address, cfg.advanced.sslmode or "require"
    if "server does not support SSL" in raw:
        return (
            f"the server at {address} does not support TLS, but sslmode {mode!r} requires it: "
            "enable ssl on the server or choose sslmode prefer/disable"
        )
    if "does not match host name" in raw:
        return (
            f"the TLS certificate of {address} does not match its host name ({_detail(raw, cfg)}): "
            "connect with a name on the certificate, or use sslmode verify-ca"
        )
    if any(marker in raw for marker in _UNTRUSTED):
        source = "advanced.sslrootcert" if cfg.advanced.sslrootcert else "the system trust store"
        return (
            f"the TLS certificate of {address} is not trusted by {source} ({_detail(raw, cfg)}): set "
            "advanced.sslrootcert to the PEM of the CA that signed it, or use sslmode require"
        )
    return None


def _network_reason(err: BaseException, raw: str, cfg: EndpointConfig) -> str | None:
    address = cfg.address
    if "timeout expired" in raw or "timed out" in raw:
        return f"connection to host at address {address!r} timed out (incorrect host or port, or a firewall?)"
    if "Connection refused" in raw:
        return f"connection to {address} was refused: is PostgreSQL listening on that host and port?"
    if "could not translate host name" in raw or "Name or service not known" in raw:
        return f"the host in address {address!r} could not be resolved: check the host name"
    if "server closed the connection unexpectedly" in raw and cfg.ssh() is not None:
        return f"the SSH tunnel to {address} closed the connection: check the tunnel's logs and the address"
    return None


def _detail(raw: str, cfg: EndpointConfig) -> str:
    """libpq's reason for the last address tried, without its "connection to server at" preamble."""
    attempts = [line for line in raw.splitlines() if " failed: " in line]
    detail = attempts[-1].rpartition(" failed: ")[2] if attempts else raw
    return _scrub(detail.strip() or raw.strip(), cfg)


def _scrub(text: str, cfg: EndpointConfig) -> str:
    secret = cfg.password_value()
    # Very short secrets would mangle ordinary words; libpq never echoes a password anyway.
    if secret and len(secret) >= 3:
        text = text.replace(secret, "********")
    return text
