"""The store hot path reads rows straight from documents. Whatever a document holds, the row it
reads is the row the general path builds from the runtime's packed values, or it steps aside."""

from __future__ import annotations

import datetime as dt
import uuid
from typing import Any

import msgspec
from hypothesis import given, settings
from hypothesis import strategies as st

from materialize_postgres.config import parse_endpoint
from materialize_postgres.protocol.tuples import unpack
from materialize_postgres.rowcodec import codec_for, published_at, published_micros
from materialize_postgres.runner.runtime import _plan, encode_doc, extract, pack, uuid_time
from materialize_postgres.tables import build_table
from materialize_postgres.typemap import ValueError_, _as_timestamp, _as_timestamp_micros, writer_for
from tests.specs import binding, materialization, projection

ENDPOINT = {"address": "localhost:5432", "user": "u", "password": "p", "database": "d"}


def collection(**extra: dict[str, Any]) -> dict[str, Any]:
    projections = [
        projection("id", "/id", ["integer"], key=True),
        projection("s", "/s", ["string"]),
        projection("n", "/n", ["number", "null"], must=False),
        projection("b", "/b", ["boolean"], must=False),
        projection("o", "/o", ["object"], must=False),
        projection("a", "/a", ["array", "null"], must=False),
        projection("ts", "/ts", ["string"], must=False, fmt="date-time"),
        projection("d", "/d", ["string"], must=False, fmt="date"),
        projection("big", "/big", ["string"], must=False, fmt="number"),
        projection("dflt", "/dflt", ["integer"], must=False, default=7),
        projection("deep/x", "/deep/x", ["integer"], must=False),
        projection("_meta/op", "/_meta/op", ["string"], must=False),
        projection("flow_published_at", "/_meta/uuid", ["string"], fmt="date-time"),
        projection("flow_document", "", ["object"]),
    ]
    return {"name": "t/c", "key": ["/id"], "uuidPtr": "/_meta/uuid", "projections": projections, **extra}


SPEC = materialization(ENDPOINT, binding("t", collection()))
CFG = parse_endpoint(msgspec.json.decode(SPEC.config))
TABLE = build_table(0, SPEC.bindings[0], CFG, SPEC.name)
WRITERS = [writer_for(c.type, None) for c in TABLE.columns]
# As the transactor writes it: the publication time as PostgreSQL's microseconds.
WRITERS = [
    ("int8", _as_timestamp_micros) if c.field == "flow_published_at" else w
    for c, w in zip(TABLE.columns, WRITERS, strict=True)
]
CODEC = codec_for(TABLE, [conv for _, conv in WRITERS], "/_meta/uuid")
PLANS = _plan(SPEC.bindings[0], [c.field for c in [*TABLE.keys, *TABLE.values]])


def general_row(doc: dict[str, Any]) -> list[Any] | None:
    """What the general path stores: the runtime's packed values, unpacked and converted. (Flow
    serializes documents with object keys sorted, in the document and in packed values alike.)"""
    values = unpack(pack(extract(doc, PLANS)))
    try:
        row = [conv(v) if v is not None else None for (_, conv), v in zip(WRITERS, values, strict=False)]
    except ValueError_:
        return None
    return [*row, encode_doc(doc)]


def flow_uuid(ticks: int) -> str:
    t = ticks + 0x01B21DD213814000
    return str(uuid.UUID(fields=(t & 0xFFFFFFFF, (t >> 32) & 0xFFFF, ((t >> 48) & 0x0FFF) | 0x1000, 0x80, 1, 5)))


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | st.floats(allow_nan=False) | st.text(max_size=5),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=3), inner, max_size=3),
    max_leaves=5,
)


