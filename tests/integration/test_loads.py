"""Loads of several bindings interleaved, through the hot path the connector process uses: keys
stream into one binding's key table while the others' wait, and every stored key comes back."""

from __future__ import annotations

import base64
import json
from typing import Any

import fdb.tuple
import pytest

from materialize_postgres import transactor
from materialize_postgres.protocol.messages import decode_request
from materialize_postgres.runner.runtime import InProcessConnector, Runtime, new_uuid
from tests.specs import binding, materialization, projection, simple_collection


def regions() -> dict[str, Any]:
    """A collection keyed by a string and an integer."""
    return {
        "name": "acme/regions",
        "key": ["/region", "/n"],
        "uuidPtr": "/_meta/uuid",
        "projections": [
            projection("region", "/region", ["string"], key=True),
            projection("n", "/n", ["integer"], key=True),
            projection("flow_published_at", "/_meta/uuid", ["string"], fmt="date-time"),
            projection("flow_document", "", ["object"]),
        ],
    }


def load_line(binding: int, *key: Any) -> bytes:
    packed = base64.b64encode(fdb.tuple.pack(key)).decode()
    return json.dumps({"load": {"binding": binding, "keyPacked": packed}}).encode()


@pytest.mark.parametrize("buffer_keys", [2, 50_000])
def test_interleaved_loads_of_two_bindings_find_every_stored_key(
    pg_database: Any, monkeypatch: pytest.MonkeyPatch, buffer_keys: int
) -> None:
    monkeypatch.setattr(transactor, "LOAD_BUFFER_KEYS", buffer_keys)
    spec = materialization(
        pg_database.endpoint_config(), binding("things", simple_collection()), binding("regions", regions())
    )
    rt = Runtime(InProcessConnector(), spec)
    rt.validate_and_apply()
    rt.open()
    meta = {"_meta": {"uuid": new_uuid()}}
    stored = [("acme/things", {"id": i, "name": f"t{i}", **meta}) for i in (-300, -1, 0, 7, 2**40, 2**60)]
    stored += [
        ("acme/regions", {"region": r, "n": n, **meta}) for r, n in [("eu", 1), ("eu", -2), ("", 0), ("a\x00b", 3)]
    ]
    rt.transaction(stored, {})

    t = rt.connector.session.transactor
    lines = [
        load_line(0, -300),
        load_line(1, "eu", 1),
        load_line(0, 2**60),  # wider than the fast reader takes: unpacked and converted
        load_line(1, "eu", -2),
        load_line(1, "eu", 99),  # absent
        load_line(0, 7),
        load_line(0, 8),  # absent
        load_line(1, "a\x00b", 3),  # an escaped NUL: the general path, which drops NULs as stores do
        load_line(0, -1),
        load_line(1, "", 0),
        load_line(0, 0),
        load_line(0, 2**40),
    ]
    for line in lines:  # as the serve loop does: the hot path, else the general one
        if t.load_line(line) is None:
            t.load(decode_request(line).load)
    found: list[tuple[int, dict[str, Any]]] = []
    t.flush(lambda b, doc: found.append((b, json.loads(doc))))
    t.start_commit(b"{}")
    rt.close()

    things = sorted(d["id"] for b, d in found if b == 0)
    regions_ = sorted((d["region"], d["n"]) for b, d in found if b == 1)
    assert things == [-300, -1, 0, 7, 2**40, 2**60]
    assert regions_ == [("", 0), ("a\x00b", 3), ("eu", -2), ("eu", 1)]
