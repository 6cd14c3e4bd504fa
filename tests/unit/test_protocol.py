"""The JSON codec reads and writes Flow's materialization messages exactly as the runtime does."""

from __future__ import annotations

import base64
import json

import fdb.tuple
import msgspec
import pytest
from hypothesis import given
from hypothesis import strategies as st

from materialize_postgres.protocol.messages import (
    Acknowledged,
    Applied,
    Constraint,
    Flushed,
    Loaded,
    Opened,
    Response,
    SpecResponse,
    StartedCommit,
    Validated,
    ValidatedBinding,
    decode_request,
    encode,
    raw,
)
from materialize_postgres.protocol.tuples import TupleError, key_reader, pack_keys, unpack, unpack_json, unpack_keys


def test_every_request_kind_decodes_with_defaults_omitted() -> None:
    lines = {
        "spec": b'{"spec":{"connectorType":"IMAGE","config":{}}}',
        "validate": b'{"validate":{"name":"a/b","config":{"x":1},"bindings":[{"resourceConfig":{"table":"t"},'
        b'"collection":{"name":"c","key":["/id"],"projections":[{"ptr":"/id","field":"id","isPrimaryKey":true,'
        b'"inference":{"types":["integer"],"exists":"MUST"}}]},"fieldConfig":{"id":{"DDL":"INT"}},"backfill":2}]}}',
        "apply": b'{"apply":{"materialization":{"name":"a/b","bindings":[]},"version":"v1"}}',
        "open": b'{"open":{"materialization":{"name":"a/b"},"range":{"keyEnd":4294967295,"rClockEnd":4294967295},'
        b'"state":{}}}',
        "acknowledge": b'{"acknowledge":{}}',
        "load": b'{"load":{"keyPacked":"FQE="}}',
        "flush": b'{"flush":{}}',
        "store": b'{"store":{"binding":1,"keyPacked":"FQE=","valuesPacked":"AmEA","doc":{"id":1},"exists":true}}',
        "startCommit": b'{"startCommit":{"runtimeCheckpoint":{"sources":{"j":{"readThrough":"12"}}}}}',
    }
    for kind, line in lines.items():
        assert decode_request(line).kind() == kind

    load = decode_request(lines["load"]).load
    assert load is not None and load.binding == 0 and load.key_packed == b"\x15\x01"
    store = decode_request(lines["store"]).store
    assert store is not None and store.exists and not store.delete and bytes(store.doc) == b'{"id":1}'
    opened = decode_request(lines["open"]).open
    assert opened is not None and opened.range.key_begin == 0 and opened.range.key_end == 0xFFFFFFFF
    validate = decode_request(lines["validate"]).validate
    assert validate is not None
    assert validate.bindings[0].backfill == 2
    assert validate.bindings[0].collection.projections[0].inference.must_exist
    assert json.loads(bytes(validate.bindings[0].field_config["id"])) == {"DDL": "INT"}


def test_unknown_fields_are_ignored() -> None:
    req = decode_request(b'{"load":{"keyPacked":"FQE=","someFutureField":[1,2]},"$internal":"AAE="}')
    assert req.kind() == "load"


def test_documents_stay_raw() -> None:
    doc = b'{"b":1,"a":{"z":[1,2,3]},"s":"\xc3\xa9"}'
    store = decode_request(b'{"store":{"keyPacked":"FQE=","doc":' + doc + b"}}").store
    assert store is not None and bytes(store.doc) == doc


def test_responses_are_one_compact_line_with_camel_case_names() -> None:
    cases = [
        (
            Response(
                spec=SpecResponse(
                    config_schema=raw({"type": "object"}), resource_config_schema=raw({}), documentation_url="u"
                )
            ),
            {
                "spec": {
                    "protocol": 3032023,
                    "configSchema": {"type": "object"},
                    "resourceConfigSchema": {},
                    "documentationUrl": "u",
                }
            },
        ),
        (
            Response(
                validated=Validated(
                    bindings=[
                        ValidatedBinding(
                            constraints={"id": Constraint(type="LOCATION_REQUIRED", reason="key")},
                            resource_path=["public", "t"],
                            delta_updates=True,
                        )
                    ]
                )
            ),
            {
                "validated": {
                    "bindings": [
                        {
                            "constraints": {"id": {"type": "LOCATION_REQUIRED", "reason": "key"}},
                            "resourcePath": ["public", "t"],
                            "deltaUpdates": True,
                        }
                    ]
                }
            },
        ),
        (Response(applied=Applied(action_description="CREATE")), {"applied": {"actionDescription": "CREATE"}}),
        (
            Response(opened=Opened(runtime_checkpoint=raw({"sources": {}}))),
            {"opened": {"runtimeCheckpoint": {"sources": {}}}},
        ),
        (Response(opened=Opened()), {"opened": {}}),
        (Response(acknowledged=Acknowledged()), {"acknowledged": {}}),
        (Response(loaded=Loaded(binding=0, doc=raw({"a": 1}))), {"loaded": {"doc": {"a": 1}}}),
        (Response(loaded=Loaded(binding=2, doc=raw({"a": 1}))), {"loaded": {"binding": 2, "doc": {"a": 1}}}),
        (Response(flushed=Flushed()), {"flushed": {}}),
        (Response(started_commit=StartedCommit()), {"startedCommit": {}}),
    ]
    for resp, expected in cases:
        line = encode(resp)
        assert b"\n" not in line
        assert json.loads(line) == expected


