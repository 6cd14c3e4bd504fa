"""The embedded PostgreSQL server (loopback only, reusable data dir) and the database fixtures."""

from __future__ import annotations

import shutil
import socket
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

import psutil
import psycopg
import pytest

from materialize_postgres.embedded import EmbeddedPostgres, EmbeddedPostgresError, default_data_dir, free_port

if TYPE_CHECKING:  # Only for annotations: importing conftest at run time would load a second copy of it.
    from tests.conftest import PgDatabase, PgServer


@pytest.fixture
def data_dir() -> Iterator[Path]:
    # A fresh /tmp dir rather than tmp_path: pytest's 0700 roots would need opening up for the postgres user.
    parent = Path(tempfile.mkdtemp(prefix="materialize-pg-test-"))
    try:
        yield parent / "pgdata"
    finally:
        EmbeddedPostgres(parent / "pgdata").stop()  # Whatever a failed test left running.
        shutil.rmtree(parent, ignore_errors=True)


def query(dsn: str, statement: str) -> list[tuple]:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        return conn.execute(statement).fetchall()


def run(dsn: str, statement: str) -> None:
    with psycopg.connect(dsn, autocommit=True, connect_timeout=5) as conn:
        conn.execute(statement)


def postmaster(pg: EmbeddedPostgres) -> psutil.Process:
    return psutil.Process(int((pg.data_dir / "postmaster.pid").read_text().split()[0]))


def accepts(port: int) -> bool:
    try:
        socket.create_connection(("127.0.0.1", port), timeout=2).close()
        return True
    except OSError:
        return False


def test_serves_postgres_18_on_loopback_only(data_dir: Path) -> None:
    with EmbeddedPostgres(data_dir) as pg:
        assert (pg.host, pg.user) == ("127.0.0.1", "postgres")
        assert query(pg.dsn(), "SHOW listen_addresses") == [("127.0.0.1",)]
        assert query(pg.dsn(), "SHOW unix_socket_directories") == [("",)]
        ((version,),) = query(pg.dsn(), "SELECT current_setting('server_version_num')::int")
        assert version >= 180000
        listening = {c.laddr for c in postmaster(pg).net_connections(kind="inet") if c.status == psutil.CONN_LISTEN}
        assert listening == {("127.0.0.1", pg.port)}
        assert query(pg.dsn(), "SHOW server_encoding") == [("UTF8",)]
        port = pg.port
    assert not accepts(port)
    assert not (data_dir / "postmaster.pid").exists()


def test_a_data_dir_is_reused_across_stop_and_start(data_dir: Path) -> None:
    pg = EmbeddedPostgres(data_dir)
    pg.start()
    run(pg.dsn(), "CREATE TABLE kept (id int PRIMARY KEY, v text); INSERT INTO kept VALUES (1, 'one')")
    initialised = (data_dir / "PG_VERSION").stat().st_mtime_ns
    pg.stop()
    pg.stop()  # Idempotent.

    again = EmbeddedPostgres(data_dir)
    again.start()
    again.start()  # Idempotent.
    try:
        assert query(again.dsn(), "SELECT id, v FROM kept") == [(1, "one")]
        assert (data_dir / "PG_VERSION").stat().st_mtime_ns == initialised  # No second initdb.
    finally:
        again.stop()


def test_a_running_server_is_adopted_not_restarted(data_dir: Path) -> None:
    first = EmbeddedPostgres(data_dir)
    first.start()
    try:
        pid = postmaster(first).pid
        with EmbeddedPostgres(data_dir) as second:
            assert second.port == first.port
            assert not second.started_here
            assert postmaster(second).pid == pid
        # Leaving the adopter's context does not stop a server it did not start.
        assert query(first.dsn(), "SELECT 1") == [(1,)]
    finally:
        first.stop()
    assert not psutil.pid_exists(pid)


def test_a_given_port_and_server_options(data_dir: Path) -> None:
    port = free_port()
    prefix = "%m [%p] it's quoted "  # Spaces and a quote: options pass through pg_ctl's shell intact.
    with EmbeddedPostgres(data_dir, port=port, options={"log_line_prefix": prefix, "work_mem": "7MB"}) as pg:
        assert pg.port == port
        assert query(pg.dsn(), "SHOW log_line_prefix") == [(prefix,)]
        assert query(pg.dsn(), "SHOW work_mem") == [("7MB",)]


def test_a_failed_start_raises_with_the_server_log(data_dir: Path) -> None:
    pg = EmbeddedPostgres(data_dir, port=free_port(), options={"shared_buffers": "lots"})
    with pytest.raises(EmbeddedPostgresError, match="shared_buffers"):
        pg.start()
    with pytest.raises(EmbeddedPostgresError, match="not started"):
        _ = pg.port


def test_default_data_dir_is_under_the_working_directory(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert default_data_dir() == tmp_path / ".materialize-postgres" / "pgdata"


seen: list[str] = []


@pytest.mark.parametrize("run", [1, 2])
def test_each_test_gets_its_own_empty_database(
    run: int, pg_server: PgServer, pg_database: PgDatabase, pg_conn: psycopg.Connection
) -> None:
    assert pg_database.dsn == pg_server.dsn(pg_database.dbname)
    assert pg_conn.execute("SELECT current_database()").fetchone() == (pg_database.dbname,)
    # The same table in both runs: a shared database would make the second CREATE fail.
    pg_conn.execute("CREATE TABLE probe (run int)")
    pg_conn.execute("INSERT INTO probe VALUES (%s)", [run])
    assert pg_conn.execute("SELECT run FROM probe").fetchall() == [(run,)]
    # Earlier databases were dropped at their teardown.
    existing = {r[0] for r in pg_conn.execute("SELECT datname FROM pg_database").fetchall()}
    assert pg_database.dbname in existing
    assert not existing & set(seen)
    seen.append(pg_database.dbname)


def test_endpoint_config_points_at_the_test_database(pg_database: PgDatabase) -> None:
    assert pg_database.endpoint_config() == {
        "address": f"{pg_database.host}:{pg_database.port}",
        "user": "postgres",
        "database": pg_database.dbname,
        "password": "unused",
        "schema": "public",
    }
    assert pg_database.endpoint_config(schema="other", hardDelete=True)["schema"] == "other"
    assert pg_database.endpoint_config(hardDelete=True)["hardDelete"] is True
