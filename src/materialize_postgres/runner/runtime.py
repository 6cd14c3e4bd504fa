"""A small in-process stand-in for Flow's runtime.

It does what the runtime does around a materialization connector: extracts each selected field
from a document, packs keys and values as FoundationDB tuples, combines a transaction's documents
by key, loads existing documents of standard-updates bindings and reduces onto them, and sends
Store and StartCommit with a checkpoint. The connector can be this package's driver called
directly (`InProcessConnector`) or any `materialize-postgres connector` process speaking the JSON
protocol (`ProcessConnector`), which is how the end-to-end tests play Flow's role.
"""

from __future__ import annotations

import collections
import datetime as dt
import os
import subprocess
import sys
import threading
import uuid
import zlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

import fdb.tuple
import msgspec

from ..protocol.messages import (
    EMPTY,
    Apply,
    Load,
    MaterializationBinding,
    MaterializationSpec,
    Open,
    RangeSpec,
    Store,
    Validate,
    ValidateBinding,
    raw,
)
from ..protocol.tuples import pack_keys

MISSING = object()
FULL_RANGE = RangeSpec(key_begin=0, key_end=0xFFFFFFFF, r_clock_begin=0, r_clock_end=0xFFFFFFFF)
_UUID_EPOCH = 0x01B21DD213814000  # 1970-01-01 in 100 ns ticks since 1582-10-15
_json = msgspec.json.Encoder()
_decode = msgspec.json.Decoder()


class RuntimeError_(RuntimeError):
    pass


# --------------------------------------------------------------------------------------------
# Documents, fields and tuples.


def pointer_get(doc: Any, ptr: str) -> Any:
    """RFC 6901 JSON pointer lookup; MISSING when the location is absent."""
    if ptr == "":
        return doc
    node = doc
    for token in ptr[1:].split("/"):
        token = token.replace("~1", "/").replace("~0", "~")
        if isinstance(node, dict):
            if token not in node:
                return MISSING
            node = node[token]
        elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
            node = node[int(token)]
        else:
            return MISSING
    return node


def uuid_time(text: str) -> str | None:
    """The publication time carried by a Flow (v1) document UUID, as RFC 3339."""
    try:
        u = uuid.UUID(text)
    except (ValueError, AttributeError, TypeError):
        return None
    # Full 100 ns precision, trailing zeros trimmed, as the runtime writes it (RFC 3339 nanos).
    seconds, ticks = divmod(u.time - _UUID_EPOCH, 10_000_000)
    ts = dt.datetime(1970, 1, 1, tzinfo=dt.UTC) + dt.timedelta(seconds=seconds)
    fraction = f".{ticks:07d}".rstrip("0").rstrip(".")
    return ts.strftime("%Y-%m-%dT%H:%M:%S") + fraction + "Z"


def new_uuid(now: dt.datetime | None = None) -> str:
    """A v1 UUID whose clock is `now`, so flow_published_at reads back as the time it was made."""
    now = now or dt.datetime.now(dt.UTC)
    ticks = int((now - dt.datetime(1970, 1, 1, tzinfo=dt.UTC)).total_seconds() * 10_000_000) + _UUID_EPOCH
    low, mid, hi = ticks & 0xFFFFFFFF, (ticks >> 32) & 0xFFFF, (ticks >> 48) & 0x0FFF
    node = int.from_bytes(os.urandom(6), "big")
    seq = int.from_bytes(os.urandom(2), "big") & 0x3FFF
    return str(uuid.UUID(fields=(low, mid, hi | 0x1000, 0x80 | (seq >> 8), seq & 0xFF, node)))


def key_hash(packed_key: bytes) -> int:
    """Which shard a key belongs to: a stable 32-bit hash of its packed form, as Flow routes keys to
    shards by a hash of the key over the [0, 2^32) key range."""
    return zlib.crc32(packed_key)


