"""A PostgreSQL restart in the middle of a transaction: the connector exits with an error that
says what happened, the transaction in flight leaves no trace, and the next session resumes from
the last committed checkpoint with nothing lost or duplicated.

The test runs its own embedded server, so that it can restart it without disturbing others."""

from __future__ import annotations

import random
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from materialize_postgres.embedded import EmbeddedPostgres, free_port
from materialize_postgres.runner.runtime import ProcessConnector, Runtime
from tests.e2e.test_faults import FaultyConnector, expected_state, table_state, workload
from tests.specs import binding, materialization, simple_collection


@pytest.fixture
def server() -> Iterator[EmbeddedPostgres]:
    parent = Path(tempfile.mkdtemp(prefix="materialize-pg-restart-"))
    pg = EmbeddedPostgres(parent / "pgdata", port=free_port())  # a fixed port: it must survive restarts
    try:
        pg.start()
        yield pg
    finally:
        pg.stop()
        shutil.rmtree(parent, ignore_errors=True)


def test_a_restart_mid_transaction_fails_clearly_and_loses_nothing_committed(server: EmbeddedPostgres) -> None:
    endpoint = {
        "address": f"{server.host}:{server.port}",
        "user": server.user,
        "password": "unused",  # the embedded server trusts loopback
        "database": "postgres",
        "hardDelete": True,
    }
    spec = materialization(endpoint, binding("things", simple_collection()))
    Runtime(ProcessConnector(), spec).validate_and_apply()
    txns = workload(random.Random(5), 6)
    txns = [t for t in txns if t][:4]

    def restart(c: ProcessConnector) -> bool:
        server.stop()
        server.start()
        return False  # the session goes on: the connector must notice by itself

    # Commit two transactions, then restart the server after a few messages of the third.
    connector = FaultyConnector(10**9, restart)
    rt = Runtime(connector, spec)
    rt.open()
    for i in range(2):
        rt.transaction(txns[i], {"sources": {"input": {"readThrough": str(i)}}})
    connector.countdown = 3
    with pytest.raises(RuntimeError):
        rt.transaction(txns[2], {"sources": {"input": {"readThrough": "2"}}})
    assert connector.proc is not None
    assert connector.proc.wait(timeout=60) != 0
    log = connector.stderr_tail()
    assert "lost the connection to PostgreSQL" in log, log
    assert "resumes from the last committed checkpoint" in log
    connector.proc = None

    dsn = server.dsn()
    assert table_state(dsn) == expected_state(txns[:2]), "the transaction in flight left a trace"

    rt = Runtime(ProcessConnector(), spec)
    checkpoint = rt.open()
    assert checkpoint["sources"]["input"]["readThrough"] == "1"
    for i in range(2, len(txns)):
        rt.transaction(txns[i], {"sources": {"input": {"readThrough": str(i)}}})
    rt.close()
    assert table_state(dsn) == expected_state(txns)
