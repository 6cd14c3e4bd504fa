"""Bad input fails loudly and cleanly: a non-zero exit, a last log line that names the message or
document and what is wrong, and nothing of the failed transaction committed."""

from __future__ import annotations

import json
import os
from typing import Any

import msgspec
import psycopg
import pytest

from materialize_postgres.protocol.messages import Store
from materialize_postgres.runner.runtime import ProcessConnector, Runtime, encode_doc, extract, pack
from tests.specs import binding, materialization, projection

TYPED = {
    "name": "acme/typed",
    "key": ["/id"],
    "projections": sorted(
        [
            projection("id", "/id", ["integer"], key=True),
            projection("label", "/label", ["string"]),
            projection("n", "/n", ["integer"], must=False),
            projection("x", "/x", ["number"], must=False),
            projection("day", "/day", ["string"], must=False, fmt="date"),
            projection("at", "/at", ["string"], must=False, fmt="date-time"),
            projection("span", "/span", ["string"], must=False, fmt="duration"),
            projection("ip", "/ip", ["string"], must=False, fmt="ipv4"),
            projection("mac", "/mac", ["string"], must=False, fmt="macaddr"),
            projection("uid", "/uid", ["string"], must=False, fmt="uuid"),
            projection("flow_document", "", ["object"]),
        ],
        key=lambda p: p["field"],
    ),
}


@pytest.fixture
def session(pg_database: Any) -> Any:
    spec = materialization(pg_database.endpoint_config(), binding("typed", TYPED))
    Runtime(ProcessConnector(), spec).validate_and_apply()
    rt = Runtime(ProcessConnector(), spec)
    rt.open()
    rt.transaction([("acme/typed", {"id": 1, "label": "good"})], {"sources": {"s": {"readThrough": "1"}}})
    yield rt
    if rt.connector.proc is not None:  # type: ignore[attr-defined]
        rt.connector.proc.kill()  # type: ignore[attr-defined]
        rt.connector.proc.wait()  # type: ignore[attr-defined]


def fail_with(rt: Runtime, lines: list[bytes]) -> str:
    """Send raw lines as the next transaction; return the connector's last log message."""
    c = rt.connector
    assert isinstance(c, ProcessConnector) and c.proc is not None and c.proc.stdin is not None
    c.acknowledge()
    for line in lines:
        c.proc.stdin.write(line + b"\n")
    c.proc.stdin.close()
    assert c.proc.wait(timeout=30) != 0
    last = json.loads(c.stderr_tail().strip().splitlines()[-1])
    assert last["level"] == "error"
    c.proc = None
    return str(last["msg"])


def store_line(rt: Runtime, doc: dict[str, Any], **flags: Any) -> bytes:
    bp = rt.bindings[0]
    msg = Store(
        key_packed=pack(extract(doc, bp.keys)),
        values_packed=pack(extract(doc, bp.values)),
        doc=msgspec.Raw(encode_doc(doc)),
        **flags,
    )
    return msgspec.json.encode({"store": msg})


def committed(pg_database: Any) -> list[tuple]:
    with psycopg.connect(pg_database.dsn) as conn:
        return conn.execute("SELECT id, label FROM typed ORDER BY id").fetchall()


def label_keyed(pg_database: Any, table: str) -> Runtime:
    """An open session on a table of TYPED documents keyed by their string /label."""
    coll = {
        **TYPED,
        "key": ["/label"],
        "projections": [
            {**p, "isPrimaryKey": p["field"] == "label"} for p in TYPED["projections"] if p["field"] != "id"
        ],
    }
    spec = materialization(pg_database.endpoint_config(), binding(table, coll))
    Runtime(ProcessConnector(), spec).validate_and_apply()
    rt = Runtime(ProcessConnector(), spec)
    rt.open()
    return rt


