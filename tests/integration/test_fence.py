"""Fencing in flow_checkpoints_v1 reproduces the Go connector's rows for Estuary's four key-range
cases, hands back the inherited checkpoint on Open, and commits only under the current fence."""

from __future__ import annotations

import json
from typing import Any

import msgspec
import psycopg
import pytest

from materialize_postgres.checkpoint import json_to_stored, stored_to_json
from materialize_postgres.driver import Session
from materialize_postgres.protocol.messages import MaterializationSpec, Open, RangeSpec, raw
from materialize_postgres.sql.ddl import checkpoints_table
from materialize_postgres.transactor import FencedOff
from tests.shared_data import estuary_json

CASES = ["exact_match", "split_from_parent", "straddle", "covered_child"]


def session(endpoint: dict[str, Any], name: str, begin: int, end: int) -> Session:
    spec = msgspec.json.decode(json.dumps({"name": name, "config": endpoint}), type=MaterializationSpec)
    return Session(Open(materialization=spec, range=RangeSpec(key_begin=begin, key_end=end), state=raw({})))


def create_checkpoints(conn: psycopg.Connection) -> None:
    create, _ = checkpoints_table(["public", "flow_checkpoints_v1"])
    conn.execute(create)


def rows(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute(
        "SELECT materialization, key_begin, key_end, fence, checkpoint FROM flow_checkpoints_v1 "
        "ORDER BY materialization, key_begin, key_end"
    ).fetchall()


@pytest.mark.parametrize("case", CASES)
def test_estuary_fence_cases(case: str, pg_database: Any, pg_conn: psycopg.Connection) -> None:
    data = estuary_json("fence/expected.json")
    c = data["cases"][case]
    # Go's fixture checkpoints are opaque bytes; give each a distinct, valid checkpoint instead.
    valid: dict[str, str] = {}

    def substitute(original: str) -> str:
        if original not in valid:
            valid[original] = json_to_stored(json.dumps({"sources": {f"j{len(valid)}": {"readThrough": "7"}}}))
        return valid[original]

    create_checkpoints(pg_conn)
    for r in c["afterInstallingFixtures"]:
        pg_conn.execute(
            "INSERT INTO flow_checkpoints_v1 VALUES (%s, %s, %s, %s, %s)",
            [r["materialization"], r["key_begin"], r["key_end"], r["fence"], substitute(r["checkpoint"])],
        )

    begin, end = c["rangeUnderTest"]
    s = session(pg_database.endpoint_config(), data["materialization"], begin, end)
    try:
        expected = [
            (r["materialization"], r["key_begin"], r["key_end"], r["fence"], substitute(r["checkpoint"]))
            for r in c["afterInstallFenceUnderTest"]
        ]
        assert rows(pg_conn) == sorted(expected)
        ours = next(r for r in expected if (r[1], r[2]) == (begin, end) and r[0] == data["materialization"])
        assert json.loads(bytes(s.opened.runtime_checkpoint)) == json.loads(stored_to_json(ours[4]))

        new_checkpoint = {"sources": {"next": {"readThrough": "99"}}}
        s.transactor.start_commit(json.dumps(new_checkpoint).encode())
    finally:
        s.close()
    after = {(r[0], r[1], r[2]): r for r in rows(pg_conn)}
    for r in c["afterUpdate"]:
        key = (r["materialization"], r["key_begin"], r["key_end"])
        if key == (data["materialization"], begin, end):
            assert after[key][3] == r["fence"]
            assert json.loads(stored_to_json(after[key][4])) == new_checkpoint
        else:
            assert after[key][3:] == (r["fence"], substitute(r["checkpoint"]))


def test_a_newer_instance_fences_off_the_older(pg_database: Any, pg_conn: psycopg.Connection) -> None:
    create_checkpoints(pg_conn)
    endpoint = pg_database.endpoint_config()
    first = session(endpoint, "acme/mat", 0, 0xFFFFFFFF)
    second = session(endpoint, "acme/mat", 0, 0xFFFFFFFF)
    try:
        with pytest.raises(FencedOff, match="fenced off"):
            first.transactor.start_commit(b'{"sources":{"zombie":{"readThrough":"1"}}}')
        second.transactor.start_commit(b'{"sources":{"live":{"readThrough":"2"}}}')
    finally:
        first.close()
        second.close()
    (row,) = rows(pg_conn)
    assert row[3] == 1
    assert json.loads(stored_to_json(row[4])) == {"sources": {"live": {"readThrough": "2"}}}


def test_a_split_child_inherits_its_parents_checkpoint(pg_database: Any, pg_conn: psycopg.Connection) -> None:
    create_checkpoints(pg_conn)
    endpoint = pg_database.endpoint_config()
    parent = session(endpoint, "acme/mat", 0, 0xFFFFFFFF)
    parent.transactor.start_commit(b'{"sources":{"j":{"readThrough":"500"}}}')
    parent.close()
    left = session(endpoint, "acme/mat", 0, 0x7FFFFFFF)
    right = session(endpoint, "acme/mat", 0x80000000, 0xFFFFFFFF)
    try:
        for child in (left, right):
            assert json.loads(bytes(child.opened.runtime_checkpoint)) == {"sources": {"j": {"readThrough": "500"}}}
        left.transactor.start_commit(b'{"sources":{"j":{"readThrough":"600"}}}')
        right.transactor.start_commit(b'{"sources":{"j":{"readThrough":"700"}}}')
    finally:
        left.close()
        right.close()
    assert [(r[1], r[2]) for r in rows(pg_conn)] == [(0, 0x7FFFFFFF), (0, 0xFFFFFFFF), (0x80000000, 0xFFFFFFFF)]
