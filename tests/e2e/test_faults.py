"""Exactly-once under faults: randomized sessions where the connector is killed, or its database
connections are cut, at arbitrary protocol steps. After each session the table must equal the
state computed independently from the input: nothing lost, nothing duplicated."""

from __future__ import annotations

import os
import random
import signal
from collections.abc import Callable
from typing import Any

import psycopg
import pytest

from materialize_postgres.protocol.messages import Store
from materialize_postgres.runner.runtime import ProcessConnector, Runtime, new_uuid, shard_ranges
from tests.proxy import Proxy
from tests.specs import binding, materialization, simple_collection

SESSIONS = int(os.environ.get("FAULT_SESSIONS", "8"))


class Fault(Exception):
    pass


class FaultyConnector(ProcessConnector):
    """A connector process that suffers `fault()` just before its n-th message is sent.

    A fault that returns True (a kill) ends the session there; one that returns False (a cut
    connection) lets the session go on, so the connector must notice and fail by itself.
    """

    def __init__(self, countdown: int, fault: Callable[[ProcessConnector], bool]) -> None:
        super().__init__()
        self.countdown, self.fault = countdown, fault

    def send(self, msg: Any) -> None:
        self.countdown -= 1
        if self.countdown == 0 and self.fault(self):
            raise Fault()
        super().send(msg)

    def store(self, msg: Store) -> None:
        self.send({"store": msg})


def kill(c: ProcessConnector) -> bool:
    assert c.proc is not None
    if c.proc.poll() is None:
        os.kill(c.proc.pid, signal.SIGKILL)
    c.proc.wait()
    return True


def workload(rng: random.Random, txns: int) -> list[list[tuple[str, Any]]]:
    """Random inserts, updates and deletes; deletes only of keys that exist before the transaction."""
    live: set[int] = set()
    out = []
    for t in range(txns):
        docs, touched = [], set()
        for _ in range(rng.randint(0, 40)):
            key = rng.randint(0, 60)
            if key in live and key not in touched and rng.random() < 0.2:
                docs.append(("acme/things", {"id": key, "name": "bye", "_meta": {"op": "d", "uuid": new_uuid()}}))
                live.discard(key)
            else:
                docs.append(
                    ("acme/things", {"id": key, "name": f"t{t}-{key}", "_meta": {"op": "u", "uuid": new_uuid()}})
                )
                live.add(key)
            touched.add(key)
        out.append(docs)
    return out


def expected_state(txns: list[list[tuple[str, Any]]]) -> dict[int, str]:
    state: dict[int, str] = {}
    for docs in txns:
        for _, d in docs:
            if d["_meta"]["op"] == "d":
                state.pop(d["id"], None)
            else:
                state[d["id"]] = d["name"]
    return state


def run_with_faults(
    spec: Any, txns: list[list[tuple[str, Any]]], rng: random.Random, make_fault: Callable[[], Any]
) -> int:
    faults = 0
    done = -1
    while done < len(txns) - 1:
        connector = FaultyConnector(rng.randint(1, 120), make_fault())
        rt = Runtime(connector, spec)
        try:
            checkpoint = rt.open()
            # Offsets are 1-based: a readThrough of 0 is protobuf's default, which its JSON omits,
            # so a checkpoint of "0" reads back as nothing read (as it would in Flow).
            done = int(checkpoint.get("sources", {}).get("input", {}).get("readThrough", "0")) - 1
            for i in range(done + 1, len(txns)):
                rt.transaction(txns[i], {"sources": {"input": {"readThrough": str(i + 1)}}})
                done = i
            connector.countdown = -1
            rt.close()
        except (Fault, RuntimeError, BrokenPipeError, OSError):
            faults += 1
            if connector.proc is not None:
                kill(connector)
                connector.proc = None
    return faults


def table_state(dsn: str) -> dict[int, str]:
    with psycopg.connect(dsn) as conn:
        rows = conn.execute("SELECT id, name FROM things").fetchall()
    state = dict(rows)
    assert len(state) == len(rows), "duplicated keys"
    return state