def mostly(good: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    """Usually a value of the field's type; now and then any JSON value at all."""
    return st.integers(0, 9).flatmap(lambda n: json_values if n == 0 else good)


timestamps = st.datetimes(
    min_value=dt.datetime(1, 1, 2), max_value=dt.datetime(9999, 12, 30), timezones=st.just(dt.UTC)
).map(lambda t: t.isoformat().replace("+00:00", "Z"))
documents = st.fixed_dictionaries(
    {
        "id": mostly(st.integers(-(2**63), 2**63 - 1)),
        "s": mostly(st.text(max_size=8)),
        "_meta": st.fixed_dictionaries(
            {"uuid": st.integers(0, 2**59).map(flow_uuid)}, optional={"op": st.sampled_from(["c", "u", "d"])}
        ),
    },
    optional={
        "n": mostly(st.floats(allow_nan=False) | st.integers(-(2**53), 2**53) | st.none()),
        "b": mostly(st.booleans()),
        "o": json_values,
        "a": json_values,
        "ts": mostly(timestamps),
        "d": mostly(st.dates().map(str)),
        "big": mostly(st.decimals(allow_nan=False, allow_infinity=False).map(str)),
        "dflt": st.integers(-5, 5) | st.none(),
        "deep": mostly(st.fixed_dictionaries({}, optional={"x": mostly(st.integers(-5, 5))})),
        "extra": json_values,
    },
)


@settings(max_examples=1000, deadline=None)
@given(documents)
def test_the_hot_path_reads_the_row_the_general_path_stores(doc: dict[str, Any]) -> None:
    assert CODEC is not None
    text = encode_doc(doc)
    doc = msgspec.json.decode(text)  # the document as JSON has it (no infinities, say)
    fast = CODEC.row(text)
    if fast is None:
        return  # stepped aside: the general path takes the document
    general = general_row(doc)
    assert general is not None, "the hot path accepted a document the general path rejects"
    assert [bytes(v) if isinstance(v, msgspec.Raw) else v for v in fast] == general


def test_plain_documents_take_the_hot_path() -> None:
    assert CODEC is not None
    doc = {
        "id": 1,
        "s": "x",
        "n": None,
        "o": {"k": [1, None]},
        "a": None,
        "ts": "2024-05-06T07:08:09.123456789+02:00",
        "d": "2024-02-29",
        "big": "12.50",
        "deep": {"x": 3},
        "_meta": {"op": "u", "uuid": flow_uuid(123_456_789_012_345_675)},
    }
    fast = CODEC.row(encode_doc(doc))
    assert fast is not None
    assert [bytes(v) if isinstance(v, msgspec.Raw) else v for v in fast] == general_row(doc)
    columns = [c.field for c in TABLE.columns]
    assert fast[columns.index("dflt")] == 7, "an absent field takes its projection's default"
    assert fast[columns.index("a")] is None, "a JSON null is SQL NULL"


def test_documents_it_cannot_read_fall_back() -> None:
    assert CODEC is not None
    good = {"id": 1, "s": "x", "_meta": {"uuid": flow_uuid(1)}}
    for bad in (
        {**good, "id": 2**63},  # out of BIGINT range: the general path names the field
        {**good, "s": 5},
        {**good, "ts": "yesterday"},
        {**good, "_meta": {"uuid": "not-a-uuid-at-all"}},
        {"s": "x", "_meta": {"uuid": flow_uuid(1)}},  # no key
    ):
        assert CODEC.row(encode_doc(bad)) is None, bad


def test_bindings_with_array_pointers_or_no_document_have_no_codec() -> None:
    arr = collection(projections=[*collection()["projections"], projection("first", "/a/0", ["integer"], must=False)])
    spec = materialization(ENDPOINT, binding("t", arr), binding("u", collection(), document=False))
    for i, b in enumerate(spec.bindings):
        table = build_table(i, b, CFG, spec.name)
        convs = [
            _as_timestamp_micros if c.field == "flow_published_at" else writer_for(c.type, None)[1]
            for c in table.columns
        ]
        assert codec_for(table, convs, "/_meta/uuid") is None


@given(st.integers(0, 2**60 - 1))
def test_publication_times_match_the_runtime_s_timestamp(ticks: int) -> None:
    u = flow_uuid(ticks)
    assert published_at(u) == _as_timestamp(uuid_time(u))
    assert published_micros(u) == _as_timestamp_micros(uuid_time(u))