FLUSH = b'{"flush":{}}'
COMMIT = b'{"startCommit":{"runtimeCheckpoint":{"sources":{"s":{"readThrough":"2"}}}}}'


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("day", "0000-13-45", "'day' cannot be stored as DATE"),
        ("day", "300000-01-01", "'day' cannot be stored as DATE"),
        ("at", "yesterday", "'at' cannot be stored as TIMESTAMPTZ"),
        ("span", "P1Q", "'span' cannot be stored as INTERVAL"),
        ("ip", "999.1.1.1", "'ip' cannot be stored as CIDR"),
        ("mac", "zz:zz", "'mac' cannot be stored as MACADDR"),
        ("uid", "not-a-uuid", "'uid' cannot be stored as UUID"),
        ("n", 2**70, "'n' cannot be stored as BIGINT"),
        ("x", "fast", "'x' cannot be stored as DOUBLE PRECISION"),
    ],
)
def test_values_that_do_not_fit_their_column(
    session: Runtime, pg_database: Any, field: str, value: Any, message: str
) -> None:
    bad = {"id": 2, "label": "bad", field: value}
    msg = fail_with(session, [FLUSH, store_line(session, {"id": 3, "label": "ok"}), store_line(session, bad), COMMIT])
    assert message in msg and "key [2]" in msg
    assert committed(pg_database) == [(1, "good")]


def test_nan_and_infinity_are_stored_as_doubles(session: Runtime, pg_database: Any) -> None:
    session.transaction(
        [
            ("acme/typed", {"id": 5, "label": "nan", "x": "NaN"}),
            ("acme/typed", {"id": 6, "label": "inf", "x": "-Infinity"}),
        ],
        {"sources": {"s": {"readThrough": "2"}}},
    )
    with psycopg.connect(pg_database.dsn) as conn:
        rows = conn.execute("SELECT x::text FROM typed WHERE id >= 5 ORDER BY id").fetchall()
    assert rows == [("NaN",), ("-Infinity",)]


def test_nul_characters_are_removed_from_text(session: Runtime, pg_database: Any) -> None:
    session.transaction([("acme/typed", {"id": 7, "label": "a\x00b"})], {"sources": {"s": {"readThrough": "2"}}})
    assert (7, "ab") in committed(pg_database)


def test_a_number_beyond_double_range_is_refused_with_its_path(session: Runtime, pg_database: Any) -> None:
    line = store_line(session, {"id": 8, "label": "huge", "x": 7.25}).replace(b'"x":7.25', b'"x":1e400')
    assert b"1e400" in line
    msg = fail_with(session, [FLUSH, store_line(session, {"id": 3, "label": "ok"}), line, COMMIT])
    assert "key [8]" in msg and "document cannot be read: Number out of range" in msg
    assert committed(pg_database) == [(1, "good")]


def test_a_document_nested_too_deeply_to_read_is_refused(session: Runtime, pg_database: Any) -> None:
    line = store_line(session, {"id": 8, "label": "deep", "extra": 0})
    line = line.replace(b'"extra":0', b'"extra":' + b"[" * 5000 + b"]" * 5000)
    msg = fail_with(session, [FLUSH, store_line(session, {"id": 3, "label": "ok"}), line, COMMIT])
    assert "malformed request: nested too deeply" in msg and msg.startswith("line ")
    assert committed(pg_database) == [(1, "good")]


def test_nul_characters_are_removed_from_text_keys_too(pg_database: Any) -> None:
    # PostgreSQL text cannot hold NUL; a load of the same key finds the row stored under it.
    rt = label_keyed(pg_database, "nulkeys")
    rt.transaction([("acme/typed", {"label": "k\x00ey", "n": 1})], {"sources": {"s": {"readThrough": "1"}}})
    rt.transaction([("acme/typed", {"label": "k\x00ey", "n": 2})], {"sources": {"s": {"readThrough": "2"}}})
    rt.close()
    with psycopg.connect(pg_database.dsn) as conn:
        assert conn.execute("SELECT label, n FROM nulkeys").fetchall() == [("key", 2)]


def test_missing_required_value(session: Runtime, pg_database: Any) -> None:
    msg = fail_with(session, [FLUSH, store_line(session, {"id": 9}), COMMIT])
    assert "typed" in msg and "label" in msg
    assert committed(pg_database) == [(1, "good")]


def test_insert_of_a_key_that_exists(session: Runtime, pg_database: Any) -> None:
    msg = fail_with(session, [FLUSH, store_line(session, {"id": 1, "label": "again"}), COMMIT])
    assert "already exists" in msg and "(id)=(1)" in msg
    assert committed(pg_database) == [(1, "good")]


