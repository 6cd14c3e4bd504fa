"""Resource hygiene: a long session (thousands of transactions) grows neither the connector's
memory nor the server-side objects it holds; every exit path leaves nothing behind."""

from __future__ import annotations

import os
import signal
from pathlib import Path
from typing import Any

import psycopg

from materialize_postgres.runner.runtime import ProcessConnector, Runtime, new_uuid
from tests.specs import binding, materialization, simple_collection

TRANSACTIONS = int(os.environ.get("LONG_SESSION_TRANSACTIONS", "2000"))


def rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def server_objects(dsn: str) -> tuple[int, int]:
    """Temporary relations and sessions of connector connections."""
    with psycopg.connect(dsn) as conn:
        (temps,) = conn.execute("SELECT count(*) FROM pg_class WHERE relpersistence = 't'").fetchone() or (0,)
        (sessions,) = conn.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name LIKE 'materialize-postgres%'"
        ).fetchone() or (0,)
    return temps, sessions


def batch(t: int) -> list[tuple[str, Any]]:
    return [
        ("acme/things", {"id": (t * 7 + i) % 500, "name": f"n{t}", "_meta": {"op": "u", "uuid": new_uuid()}})
        for i in range(5)
    ]


def test_thousands_of_transactions_hold_steady(pg_database: Any) -> None:
    spec = materialization(pg_database.endpoint_config(), binding("things", simple_collection()))
    Runtime(ProcessConnector(), spec).validate_and_apply()
    connector = ProcessConnector()
    rt = Runtime(connector, spec)
    rt.open()
    assert connector.proc is not None
    warm = TRANSACTIONS // 5
    for t in range(TRANSACTIONS):
        rt.transaction(batch(t), {"sources": {"s": {"readThrough": str(t)}}})
        if t == warm:
            rss_then, objects_then = rss_kb(connector.proc.pid), server_objects(pg_database.dsn)
    rss_now, objects_now = rss_kb(connector.proc.pid), server_objects(pg_database.dsn)
    print(f"connector RSS {rss_then} kB after {warm} transactions, {rss_now} kB after {TRANSACTIONS}")
    assert rss_now - rss_then < 8 * 1024, "connector memory grows with the number of transactions"
    assert objects_now == objects_then, "server-side objects accumulate"
    rt.close()
    assert server_objects(pg_database.dsn) == (0, 0), "connections or temp tables outlive a clean exit"


def test_a_killed_connector_leaves_no_sessions_behind(pg_database: Any) -> None:
    spec = materialization(pg_database.endpoint_config(), binding("things", simple_collection()))
    Runtime(ProcessConnector(), spec).validate_and_apply()
    connector = ProcessConnector()
    rt = Runtime(connector, spec)
    rt.open()
    rt.transaction(batch(0), {})
    assert connector.proc is not None
    os.kill(connector.proc.pid, signal.SIGKILL)
    connector.proc.wait()
    connector.proc = None
    # The server notices the closed sockets; temp tables go with their sessions.
    for _ in range(50):
        if server_objects(pg_database.dsn) == (0, 0):
            break
        import time

        time.sleep(0.1)
    assert server_objects(pg_database.dsn) == (0, 0)