def shard_ranges(shards: int) -> list[RangeSpec]:
    """`shards` contiguous key ranges covering [0, 2^32), as Flow splits a shard's range. Bounds
    are floor(i * 2^32 / shards), so the ranges of N shards nest inside those of any divisor of N
    and a run can move to a multiple of its shard count."""
    bounds = [(i << 32) // shards for i in range(shards + 1)]
    return [
        RangeSpec(key_begin=bounds[i], key_end=bounds[i + 1] - 1, r_clock_begin=0, r_clock_end=0xFFFFFFFF)
        for i in range(shards)
    ]


def encode_doc(doc: Any) -> bytes:
    """Documents as Flow serializes them: compact, object keys sorted, UTF-8 unescaped."""
    return msgspec.json.encode(doc, order="sorted")


def _tuple_elem(v: Any) -> Any:
    if isinstance(v, dict | list):
        return encode_doc(v)  # objects and arrays travel as their JSON text
    return v


def pack(values: list[Any]) -> bytes:
    fast = pack_keys(values)  # integers and strings, the usual keys, without fdb
    return fast if fast is not None else fdb.tuple.pack(tuple(_tuple_elem(v) for v in values))


@dataclass
class FieldPlan:
    ptr: str
    default: Any
    published_at: bool


def _plan(binding: MaterializationBinding, fields: list[str]) -> list[FieldPlan]:
    out = []
    for f in fields:
        p = binding.collection.projection(f)
        if p is None:
            raise RuntimeError_(f"binding {binding.collection.name}: no projection for field {f!r}")
        default = msgspec.json.decode(p.inference.default) if len(p.inference.default) else None
        out.append(FieldPlan(p.ptr, default, p.ptr == binding.collection.uuid_ptr and p.ptr != ""))
    return out


def extract(doc: Any, plans: list[FieldPlan]) -> list[Any]:
    out = []
    for fp in plans:
        v = pointer_get(doc, fp.ptr)
        if fp.published_at and isinstance(v, str):
            v = uuid_time(v)
        out.append(fp.default if v is MISSING else v)
    return out


# --------------------------------------------------------------------------------------------
# Connectors.


class Connector(Protocol):
    def validate(self, req: Validate) -> Any: ...
    def apply(self, req: Apply) -> Any: ...
    def open(self, req: Open) -> bytes: ...
    def acknowledge(self) -> None: ...
    def load(self, binding: int, key_packed: bytes) -> None: ...
    def flush(self) -> list[tuple[int, bytes]]: ...
    def store(self, msg: Store) -> None: ...
    def store_document(self, binding: int, doc: bytes, exists: bool, delete: bool) -> bool: ...
    def start_commit(self, checkpoint: bytes) -> None: ...
    def close(self) -> None: ...


class InProcessConnector:
    """The driver called directly: the same engine as the connector process, minus the pipe."""

    def __init__(self) -> None:
        self.session: Any = None

    def validate(self, req: Validate) -> Any:
        from .. import driver

        return driver.do_validate(req)

    def apply(self, req: Apply) -> Any:
        from .. import driver

        return driver.do_apply(req)

    def open(self, req: Open) -> bytes:
        from .. import driver

        self.session = driver.Session(req)
        return bytes(self.session.opened.runtime_checkpoint)

    def acknowledge(self) -> None:
        pass

    def load(self, binding: int, key_packed: bytes) -> None:
        t = self.session.transactor
        if not t.load_packed(binding, key_packed):
            t.load(Load(binding=binding, key_packed=key_packed))

    def flush(self) -> list[tuple[int, bytes]]:
        out: list[tuple[int, bytes]] = []
        self.session.transactor.flush(lambda b, d: out.append((b, d)))
        return out

    def store(self, msg: Store) -> None:
        self.session.transactor.store(msg)

    def store_document(self, binding: int, doc: bytes, exists: bool, delete: bool) -> bool:
        """The connector process's hot path (its row codec reads the columns from the document),
        taken in-process: no packed key and values to build and then unpack. False when the
        binding's codec cannot read this document; then the caller sends the full Store."""
        return self.session.transactor.store_document(binding, doc, exists, delete, len(doc))

    def start_commit(self, checkpoint: bytes) -> None:
        self.session.transactor.start_commit(checkpoint or None)

    def close(self) -> None:
        if self.session is not None:
            self.session.close()
            self.session = None


class ProcessConnector:
    """A connector process speaking the JSON protocol on its stdin/stdout, as Flow runs it."""

    def __init__(self, command: list[str] | None = None, env: dict[str, str] | None = None) -> None:
        self.command = command or [sys.executable, "-m", "materialize_postgres", "connector"]
        self.env = {**os.environ, "LOG_FORMAT": "json", **(env or {})}
        self.proc: subprocess.Popen[bytes] | None = None
        # The connector logs on stderr; an undrained pipe would block it once the OS buffer fills.
        self.stderr_lines: collections.deque[bytes] = collections.deque(maxlen=200)
        self._stderr_reader: threading.Thread | None = None

    def start(self) -> None:
        self.proc = subprocess.Popen(
            self.command, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=self.env
        )
        self.stderr_lines.clear()
        self._stderr_reader = threading.Thread(target=self._drain_stderr, args=(self.proc,), daemon=True)
        self._stderr_reader.start()
        self.send({"spec": {"connectorType": "IMAGE", "config": {}}})
        self.expect("spec")

    def send(self, msg: Any) -> None:
        assert self.proc and self.proc.stdin
        data = msg if isinstance(msg, bytes) else _json.encode(msg)
        self.proc.stdin.write(data + b"\n")
        self.proc.stdin.flush()

    def recv(self) -> dict[str, Any]:
        assert self.proc and self.proc.stdout
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError_(f"connector exited ({self.proc.wait()}): {self.stderr_tail()}")
        return _decode.decode(line)

    def expect(self, kind: str) -> Any:
        msg = self.recv()
        if kind not in msg:
            raise RuntimeError_(f"expected {kind!r} from the connector, got {list(msg)}")
        return msg[kind]

    def _drain_stderr(self, proc: subprocess.Popen[bytes]) -> None:
        assert proc.stderr
        for line in proc.stderr:
            self.stderr_lines.append(line)

    def stderr_tail(self) -> str:
        """The connector's last log lines, once it has exited (waits for the log pipe to close)."""
        if self._stderr_reader is not None:
            self._stderr_reader.join(timeout=10)
        return b"".join(self.stderr_lines).decode(errors="replace")[-2000:]

    def _request(self, kind: str, body: Any, answer: str) -> Any:
        if self.proc is None:
            self.start()
        self.send(b'{"%s":%s}' % (kind.encode(), msgspec.json.encode(body)))
        return self.expect(answer)

    def validate(self, req: Validate) -> Any:
        return self._request("validate", req, "validated")

    def apply(self, req: Apply) -> Any:
        return self._request("apply", req, "applied")

    def open(self, req: Open) -> bytes:
        opened = self._request("open", req, "opened")
        return _json.encode(opened.get("runtimeCheckpoint", {}))

    def acknowledge(self) -> None:
        self.send(b'{"acknowledge":{}}')
        self.expect("acknowledged")

    def load(self, binding: int, key_packed: bytes) -> None:
        self.send({"load": Load(binding=binding, key_packed=key_packed)})

    def flush(self) -> list[tuple[int, bytes]]:
        self.send(b'{"flush":{}}')
        out = []
        while True:
            msg = self.recv()
            if "flushed" in msg:
                return out
            loaded = msg["loaded"]
            out.append((loaded.get("binding", 0), _json.encode(loaded["doc"])))

    def store(self, msg: Store) -> None:
        self.send({"store": msg})

    def store_document(self, binding: int, doc: bytes, exists: bool, delete: bool) -> bool:
        return False  # Flow's runtime sends every store whole, packed key and values included

    def start_commit(self, checkpoint: bytes) -> None:
        self.send(b'{"startCommit":{"runtimeCheckpoint":%s}}' % (checkpoint or b"{}"))
        self.expect("startedCommit")

    def close(self) -> None:
        if self.proc is None:
            return
        if self.proc.stdin:
            self.proc.stdin.close()
        self.proc.wait(timeout=60)
        if self._stderr_reader is not None:
            self._stderr_reader.join(timeout=10)
        for stream in (self.proc.stdout, self.proc.stderr):
            if stream:
                stream.close()
        self.proc = None


# --------------------------------------------------------------------------------------------
# The runtime.


Reduce = Callable[[Any, Any], Any]
IsDelete = Callable[[Any], bool]


def last_write_wins(left: Any, right: Any) -> Any:
    return right


def op_is_delete(doc: Any) -> bool:
    return isinstance(doc, dict) and isinstance(doc.get("_meta"), dict) and doc["_meta"].get("op") == "d"


@dataclass
class BindingPlan:
    index: int
    spec: MaterializationBinding
    keys: list[FieldPlan]
    values: list[FieldPlan]
    key_ptrs: list[str]
    delta: bool
    has_document: bool
    reduce: Reduce = last_write_wins
    is_delete: IsDelete = op_is_delete


@dataclass
class Runtime:
    """Drives one materialization through a connector, transaction by transaction."""

    connector: Connector
    spec: MaterializationSpec
    reducers: dict[str, tuple[Reduce, IsDelete]] = field(default_factory=dict)
    key_range: RangeSpec = field(default_factory=lambda: FULL_RANGE)
    stats: dict[str, int] = field(default_factory=lambda: {"docs": 0, "stores": 0, "loaded": 0, "txns": 0})

    def __post_init__(self) -> None:
        self.bindings = [self._binding_plan(i, b) for i, b in enumerate(self.spec.bindings)]
        self.by_collection: dict[str, list[BindingPlan]] = {}
        for bp in self.bindings:
            self.by_collection.setdefault(bp.spec.collection.name, []).append(bp)

    def _binding_plan(self, i: int, b: MaterializationBinding) -> BindingPlan:
        sel = b.field_selection
        reduce, is_delete = self.reducers.get(b.collection.name, (last_write_wins, op_is_delete))
        keys = _plan(b, sel.keys)
        return BindingPlan(
            i,
            b,
            keys,
            _plan(b, sel.values),
            [k.ptr for k in keys],
            b.delta_updates,
            bool(sel.document),
            reduce,
            is_delete,
        )

    # -- lifecycle ------------------------------------------------------------------------------

    def validate_and_apply(self, last: MaterializationSpec | None = None) -> str:
        bindings = [
            ValidateBinding(
                resource_config=b.resource_config,
                collection=b.collection,
                field_config=b.field_selection.field_config,
                backfill=b.backfill,
            )
            for b in self.spec.bindings
        ]
        self.connector.validate(
            Validate(
                name=self.spec.name,
                connector_type="IMAGE",
                config=self.spec.config,
                bindings=bindings,
                last_materialization=last,
            )
        )
        applied = self.connector.apply(Apply(materialization=self.spec, version="runner", last_materialization=last))
        text = getattr(applied, "action_description", None)
        return text if text is not None else applied.get("actionDescription", "")

    def open(self) -> Any:
        checkpoint = self.connector.open(
            Open(materialization=self.spec, version="runner", range=self.key_range, state=raw({}))
        )
        return msgspec.json.decode(checkpoint) if checkpoint else {}

    def close(self) -> None:
        self.connector.close()

    # -- one transaction ------------------------------------------------------------------------

    def combine(self, docs: Iterable[tuple[str, Any]]) -> list[dict[bytes, Combined] | list[tuple[bytes, Any]]]:
        """A transaction's documents per binding.

        Standard-updates bindings get one document per key, each key's documents reduced in
        order; delta-updates bindings keep every document, as Flow's own preview does.
        """
        combined: list[Any] = [[] if bp.delta else {} for bp in self.bindings]
        whole = self.key_range.key_begin == 0 and self.key_range.key_end == 0xFFFFFFFF
        for collection, doc in docs:
            for bp in self.by_collection.get(collection, []):
                key = pack(extract(doc, bp.keys))
                if not whole and not self.key_range.key_begin <= key_hash(key) <= self.key_range.key_end:
                    continue  # another shard's key
                slot = combined[bp.index]
                self.stats["docs"] += 1
                if bp.delta:
                    slot.append((key, doc))
                elif key in slot:
                    slot[key] = Combined(bp.reduce(slot[key].doc, doc), True)
                else:
                    slot[key] = Combined(doc, False)
        return combined

    def transaction(self, docs: Iterable[tuple[str, Any]], checkpoint: Any) -> None:
        combined = self.combine(docs)
        c = self.connector
        c.acknowledge()
        for bp in self.bindings:
            if not bp.delta:
                for key in combined[bp.index]:
                    c.load(bp.index, key)
        loaded: list[dict[bytes, Any]] = [{} for _ in self.bindings]
        for binding, raw_doc in c.flush():
            bp = self.bindings[binding]
            doc = msgspec.json.decode(raw_doc)
            loaded[binding][pack(extract(doc, bp.keys))] = doc
            self.stats["loaded"] += 1
        for bp in self.bindings:
            if bp.delta:
                for key, doc in combined[bp.index]:
                    self._send_store(bp, key, doc, exists=False, delete=False)
            else:
                self._store(bp, combined[bp.index], loaded[bp.index])
        c.start_commit(_json.encode(checkpoint))
        self.stats["txns"] += 1

    def _store(self, bp: BindingPlan, docs: dict[bytes, Combined], loaded: dict[bytes, Any]) -> None:
        for key, item in docs.items():
            doc, reduced = item.doc, item.reduced
            exists = key in loaded
            if exists:
                doc, reduced = bp.reduce(loaded[key], doc), True
            # Like Flow's combiner, a deletion annotation takes effect when documents are reduced
            # together: a lone deletion of a key never stored is kept as a document.
            self._send_store(bp, key, doc, exists=exists, delete=reduced and bp.is_delete(doc))

    def _send_store(self, bp: BindingPlan, key: bytes, doc: Any, *, exists: bool, delete: bool) -> None:
        self.stats["stores"] += 1
        encoded = encode_doc(doc) if bp.has_document else None
        if encoded is not None and self.connector.store_document(bp.index, encoded, exists, delete):
            return
        msg = Store(
            binding=bp.index,
            key_packed=key,
            values_packed=pack(extract(doc, bp.values)),
            doc=msgspec.Raw(encoded) if encoded is not None else EMPTY,
            exists=exists,
            delete=delete,
        )
        self.connector.store(msg)


@dataclass
class Combined:
    doc: Any
    reduced: bool
