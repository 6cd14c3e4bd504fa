"""Property-based specifications (hypothesis): codecs round-trip, any identifier survives a trip
through PostgreSQL, and values stored come back unchanged through a Load."""

from __future__ import annotations

import json
from typing import Any

import fdb.tuple
import msgspec
import psycopg
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from materialize_postgres.identifiers import quote, truncate
from materialize_postgres.protocol.messages import Store, decode_request, encode
from materialize_postgres.protocol.tuples import unpack
from materialize_postgres.runner.runtime import InProcessConnector, Runtime
from tests.specs import binding, materialization, projection

SLOW = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
text = st.text(st.characters(blacklist_categories=["Cs"], blacklist_characters="\x00"), max_size=80)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**64) + 1, max_value=2**64 - 1),
    st.floats(allow_nan=False, allow_infinity=False),
    text,
)


@given(st.lists(scalars, max_size=8))
def test_packed_tuples_round_trip(values: list[Any]) -> None:
    assert unpack(fdb.tuple.pack(tuple(values))) == values


@given(
    st.integers(min_value=0, max_value=2**31),
    st.binary(max_size=40),
    st.binary(max_size=40),
    st.booleans(),
    st.booleans(),
    st.dictionaries(text, scalars, max_size=5),
)
def test_store_messages_round_trip(
    binding: int, key: bytes, values: bytes, exists: bool, delete: bool, doc: dict[str, Any]
) -> None:
    msg = Store(
        binding=binding,
        key_packed=key,
        values_packed=values,
        doc=msgspec.Raw(json.dumps(doc).encode()),
        exists=exists,
        delete=delete,
    )
    line = b'{"store":' + encode(msg) + b"}"
    back = decode_request(line).store
    assert back is not None
    assert (back.binding, back.key_packed, back.values_packed, back.exists, back.delete) == (
        binding,
        key,
        values,
        exists,
        delete,
    )
    assert json.loads(bytes(back.doc)) == doc


@SLOW
@given(name=text.filter(lambda s: s.strip() != "" and len(s.encode()) > 0))
def test_any_identifier_round_trips_through_postgres(pg_conn: psycopg.Connection, name: str) -> None:
    with pg_conn.transaction(force_rollback=True):
        pg_conn.execute(f"CREATE TABLE {quote('t')} ({quote(name)} TEXT)")
        (stored,) = pg_conn.execute(
            "SELECT column_name FROM information_schema.columns WHERE table_name = 't'"
        ).fetchone() or ("",)
    assert stored == truncate(name)


def _spec(endpoint: dict[str, Any]) -> Any:
    coll = {
        "name": "p/values",
        "key": ["/id"],
        "projections": sorted(
            [
                projection("id", "/id", ["integer"], key=True),
                projection("i", "/i", ["integer"], must=False),
                projection("f", "/f", ["number"], must=False),
                projection("b", "/b", ["boolean"], must=False),
                projection("s", "/s", ["string"], must=False),
                projection("o", "/o", ["object"], must=False),
                projection("n", "/n", ["integer", "null"]),  # required, may be null
            ],
            key=lambda p: p["field"],
        ),
    }
    return materialization({**endpoint, "advanced": {"no_flow_document": True}}, binding("vals", coll, document=False))


@SLOW
@given(
    docs=st.lists(
        st.fixed_dictionaries(
            {"n": st.one_of(st.none(), st.integers(-5, 5))},
            optional={
                "i": st.integers(min_value=-(2**63), max_value=2**63 - 1),
                "f": st.floats(allow_nan=False, allow_infinity=False, width=64),
                "b": st.booleans(),
                "s": text,
                # Any key, NUL included; nested nulls are values and must survive.
                "o": st.dictionaries(st.text(max_size=5), st.one_of(st.none(), st.integers(-100, 100)), max_size=3),
            },
        ),
        min_size=1,
        max_size=5,
    )
)
@example(docs=[{"n": None, "o": {"\x00": None, "k": 1}}, {"n": 1, "s": "", "i": 0}])
def test_values_come_back_through_a_load(pg_database: Any, docs: list[dict[str, Any]]) -> None:
    spec = _spec(pg_database.endpoint_config())
    rt = Runtime(InProcessConnector(), spec)
    rt.validate_and_apply(last=spec)  # the same spec each example: its table is ours
    rt.open()
    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        conn.execute("TRUNCATE vals")
    written = [{"id": n, **d} for n, d in enumerate(docs)]
    rt.transaction([("p/values", d) for d in written], {})
    c = rt.connector
    c.acknowledge()
    for d in written:
        c.load(0, fdb.tuple.pack((d["id"],)))
    loaded = sorted((json.loads(doc) for _, doc in c.flush()), key=lambda d: d["id"])
    c.start_commit(b"{}")
    rt.close()
    # A double comes back as the same number, though PostgreSQL may print it without an exponent.
    assert [_numbers_as_floats(d) for d in loaded] == [_numbers_as_floats(d) for d in written]


def _numbers_as_floats(doc: dict[str, Any]) -> dict[str, Any]:
    return {k: float(v) if k == "f" else v for k, v in doc.items()}
