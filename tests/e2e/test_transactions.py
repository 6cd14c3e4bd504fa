"""Transactions through the connector process, as Flow's runtime drives them."""

from __future__ import annotations

import json
import os
import signal
from typing import Any

import psycopg
import pytest

from materialize_postgres.rowcodec import published_at
from materialize_postgres.runner.runtime import ProcessConnector, Runtime, new_uuid
from tests.specs import binding, materialization, simple_collection


def doc(id_: int, name: str, op: str = "c", **extra: Any) -> dict[str, Any]:
    return {"id": id_, "name": name, "_meta": {"op": op, "uuid": new_uuid()}, **extra}


def things(n: int, start: int = 0, name: str = "thing") -> list[tuple[str, Any]]:
    return [("acme/things", doc(i, f"{name}-{i}", score=i / 2)) for i in range(start, start + n)]


def ckpt(n: int) -> dict[str, Any]:
    return {"sources": {"acme/things/pivot=00;materialize/acme/mat/things": {"readThrough": str(n)}}}


def setup(pg_database: Any, *, hard_delete: bool = False, delta: bool = False) -> Runtime:
    endpoint = pg_database.endpoint_config(hardDelete=hard_delete)
    spec = materialization(endpoint, binding("things", simple_collection(), delta=delta, document=not delta))
    Runtime(ProcessConnector(), spec).validate_and_apply()
    return Runtime(ProcessConnector(), spec)


def table(pg_database: Any, sql: str = 'SELECT id, name, "_meta/op" FROM things ORDER BY id') -> list[tuple]:
    with psycopg.connect(pg_database.dsn) as conn:
        return conn.execute(sql).fetchall()


def test_inserts_updates_and_loads(pg_database: Any) -> None:
    rt = setup(pg_database)
    rt.open()
    rt.transaction(things(100), ckpt(1))
    rt.transaction(things(60, start=50, name="again"), ckpt(2))
    rt.close()
    assert rt.stats["loaded"] == 50  # keys 50..99 existed in the second transaction
    rows = table(pg_database)
    assert len(rows) == 110
    assert rows[49] == (49, "thing-49", "c") and rows[50] == (50, "again-50", "c") and rows[-1][0] == 109
    (doc_,) = table(pg_database, "SELECT flow_document FROM things WHERE id = 55")[0]
    assert doc_["name"] == "again-55" and doc_["score"] == 27.5


def test_hard_deletes_remove_rows_and_soft_deletes_keep_them(pg_database: Any) -> None:
    rt = setup(pg_database, hard_delete=True)
    rt.open()
    rt.transaction(things(5), ckpt(1))
    rt.transaction([("acme/things", doc(1, "x", op="d")), ("acme/things", doc(3, "x", op="d"))], ckpt(2))
    # Created and deleted in one transaction: never written.
    rt.transaction([("acme/things", doc(9, "new")), ("acme/things", doc(9, "new", op="d"))], ckpt(3))
    rt.close()
    assert [r[0] for r in table(pg_database)] == [0, 2, 4]


def test_soft_deletes(pg_database: Any) -> None:
    rt = setup(pg_database, hard_delete=False)
    rt.open()
    rt.transaction(things(3), ckpt(1))
    rt.transaction([("acme/things", doc(1, "gone", op="d"))], ckpt(2))
    rt.close()
    assert table(pg_database) == [(0, "thing-0", "c"), (1, "gone", "d"), (2, "thing-2", "c")]


def test_delta_updates_append_every_document(pg_database: Any) -> None:
    rt = setup(pg_database, delta=True)
    rt.open()
    rt.transaction(things(3) + things(3, name="dup"), ckpt(1))
    rt.transaction(things(2, name="later"), ckpt(2))
    rt.close()
    rows = table(pg_database, "SELECT id, name FROM things ORDER BY id, name")
    assert len(rows) == 8
    assert (0, "dup-0") in rows and (0, "later-0") in rows and (0, "thing-0") in rows


def test_empty_transactions_and_reopen(pg_database: Any) -> None:
    rt = setup(pg_database)
    rt.open()
    rt.transaction([], ckpt(1))
    rt.transaction(things(2), ckpt(2))
    rt.transaction([], ckpt(3))
    rt.close()
    again = Runtime(ProcessConnector(), rt.spec)
    assert again.open() == ckpt(3)
    again.close()


def test_kill_before_commit_leaves_no_trace(pg_database: Any) -> None:
    rt = setup(pg_database)
    rt.open()
    rt.transaction(things(10), ckpt(1))
    c = rt.connector
    assert isinstance(c, ProcessConnector) and c.proc is not None
    # A transaction that never reaches startCommit.
    c.acknowledge()
    c.flush()
    for _, d in things(5, start=100):
        import msgspec

        from materialize_postgres.protocol.messages import Store
        from materialize_postgres.runner.runtime import encode_doc, extract, pack

        bp = rt.bindings[0]
        c.store(
            Store(
                key_packed=pack(extract(d, bp.keys)),
                values_packed=pack(extract(d, bp.values)),
                doc=msgspec.Raw(encode_doc(d)),
            )
        )
    os.kill(c.proc.pid, signal.SIGKILL)
    c.proc.wait()
    c.proc = None
    assert len(table(pg_database)) == 10
    again = Runtime(ProcessConnector(), rt.spec)
    assert again.open() == ckpt(1)
    again.transaction(things(5, start=100), ckpt(2))
    again.close()
    assert len(table(pg_database)) == 15


