"""An Apply killed while its migration waits is finished by the next Apply, with the data kept."""

from __future__ import annotations

import signal
import subprocess
import sys
import time
from typing import Any

import msgspec
import psycopg

from tests.integration.test_migrations import _projection, apply, column, spec_with, store


def test_apply_killed_mid_migration_is_finished_by_the_next(pg_database: Any) -> None:
    endpoint = pg_database.endpoint_config()
    v1 = spec_with(endpoint, _projection({"types": ["integer"]}))
    apply(v1, None)
    store(v1, [{"id": i, "v": i} for i in range(1, 101)])
    v2 = spec_with(endpoint, _projection({"types": ["string"]}))
    request = b'{"apply":{"materialization":%s,"lastMaterialization":%s}}\n' % (
        msgspec.json.encode(v2),
        msgspec.json.encode(v1),
    )
    with psycopg.connect(pg_database.dsn) as reader:
        reader.execute("SELECT count(*) FROM things")  # holds a lock the migration must wait for
        proc = subprocess.Popen(
            [sys.executable, "-m", "materialize_postgres", "connector"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        assert proc.stdin is not None
        proc.stdin.write(b'{"spec":{"connectorType":"IMAGE"}}\n' + request)
        proc.stdin.flush()
        waiting = _wait_for_blocked_alter(pg_database.dsn)
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
        reader.rollback()
    _wait_for_backend_gone(pg_database.dsn, waiting)
    assert column(pg_database.dsn)[0] == "bigint"  # the killed Apply changed nothing
    apply(v2, v1)  # the re-run migrates, as the first would have
    assert column(pg_database.dsn) == ("text", [str(i) for i in range(1, 101)])
    assert apply(v2, v2) == ""


def _wait_for_blocked_alter(dsn: str) -> int:
    deadline = time.monotonic() + 30
    with psycopg.connect(dsn, autocommit=True) as conn:
        while time.monotonic() < deadline:
            row = conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE wait_event_type = 'Lock' AND query LIKE 'ALTER TABLE%'"
            ).fetchone()
            if row:
                return int(row[0])
            time.sleep(0.05)
    raise AssertionError("the connector's ALTER TABLE never waited on the lock")


def _wait_for_backend_gone(dsn: str, pid: int) -> None:
    # The orphaned backend runs its ALTER once the lock is free, then finds its client gone and
    # rolls back; the next Apply must not race it.
    deadline = time.monotonic() + 30
    with psycopg.connect(dsn, autocommit=True) as conn:
        while conn.execute("SELECT 1 FROM pg_stat_activity WHERE pid = %s", [pid]).fetchone():
            assert time.monotonic() < deadline, "the killed connector's backend lingers"
            time.sleep(0.05)
