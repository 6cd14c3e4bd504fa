"""Benchmark workloads: the generated size classes and Estuary's scenario files, as transactions.

A transaction is a list of `(id, op)` pairs with one document size. `op` is `c` (a new key), `u`
(an update of a key an earlier transaction stored) or `d` (a deletion of such a key). The same
transactions are written once into a file of protocol `store` lines, which is both what the
connector is fed and what every hand-made baseline reads, so all of them store the same rows.
"""

from __future__ import annotations

import base64
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import fdb.tuple
import msgspec
import yaml

from materialize_postgres.runner.runtime import encode_doc, uuid_time

# The collection of the generated workloads, shaped like the scenario files' collections.
ITEMS_SCHEMA: dict[str, Any] = {
    "type": "object",
    "if": {"properties": {"_meta": {"properties": {"op": {"const": "d"}}}}},
    "then": {"reduce": {"delete": True, "strategy": "lastWriteWins"}},
    "properties": {
        "id": {"type": "integer"},
        "val": {"type": "integer"},
        "payload": {"type": "string"},
        "_meta": {"type": "object", "properties": {"op": {"type": "string"}}, "required": ["op"]},
    },
    "required": ["id", "_meta"],
}


@dataclass
class Txn:
    ops: list[tuple[int, str]]
    doc_size: int

    @property
    def docs(self) -> int:
        return len(self.ops)


@dataclass
class Workload:
    name: str
    collection: str
    schema: dict[str, Any]
    txns: list[Txn]
    # Phase names shown in the report, one per transaction.
    phases: list[str] = field(default_factory=list)

    def phase(self, i: int) -> str:
        return self.phases[i] if i < len(self.phases) else f"txn {i}"


def generated(name: str, docs: int, doc_size: int, merge_fraction: float = 0.2) -> Workload:
    """An insert transaction of `docs` new keys, then a merge of which half updates, half inserts."""
    merge = max(2, int(docs * merge_fraction))
    updates = [(i, "u") for i in range(0, docs, max(1, docs // (merge // 2)))][: merge // 2]
    fresh = [(docs + i, "c") for i in range(merge - len(updates))]
    return Workload(
        name,
        "bench/items",
        ITEMS_SCHEMA,
        [Txn([(i, "c") for i in range(docs)], doc_size), Txn(updates + fresh, doc_size)],
        ["insert", "merge"],
    )


GENERATED = {
    "small": lambda scale: generated("small: 1M x 170 B", int(1_000_000 * scale), 170),
    "medium": lambda scale: generated("medium: 200k x 1 KiB", int(200_000 * scale), 1024),
    "large": lambda scale: generated("large: 300 x 1 MiB", max(10, int(300 * scale)), 1 << 20),
}

# ---------------------------------------------------------------------------------------------
# Estuary's scenario files.

_SIZE = re.compile(r"^\s*([0-9_.]+)\s*([KMGT]?I?B)?\s*$", re.IGNORECASE)
_UNITS = {"": 1, "B": 1, "KB": 1 << 10, "MB": 1 << 20, "GB": 1 << 30, "TB": 1 << 40}


def parse_size(value: Any) -> int:
    if isinstance(value, int):
        return value
    m = _SIZE.match(str(value))
    if not m:
        raise ValueError(f"not a size: {value!r}")
    unit = (m.group(2) or "").upper().replace("IB", "B")
    return int(float(m.group(1).replace("_", "")) * _UNITS[unit])


def scenario(path: Path, max_bytes: int) -> Workload:
    """A scenario file scaled down, every transaction alike, so the largest fits in `max_bytes`."""
    spec = yaml.safe_load(path.read_text())
    coll = spec["collections"][0]
    sizes = []
    for t in spec["transactions"]:
        doc_size = parse_size(t["doc_size"])
        count = (
            int(str(t["doc_count"]).replace("_", "")) if "doc_count" in t else parse_size(t["total_size"]) // doc_size
        )
        sizes.append((count, doc_size))
    scale = min(1.0, max_bytes / max(c * s for c, s in sizes))
    txns: list[Txn] = []
    next_id = 0
    for t, (count, doc_size) in zip(spec["transactions"], sizes, strict=True):
        count = max(1, int(count * scale))
        ops: list[tuple[int, str]] = []
        for o in t.get("overlaps", []):
            # Keys of transaction `with` that are still stored.
            live = [i for i, op in txns[o["with"]].ops if op != "d"]
            n = min(len(live), int(count * o["fraction"]))
            step = max(1, len(live) // max(n, 1))
            ops += [(i, o["op"]) for i in live[::step][:n]]
        ops += [(next_id + i, t.get("op", "c")) for i in range(count - len(ops))]
        next_id += count
        txns.append(Txn(ops, doc_size))
    label = f"{path.name} (x{scale:.3g})" if scale < 1 else path.name
    return Workload(label, coll["name"], coll["schema"], txns, [f"txn {i}" for i in range(len(txns))])


# ---------------------------------------------------------------------------------------------
# Documents and protocol lines.

_CLOCK = 1_761_955_200 * 10_000_000  # 2025-11-01, in 100 ns ticks since the Unix epoch


def flow_uuid(key: int, op: str) -> str:
    """A v1 UUID as Flow stamps documents: a clock that advances with each document."""
    t = 0x01B21DD213814000 + _CLOCK + key * 10 + (3 if op != "c" else 0)
    return str(uuid.UUID(fields=(t & 0xFFFFFFFF, (t >> 32) & 0xFFFF, ((t >> 48) & 0x0FFF) | 0x1000, 0x80, 1, 5)))


def document(schema: dict[str, Any], key: int, op: str, size: int) -> dict[str, Any]:
    props = schema.get("properties", {})
    doc: dict[str, Any] = {"id": key}
    if "val" in props:
        doc["val"] = key * 7 % 1000
    doc["_meta"] = {"op": op, "uuid": flow_uuid(key, op)}
    if "payload" in props:
        room = size - len(msgspec.json.encode({**doc, "payload": ""}))
        doc["payload"] = (f"{key}:{op}:" + "x" * max(room, 0))[: max(room, 0)]
    return doc


def value_of(doc: dict[str, Any], field_name: str) -> Any:
    if field_name == "flow_published_at":
        return uuid_time(doc["_meta"]["uuid"])
    node: Any = doc
    for part in field_name.split("/"):
        node = node.get(part) if isinstance(node, dict) else None
    return node


def packed(values: list[Any]) -> str:
    return base64.b64encode(fdb.tuple.pack(tuple(values))).decode()


def store_lines(wl: Workload, txn: Txn, values: list[str], hard_delete: bool) -> Iterator[bytes]:
    """The transaction's `store` requests as the runtime sends them after its loads: packed key
    and values, the document with its keys sorted, `exists` for stored keys."""
    for key, op in txn.ops:
        doc = document(wl.schema, key, op, txn.doc_size)
        store: dict[str, Any] = {
            "keyPacked": packed([key]),
            "valuesPacked": packed([value_of(doc, f) for f in values]),
            "doc": msgspec.Raw(encode_doc(doc)),
        }
        if op != "c":
            store["exists"] = True
        if op == "d" and hard_delete:
            store["delete"] = True
        yield msgspec.json.encode({"store": store})


def load_lines(txn: Txn, max_stored_key: int) -> Iterator[bytes]:
    """Loads for the keys the runtime could have stored: it skips keys above the max stored key."""
    for key, _ in txn.ops:
        if key <= max_stored_key:
            yield b'{"load":{"keyPacked":"%s"}}' % packed([key]).encode()