def test_key_too_large_for_the_index(pg_database: Any) -> None:
    rt = label_keyed(pg_database, "bigkeys")
    with pytest.raises(RuntimeError) as err:
        rt.transaction([("acme/typed", {"label": os.urandom(6000).hex()}) for i in range(3)], {"sources": {}})
    assert "bigkeys" in str(err.value) and "index" in str(err.value)


@pytest.mark.parametrize(
    ("line", "message"),
    [
        (b'{"store":{"keyPacked":"FQ=="', "malformed request"),
        (b'{"store":{"keyPacked":"FQ=="}} trailing', "malformed request"),
        (b'{"store":{"keyPacked":"\xff\xfe"}}', "malformed request"),
        (b'{"store":{"binding":3,"keyPacked":"FQE="}}', "binding index 3 is out of range"),
        (b'{"store":{"binding":-1,"keyPacked":"FQU=","doc":{"id":5,"label":"x"}}}', "binding index -1 is out"),
        (
            b'{"store":{"keyPacked":"FQI=","valuesPacked":"AmEA","doc":{"id":2}}}',
            '"label" of relation "typed" violates',
        ),
        (b'{"acknowledge":{}}', "unexpected 'acknowledge' message (expected store or startCommit)"),
        (b'{"store":{"keyPacked":"!!!!"}}', "malformed request"),
    ],
)
def test_bad_messages(session: Runtime, pg_database: Any, line: bytes, message: str) -> None:
    msg = fail_with(session, [FLUSH, store_line(session, {"id": 4, "label": "ok"}), line, COMMIT])
    assert (message in msg and "line" in msg) or message in msg
    assert committed(pg_database) == [(1, "good")]


def test_eof_in_the_middle_of_a_transaction(session: Runtime, pg_database: Any) -> None:
    msg = fail_with(session, [FLUSH, store_line(session, {"id": 4, "label": "ok"})])
    assert "in the middle of a transaction" in msg
    assert committed(pg_database) == [(1, "good")]


def test_deeply_nested_and_large_documents_are_stored(session: Runtime, pg_database: Any) -> None:
    nested: Any = "leaf"
    for _ in range(500):
        nested = {"n": nested}
    session.transaction(
        [
            ("acme/typed", {"id": 20, "label": "deep", "extra": nested}),
            ("acme/typed", {"id": 21, "label": "x" * 5_000_000}),
        ],
        {"sources": {"s": {"readThrough": "2"}}},
    )
    with psycopg.connect(pg_database.dsn) as conn:
        (length,) = conn.execute("SELECT length(label) FROM typed WHERE id = 21").fetchone() or (0,)
    assert length == 5_000_000


def test_a_document_of_hundreds_of_megabytes_is_stored_whole(session: Runtime, pg_database: Any) -> None:
    # PostgreSQL takes up to 1 GB per value; the connector holds a few copies of such a line.
    session.transaction(
        [("acme/typed", {"id": 22, "label": "y" * 200_000_000})], {"sources": {"s": {"readThrough": "2"}}}
    )
    with psycopg.connect(pg_database.dsn) as conn:
        row = conn.execute("SELECT length(label), octet_length(flow_document::text) FROM typed WHERE id = 22")
        assert row.fetchone() == (200_000_000, 200_000_020)


def test_eof_right_after_an_acknowledge_is_a_clean_shutdown(session: Runtime, pg_database: Any) -> None:
    # Flow's runtime ends a session by closing stdin once a transaction is acknowledged.
    c = session.connector
    assert isinstance(c, ProcessConnector) and c.proc is not None and c.proc.stdin is not None
    c.acknowledge()
    c.proc.stdin.close()
    assert c.proc.wait(timeout=30) == 0, c.stderr_tail()
    c.proc = None
    assert committed(pg_database) == [(1, "good")]


def test_eof_after_a_load_is_in_the_middle_of_a_transaction(session: Runtime, pg_database: Any) -> None:
    msg = fail_with(session, [b'{"load":{"keyPacked":"FQI="}}'])
    assert "in the middle of a transaction" in msg and "load or flush" in msg