def test_a_second_instance_fences_the_first(pg_database: Any) -> None:
    first = setup(pg_database)
    first.open()
    second = Runtime(ProcessConnector(), first.spec)
    second.open()
    with pytest.raises(RuntimeError, match="fenced off"):
        first.transaction(things(3), ckpt(1))
    second.transaction(things(2), ckpt(2))
    second.close()
    assert len(table(pg_database)) == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"load":{"keyPacked":', "line 4: malformed request"),
        (b'{"store":{"keyPacked":"FQE="}}', "line 4: unexpected 'store' message (expected load or flush)"),
        (b'{"load":{"binding":7,"keyPacked":"FQE="}}', "binding index 7 is out of range"),
        (b'{"bogus":{}}', "line 4: the request carries no known message"),
    ],
)
def test_protocol_errors_exit_non_zero_with_a_clear_last_line(pg_database: Any, line: bytes, message: str) -> None:
    rt = setup(pg_database)
    rt.open()
    c = rt.connector
    assert isinstance(c, ProcessConnector) and c.proc is not None and c.proc.stdin
    c.acknowledge()
    c.send(line)
    c.proc.stdin.close()
    assert c.proc.wait(timeout=30) != 0
    last = c.stderr_tail().strip().splitlines()[-1]
    assert message in json.loads(last)["msg"]
    assert json.loads(last)["level"] == "error"


def test_large_documents_merge_by_per_row_updates(pg_database: Any) -> None:
    rt = setup(pg_database)
    rt.open()
    big = "x" * 300_000
    rt.transaction([("acme/things", doc(i, f"big-{i}", blob=big, tags={"n": i})) for i in range(4)], ckpt(1))
    bigger = [doc(i, f"bigger-{i}", blob=big + "y", tags={"n": -i}) for i in range(2, 6)]
    rt.transaction([("acme/things", d) for d in bigger], ckpt(2))
    rt.close()
    rows = table(pg_database, "SELECT id, name, tags, length(flow_document::text) FROM things ORDER BY id")
    assert [r[1] for r in rows] == ["big-0", "big-1", "bigger-2", "bigger-3", "bigger-4", "bigger-5"]
    assert rows[3][2] == {"n": -3} and rows[3][3] > 300_000
    # Updated and inserted rows alike carry the publication time of their document's UUID.
    published = table(pg_database, "SELECT flow_published_at FROM things WHERE id >= 2 ORDER BY id")
    assert [p for (p,) in published] == [published_at(d["_meta"]["uuid"]) for d in bigger]


def test_no_flow_document_rebuilds_loaded_documents_from_columns(pg_database: Any) -> None:
    endpoint = pg_database.endpoint_config(advanced={"no_flow_document": True})
    spec = materialization(endpoint, binding("things", simple_collection(), document=False))
    Runtime(ProcessConnector(), spec).validate_and_apply()
    rt = Runtime(ProcessConnector(), spec)
    rt.open()
    rt.transaction(things(3), ckpt(1))
    c = rt.connector
    c.acknowledge()
    for key in rt.combine(things(2, start=1))[0]:
        c.load(0, key)
    loaded = sorted((json.loads(d) for _, d in c.flush()), key=lambda d: d["id"])
    c.start_commit(json.dumps(ckpt(2)).encode())
    rt.close()
    assert [d["id"] for d in loaded] == [1, 2]
    assert loaded[0]["name"] == "thing-1" and loaded[0]["score"] == 0.5
    assert "tags" not in loaded[0]  # absent optional fields stay absent


def test_large_values_are_compressed_with_lz4_unless_a_column_chose_otherwise(pg_database: Any) -> None:
    rt = setup(pg_database)
    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        conn.execute("ALTER TABLE things ALTER COLUMN tags SET COMPRESSION pglz")
        # A server built without LZ4 (the embedded one) keeps its default.
        lz4 = conn.execute(
            "SELECT 'lz4' = ANY(enumvals) FROM pg_settings WHERE name = 'default_toast_compression'"
        ).fetchone()
    expected = "lz4" if lz4 and lz4[0] else "pglz"
    rt.open()
    text = json.dumps([f"item {i}" for i in range(20_000)])  # compressible, well over TOAST's 2 KB
    rt.transaction([("acme/things", doc(1, "big", tags={"t": text}))], ckpt(1))
    rt.transaction(
        [
            ("acme/things", doc(2, "big", tags={"t": text})),
            ("acme/things", doc(1, "again", tags={"t": text + "!"})),
        ],
        ckpt(2),
    )
    rt.close()
    rows = table(
        pg_database,
        "SELECT id, pg_column_compression(flow_document), pg_column_compression(tags) FROM things ORDER BY id",
    )
    # Inserted and updated documents alike; the column set to pglz by hand keeps it.
    assert rows == [(1, expected, "pglz"), (2, expected, "pglz")]