def test_malformed_lines_raise() -> None:
    with pytest.raises(msgspec.DecodeError):
        decode_request(b'{"load":{"keyPacked":')
    with pytest.raises(msgspec.DecodeError):
        decode_request(b'{"load":{"binding":"one"}}')
    # Too deep for the decoder, even inside a raw document: a decode error, never a RecursionError.
    with pytest.raises(msgspec.DecodeError, match="nested too deeply"):
        decode_request(b'{"store":{"doc":' + b"[" * 5000 + b"]" * 5000 + b"}}")


@pytest.mark.parametrize(
    ("b64", "expected"),
    [("FQE=", [1]), ("AmEA", ["a"]), ("FSoCaGkA", [42, "hi"]), ("JwA=", [True, None]), ("E+E=", [-30])],
)
def test_packed_tuples_from_flow(b64: str, expected: list) -> None:
    assert unpack(base64.b64decode(b64)) == expected


def test_tuple_elements_round_trip() -> None:
    values = [0, -1, -(2**63), 2**64 - 1, 1.5, -2.25, float("inf"), "é\x00x", True, False, None]
    assert unpack(fdb.tuple.pack(tuple(values))) == values
    nested = b'{"a":[1,{"b":null}]}'
    assert unpack(fdb.tuple.pack((nested,))) == [nested]
    assert unpack_json(fdb.tuple.pack((nested, 3))) == [{"a": [1, {"b": None}]}, 3]


def test_a_broken_tuple_is_a_clear_error() -> None:
    with pytest.raises(TupleError, match="cannot be decoded"):
        unpack(b"\x15")


_KEY_ELEMENT = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.integers(min_value=-300, max_value=300),
    st.text(),
    st.binary(max_size=4),
    st.floats(allow_nan=False),
    st.booleans(),
    st.none(),
)


@given(st.lists(_KEY_ELEMENT, max_size=4), st.lists(st.sampled_from([int, str]), min_size=1, max_size=4))
def test_the_fast_key_reader_agrees_with_fdb_or_declines(key: list, kinds: list) -> None:
    """Whatever the fast reader returns is what fdb unpacks; it declines (None) rather than guess."""
    packed = fdb.tuple.pack(tuple(key))
    for read in (lambda p: unpack_keys(p, tuple(kinds)), key_reader(tuple(kinds))):
        got = read(packed)
        if got is not None:
            assert got == list(fdb.tuple.unpack(packed))
            assert [type(v) for v in got] == kinds


@given(st.lists(st.one_of(st.integers(min_value=-(2**56) + 1, max_value=2**56 - 1), st.text()), min_size=1, max_size=4))
def test_the_fast_key_reader_takes_every_narrow_integer_and_plain_string(key: list) -> None:
    kinds = tuple(type(v) for v in key)
    packed = fdb.tuple.pack(tuple(key))
    expected = None if any(isinstance(v, str) and "\x00" in v for v in key) else key
    assert unpack_keys(packed, kinds) == expected
    assert key_reader(kinds)(packed) == expected


@given(st.binary(max_size=12), st.lists(st.sampled_from([int, str]), min_size=1, max_size=3))
def test_the_fast_key_reader_never_raises_on_garbage(packed: bytes, kinds: list) -> None:
    got = key_reader(tuple(kinds))(packed)
    if got is not None:
        assert got == list(fdb.tuple.unpack(packed))


@given(st.lists(_KEY_ELEMENT, max_size=4))
def test_the_fast_key_packer_packs_exactly_as_fdb_or_declines(key: list) -> None:
    """Shards route keys by a hash of these bytes, so they must be fdb's, byte for byte."""
    packed = pack_keys(key)
    if packed is not None:
        assert packed == fdb.tuple.pack(tuple(key))
        assert unpack_keys(packed, tuple(type(v) for v in key)) == key
    narrow = all((type(v) is int and abs(v) < 2**56) or (type(v) is str and "\x00" not in v) for v in key)
    assert (packed is not None) == narrow
