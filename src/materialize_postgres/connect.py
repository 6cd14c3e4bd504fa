"""Connections to PostgreSQL from an endpoint config: TLS, SSH tunnel, credentials, timeouts.

Everything about reaching the server lives here, so that a connection made for Validate, Apply,
the transactor or `check` behaves the same, and so that errors are turned, in one place, into
messages that say what to fix and never contain a secret.
"""

from __future__ import annotations

import contextlib
import os
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
    host: str
    port: int


def _password(cfg: EndpointConfig, target: Target) -> str | None:
    creds = cfg.credentials
    if isinstance(creds, AWSIAM | GCPIAM | AzureIAM):
        from .iam import token_for

        return token_for(creds, user=cfg.user, host=target.host, port=target.port)
    return cfg.password_value()


def connection_kwargs(cfg: EndpointConfig, target: Target, *, application: str) -> dict[str, Any]:
    kwargs: dict[str, Any] = {
        "host": target.host,
        "port": target.port,
        "user": cfg.user,
        "connect_timeout": CONNECT_TIMEOUT_S,
        "application_name": f"materialize-postgres {__version__} {application}"[:63],
        **KEEPALIVES,
    }
    if cfg.database:
        kwargs["dbname"] = cfg.database
    password = _password(cfg, target)
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


_root_cert_files: dict[str, str] = {}


def _root_cert(cfg: EndpointConfig) -> str:
    """A user-supplied CA (PEM text) in a file for libpq; otherwise the system trust store."""
    pem = cfg.advanced.sslrootcert
    if not pem:
        return "system"
    if pem not in _root_cert_files:
        fd, path = tempfile.mkstemp(prefix="materialize-postgres-ca-", suffix=".pem")
        with os.fdopen(fd, "w") as f:
            f.write(pem)
        _root_cert_files[pem] = path
    return _root_cert_files[pem]


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
        yield Target(local_host, local_port)


def connect(cfg: EndpointConfig, target: Target, *, application: str, autocommit: bool = False) -> psycopg.Connection:
    kwargs = connection_kwargs(cfg, target, application=application)
    try:
        conn = psycopg.connect(autocommit=autocommit, **kwargs)
    except psycopg.Error as err:
        raise ConnectError(explain(err, cfg, target)) from None
    pgtypes.register(conn)
    return conn


def explain(err: BaseException, cfg: EndpointConfig, target: Target | None = None) -> str:
    """A user-facing reason for a connection failure, free of secrets."""
    address = cfg.address
    text = _scrub(str(err), cfg)
    if isinstance(err, pgerr.InvalidPassword) or "password authentication failed" in text:
        return f"incorrect username or password for user {cfg.user!r} at {address}"
    if isinstance(err, pgerr.InvalidCatalogName) or ("database" in text and "does not exist" in text):
        return f"database {cfg.database!r} does not exist on {address}; create it or fix 'database'"
    if "timeout expired" in text or "timed out" in text:
        return f"connection to host at address {address!r} timed out (incorrect host or port, or a firewall?)"
    if "Connection refused" in text:
        return f"connection to {address} was refused: is PostgreSQL listening on that host and port?"
    if "could not translate host name" in text or "Name or service not known" in text:
        return f"the host in address {address!r} could not be resolved: check the host name"
    if "server does not support SSL" in text:
        return (
            f"the server at {address} does not support TLS, but sslmode {cfg.advanced.sslmode!r} requires it: "
            "enable ssl on the server or choose sslmode prefer/disable"
        )
    if "certificate verify failed" in text or "root certificate" in text:
        return (
            f"the TLS certificate of {address} is not trusted: set advanced.sslrootcert to the CA that signed "
            f"it, or use sslmode require ({text.strip()})"
        )
    if "does not match host name" in text or "server certificate for" in text:
        return f"the TLS certificate of {address} does not match its host name ({text.strip()}): use the name on the certificate, or sslmode verify-ca"
    if "no pg_hba.conf entry" in text and "no encryption" in text:
        return f"the server at {address} requires TLS: set advanced.sslmode to require (or verify-full)"
    return f"cannot connect to {address} as {cfg.user!r}: {text.strip()}"


def _scrub(text: str, cfg: EndpointConfig) -> str:
    secret = cfg.password_value()
    if secret:
        text = text.replace(secret, "********")
    return text