@pytest.mark.parametrize("fault", ["kill", "cut"])
def test_randomized_sessions_lose_and_duplicate_nothing(pg_database: Any, fault: str) -> None:
    proxy = Proxy(pg_database.host, pg_database.port)
    endpoint = pg_database.endpoint_config(hardDelete=True, address=f"127.0.0.1:{proxy.port}")
    spec = materialization(endpoint, binding("things", simple_collection()))
    Runtime(ProcessConnector(), spec).validate_and_apply()
    report = {"sessions": 0, "faults": 0, "rows": 0}
    try:
        for seed in range(SESSIONS):
            rng = random.Random(seed * 7919 + (fault == "cut"))
            with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
                conn.execute("TRUNCATE things; DELETE FROM flow_checkpoints_v1")
            txns = workload(rng, rng.randint(3, 8))

            def make_fault() -> Callable[[ProcessConnector], bool]:
                return kill if fault == "kill" else (lambda c: proxy.cut() or False)

            report["faults"] += run_with_faults(spec, txns, rng, make_fault)
            state = table_state(pg_database.dsn)
            assert state == expected_state(txns), f"session {seed}"
            report["sessions"] += 1
            report["rows"] += len(state)
    finally:
        proxy.close()
    print(f"fault={fault} {report}")
    assert report["faults"] > 0


def test_a_cut_connection_fails_the_connector_with_a_clear_error(pg_database: Any) -> None:
    proxy = Proxy(pg_database.host, pg_database.port)
    try:
        endpoint = pg_database.endpoint_config(address=f"127.0.0.1:{proxy.port}")
        spec = materialization(endpoint, binding("things", simple_collection()))
        Runtime(ProcessConnector(), spec).validate_and_apply()
        connector = ProcessConnector()
        rt = Runtime(connector, spec)
        rt.open()
        rt.transaction(workload(random.Random(1), 1)[0], {"sources": {"input": {"readThrough": "0"}}})
        proxy.cut()
        with pytest.raises(RuntimeError) as err:
            rt.transaction(workload(random.Random(2), 1)[0], {"sources": {"input": {"readThrough": "1"}}})
        # The first load after the cut already reaches PostgreSQL: keys stream as they come.
        assert "lost the connection to PostgreSQL while handling 'load'" in str(err.value)
        assert "Nothing of the open transaction was committed" in str(err.value)
    finally:
        proxy.close()


def test_a_shard_split_mid_stream_loses_and_duplicates_nothing(pg_database: Any) -> None:
    """One shard commits, then splits in two; each half resumes from the parent's checkpoint and
    materializes only its own keys."""
    spec = materialization(pg_database.endpoint_config(hardDelete=True), binding("things", simple_collection()))
    Runtime(ProcessConnector(), spec).validate_and_apply()
    txns = workload(random.Random(11), 8)
    parent = Runtime(ProcessConnector(), spec)
    parent.open()
    for i in range(4):
        parent.transaction(txns[i], {"sources": {"input": {"readThrough": str(i)}}})
    parent.close()

    halves = [Runtime(ProcessConnector(), spec, key_range=r) for r in shard_ranges(2)]
    for half in halves:
        assert half.open()["sources"]["input"]["readThrough"] == "3", "a child inherits its parent's checkpoint"
    for i in range(4, len(txns)):
        for half in halves:
            half.transaction(txns[i], {"sources": {"input": {"readThrough": str(i)}}})
    for half in halves:
        half.close()
    assert table_state(pg_database.dsn) == expected_state(txns)
    with psycopg.connect(pg_database.dsn) as conn:
        ranges = conn.execute(
            "SELECT key_begin, key_end FROM flow_checkpoints_v1 ORDER BY key_begin, key_end"
        ).fetchall()
    assert [(r.key_begin, r.key_end) for r in shard_ranges(2)] == [r for r in ranges if r != (0, 0xFFFFFFFF)]
