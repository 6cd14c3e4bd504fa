"""The settings of the connector's own sessions: what they are, and that a refused one costs only
speed, never the session."""

from __future__ import annotations

from typing import Any

import psycopg

from materialize_postgres import transactor
from materialize_postgres.runner.runtime import InProcessConnector, Runtime
from tests.specs import binding, materialization, simple_collection


def test_sessions_run_without_jit_with_room_to_sort_and_lz4_where_offered(pg_database: Any) -> None:
    spec = materialization(pg_database.endpoint_config(), binding("things", simple_collection()))
    rt = Runtime(InProcessConnector(), spec)
    rt.validate_and_apply()
    rt.open()
    t = rt.connector.session.transactor
    try:
        lz4 = t.store_conn.execute(
            "SELECT count(*) FROM pg_settings WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)"
        ).fetchone()[0]
        for conn in (t.load_conn, t.store_conn):
            assert conn.execute("SHOW jit").fetchone() == ("off",)
            assert conn.execute("SHOW statement_timeout").fetchone() == ("0",)
            size = conn.execute("SELECT pg_size_bytes(current_setting('work_mem'))").fetchone()[0]
            assert size >= transactor.SORT_MEMORY
        compression = t.store_conn.execute("SHOW default_toast_compression").fetchone()[0]
        assert compression == ("lz4" if lz4 else "pglz")
    finally:
        rt.close()


def test_a_refused_setting_leaves_the_session_and_earlier_settings_alone(pg_database: Any) -> None:
    with psycopg.connect(pg_database.dsn) as conn:
        transactor._try_setting(conn, "SET jit = off")
        transactor._try_setting(conn, "SET no_such.setting_at_all TO DEFAULT; SELECT 1/0")
        assert conn.execute("SHOW jit").fetchone() == ("off",)
        assert conn.execute("SELECT 1").fetchone() == (1,)
