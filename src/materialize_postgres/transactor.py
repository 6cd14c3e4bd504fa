"""The transaction loop: fenced Open, bulk Load, COPY-based Store, and commit with the checkpoint.

Exactly-once rests on two things: the runtime checkpoint is written by the same PostgreSQL
transaction as the data, and that write only succeeds while our fence in flow_checkpoints_v1 is
current, so a zombie instance whose range was taken over cannot commit.

Throughput rests on never doing per-row round trips: keys to load go in by binary COPY to a temp
table and come back with one join; rows known to be new go by binary COPY straight into the
target; updates go by COPY into a staging table and one set-based UPDATE; hard deletes likewise
through one DELETE. Rows are buffered per binding up to a byte budget, so memory is bounded by
that budget and not by the size of a transaction.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
from psycopg import errors as pgerr
from psycopg.types.string import ByteaBinaryLoader, BytesBinaryDumper

from . import pgtypes, rowcodec, typemap
from .checkpoint import json_to_stored, stored_to_json
from .config import EndpointConfig
from .connect import Target, connect
from .identifiers import quote_path
from .introspect import existing_tables, lookup
from .protocol.messages import Load, MaterializationSpec, RangeSpec, Store
from .protocol.tuples import key_reader, unpack
from .sql import dml
from .tables import Column, Table, build_table, checkpoints_path
from .typemap import Converter, ValueError_, writer_for

log = logging.getLogger(__name__)

BUFFER_BYTES = 32 * 1024 * 1024  # staged rows held in memory before they are sent
LOAD_BUFFER_KEYS = 50_000
LOAD_BATCH_BYTES = 8 * 1024 * 1024  # loaded documents fetched per round trip
LOAD_BATCH_ROWS = 5000
SORT_MEMORY = 64 << 20  # work_mem of our sessions, at least (_tune_session)
# Above this document size a merge is cheaper as a pipelined per-row UPDATE than through a
# staging table, which would write each large document twice (measured: bench/RESULTS.md).
LARGE_DOC_BYTES = 256 * 1024
_json = msgspec.json.Decoder()


class TransactionError(RuntimeError):
    """A transaction cannot complete; nothing of it is committed."""


class FencedOff(TransactionError):
    pass


class ConnectionLost(TransactionError):
    """PostgreSQL went away mid-transaction (restart, network cut, killed backend)."""


@dataclass
class Writer:
    """How one binding's columns are written: wire types and converters, in column order."""

    columns: list[Column]
    types: list[str]
    converters: list[Converter]


@dataclass
class BindingState:
    table: Table
    key_writer: Writer
    row_writer: Writer
    load_keys: list[list[Any]] = field(default_factory=list)
    inserts: list[list[Any]] = field(default_factory=list)
    updates: list[list[Any]] = field(default_factory=list)
    deletes: list[list[Any]] = field(default_factory=list)
    row_updates: list[list[Any]] = field(default_factory=list)
    # Top-level scalar fields can be read from the parsed document, which is cheaper than
    # decoding packed tuples; None when some field needs the tuple (nested, default, JSON...).
    fast_fields: list[str] | None = None
    # Rows decoded straight from the document (rowcodec.py); None when a column needs the tuple.
    codec: rowcodec.RowCodec | None = None
    staged_bytes: int = 0
    has_updates: bool = False
    has_deletes: bool = False
    has_loads: bool = False
    # Reads a packed key straight into its key row, when every key column is an integer or text
    # taken as is (protocol/tuples.py); None, or a None result, means unpack and convert.
    read_key: Callable[[bytes], list[Any] | None] | None = None
    temps_created: set[str] = field(default_factory=set)


def _writer(columns: list[Column], existing: dict[str, str], uuid_ptr: str = "") -> Writer:
    types: list[str] = []
    convs: list[Converter] = []
    for c in columns:
        copy_type, conv = writer_for(c.type, existing.get(c.field))
        if c.projection.ptr == uuid_ptr and not c.is_key and conv is typemap._as_timestamp:
            # flow_published_at: every row has one, so it goes out as PostgreSQL's microseconds
            # (int8 on the wire, the same bytes as a timestamptz) instead of a datetime per row.
            copy_type, conv = "int8", typemap._as_timestamp_micros
        types.append(copy_type)
        convs.append(conv)
    return Writer(columns, types, convs)


class Transactor:
    def __init__(self, cfg: EndpointConfig, spec: MaterializationSpec, key_range: RangeSpec, target: Target):
        self.cfg = cfg
        self.spec = spec
        self.range = key_range
        self.hard_delete = cfg.hardDelete
        self.no_flow_document = cfg.advanced.no_flow_document
        self.ckpt_ident = quote_path(checkpoints_path(cfg))
        self.load_conn = connect(cfg, target, application="load")
        self.store_conn = connect(cfg, target, application="store")
        for conn in (self.load_conn, self.store_conn):
            _tune_session(conn)
        _prefer_lz4(self.store_conn)
        self.fence = 0
        self.bindings = self._bindings()
        self.staged_bytes = 0
        self.stream: CopyStream | None = None
        self.load_stream: CopyStream | None = None
        self.pending_load_keys = 0
        self._create_temp_tables()

    # ----------------------------------------------------------------------------------------
    # Open.

    def _bindings(self) -> list[BindingState]:
        tables = [build_table(i, b, self.cfg, self.spec.name) for i, b in enumerate(self.spec.bindings)]
        found = existing_tables(self.store_conn, [t.path for t in tables])
        self.store_conn.commit()
        out: list[BindingState] = []
        for t in tables:
            existing = lookup(found, t.path)
            if existing is None:
                raise TransactionError(
                    f"table {'.'.join(t.path)} of binding {t.binding} ({t.collection}) does not exist: "
                    "run Apply (publish the materialization) first"
                )
            types = {c.field: existing.column(c.field).data_type for c in t.columns if existing.column(c.field)}
            missing = [c.field for c in t.columns if c.field not in types]
            if missing:
                raise TransactionError(
                    f"table {'.'.join(t.path)} has no column for field(s) {', '.join(missing)}: run Apply first"
                )
            uuid_ptr = self.spec.bindings[t.binding].collection.uuid_ptr
            rows, keys = _writer(t.columns, types, uuid_ptr), _writer(t.keys, types)
            out.append(
                BindingState(
                    t,
                    keys,
                    rows,
                    fast_fields=_fast_fields(t, uuid_ptr),
                    codec=rowcodec.codec_for(t, rows.converters, uuid_ptr),
                    read_key=_key_reader(keys.converters),
                )
            )
        return out

    def _create_temp_tables(self) -> None:
        """Key tables for loads, staging tables for merges and deletes; emptied at every commit."""
        for b in self.bindings:
            t = b.table
            if t.delta_updates:
                continue
            self.load_conn.execute(dml.create_temp(dml.temp_name("load", t), _typed(b.key_writer)))
            self.store_conn.execute(dml.create_temp(dml.temp_name("store", t), _typed(b.row_writer)))
            self.store_conn.execute(dml.create_temp(dml.temp_name("delete", t), _typed(b.key_writer)))
        self.load_conn.commit()
        self.store_conn.commit()

    def open(self) -> bytes:
        """Install our fence over the shard's key range; return the checkpoint to resume from."""
        name = self.spec.name
        begin, end = self.range.key_begin, self.range.key_end
        bump, covering, insert = dml.install_fence(self.ckpt_ident)
        with self.store_conn.transaction():
            cur = self.store_conn.cursor()
            cur.execute(bump, [name, begin, end])
            row = cur.execute(covering, [name, begin, end]).fetchone()
            if row is None:
                fence, stored, rb, re_ = 0, "", 1, 0
            else:
                fence, rb, re_, stored = row[0], row[1], row[2], row[3]
            if (rb, re_) != (begin, end):
                # A new range, or a child of a split: it starts from its parent's checkpoint.
                cur.execute(insert, [name, begin, end, fence, stored])
        self.store_conn.commit()
        self.fence = fence
        log.info("installed fence", extra={"fields": {"fence": fence, "keyBegin": begin, "keyEnd": end}})
        return stored_to_json(stored)

    # ----------------------------------------------------------------------------------------
    # Load.

    def binding(self, index: int) -> BindingState:
        if not 0 <= index < len(self.bindings):
            raise TransactionError(
                f"binding index {index} is out of range: this materialization has {len(self.bindings)} binding(s)"
            )
        return self.bindings[index]

    def load(self, msg: Load) -> None:
        b = self.binding(msg.binding)
        if b.table.delta_updates:
            raise TransactionError(f"load for delta-updates binding {msg.binding} ({b.table.collection})")
        key = _key_values(msg.key, msg.key_packed)
        self._load_key(b, self._convert(b, b.key_writer, key, key))

    def load_line(self, line: bytes) -> int | None:
        """The hot path of loads: a load request line straight to a key row. Returns the binding,
        or None to have `load` handle the line (and report what is wrong with it)."""
        try:
            req = rowcodec.decode_load_line(line).load
        except (msgspec.MsgspecError, RecursionError):
            return None
        return req.binding if self.load_packed(req.binding, req.key_packed) else None

    def load_packed(self, binding: int, packed: bytes) -> bool:
        """A packed key to load, without a Load message; False to leave it to `load`."""
        try:
            if binding < 0:
                return False
            b = self.bindings[binding]
            if b.table.delta_updates:
                return False
            key = b.read_key(packed) if b.read_key is not None else None
            if key is None:
                key = [
                    conv(v) if v is not None else None
                    for conv, v in zip(b.key_writer.converters, unpack(packed), strict=True)
                ]
        except (IndexError, ValueError, TypeError):
            return False
        self._load_key(b, key)
        return True

    # Keys go to PostgreSQL as they arrive, through one COPY at a time into the binding's key
    # table, so the server ingests them while we decode the next; keys of another binding wait
    # in memory until LOAD_BUFFER_KEYS of them are pending (as stores do with their byte budget).

    def _load_key(self, b: BindingState, key: list[Any]) -> None:
        stream = self.load_stream
        if stream is not None and stream.binding is b:
            stream.write(key)
        elif stream is None and self.pending_load_keys == 0:
            self.load_stream = self._open_load_stream(b)
            self.load_stream.write(key)
        else:
            b.load_keys.append(key)
            self.pending_load_keys += 1
            if self.pending_load_keys >= LOAD_BUFFER_KEYS:
                self._send_load_keys()

    def _open_load_stream(self, b: BindingState) -> CopyStream:
        b.has_loads = True
        return CopyStream(self.load_conn, b, "load", dml.temp_name("load", b.table), b.key_writer)

    def _send_load_keys(self) -> None:
        if self.load_stream is not None:
            stream, self.load_stream = self.load_stream, None
            stream.close()
        for b in self.bindings:
            if b.load_keys:
                stream = self._open_load_stream(b)
                for key in b.load_keys:
                    stream.write(key)
                stream.close()
                b.load_keys = []
        self.pending_load_keys = 0

    def _fetch_loaded(self, query: str, emit: Callable[[int, bytes], None]) -> int:
        """Run the load query through a server-side cursor, fetching batches sized to hold about
        LOAD_BATCH_BYTES of documents: bounded memory, and far fewer round trips than row-at-a-time
        streaming. Documents arrive as raw bytes (text read by bytea's binary loader), undecoded."""
        self.load_conn.execute(dml.INDEX_JOINS)
        cur = self.load_conn.cursor("flow_loaded", binary=True)
        cur.adapters.register_loader("text", ByteaBinaryLoader)
        found, batch = 0, 100
        try:
            cur.execute(query)
            while rows := cur.fetchmany(batch):
                size = 0
                for binding, doc in rows:
                    emit(binding, doc)
                    size += len(doc)
                found += len(rows)
                batch = max(1, min(LOAD_BATCH_ROWS, LOAD_BATCH_BYTES * len(rows) // max(size, 1)))
        finally:
            cur.close()
        return found

    def flush(self, emit: Callable[[int, bytes], None]) -> int:
        """Run every pending load as one query and emit each document found."""
        self._send_load_keys()
        parts = []
        for b in self.bindings:
            if not b.has_loads:
                continue
            temp = dml.temp_name("load", b.table)
            if b.table.document is not None:
                parts.append(dml.load_query(b.table, temp))
            elif self.no_flow_document:
                parts.append(dml.load_query_rebuilt(b.table, temp))
            b.has_loads = False
        found = 0
        if parts:
            found = self._fetch_loaded("\nUNION ALL\n".join(parts), emit)
        self.load_conn.commit()  # ON COMMIT DELETE ROWS empties the key tables
        return found

    # ----------------------------------------------------------------------------------------
    # Store.

    def store(self, msg: Store) -> None:
        b = self.binding(msg.binding)
        t = b.table
        if msg.delete and self.hard_delete and not t.delta_updates:
            if msg.exists:  # deleting a key that was never stored writes nothing
                key = _key_values(msg.key, msg.key_packed)
                self._route(b, "delete", self._convert(b, b.key_writer, key, key), 64)
            return
        row = self._row(b, msg)
        converted = self._convert(b, b.row_writer, row, row[: len(t.keys)])
        size = len(msg.values_packed) + len(msg.key_packed) + len(msg.doc) + 16
        self._put(b, msg.exists, converted, len(msg.doc), size)

    def store_line(self, line: bytes) -> tuple[int, int] | None:
        """The hot path: a store request line straight to a row, when its binding's codec can
        read it. Returns (binding, bytes) when stored, None to have `store` handle the line."""
        try:
            req = rowcodec.decode_store_line(line).store
        except (msgspec.MsgspecError, RecursionError):
            return None
        if not self.store_document(req.binding, bytes(req.doc), req.exists, req.delete, len(line)):
            return None
        return req.binding, len(line)

    def store_document(self, binding: int, doc: bytes, exists: bool, delete: bool, size: int) -> bool:
        """A store read from its document alone by the binding's row codec, without the packed
        key and values; False to leave it to `store` (which reports what is wrong with it)."""
        b = self.bindings[binding] if 0 <= binding < len(self.bindings) else None
        if b is None or b.codec is None or not doc:
            return False
        row = b.codec.row(doc)
        if row is None:
            return False
        if delete and self.hard_delete and not b.table.delta_updates:
            if exists:
                self._route(b, "delete", row[: len(b.table.keys)], 64)
            return True
        # The common case, inlined: the open COPY takes this binding's rows of this kind.
        stream = self.stream
        kind = "update" if exists and not b.table.delta_updates else "insert"
        if stream is not None and stream.binding is b and stream.kind == kind and len(doc) < LARGE_DOC_BYTES:
            stream.write(row)
            return True
        self._put(b, exists, row, len(doc), size)
        return True

    def _put(self, b: BindingState, exists: bool, row: list[Any], doc_bytes: int, size: int) -> None:
        if exists and not b.table.delta_updates:
            if doc_bytes >= LARGE_DOC_BYTES:
                self._stage(b.row_updates, row, size)
            else:
                self._route(b, "update", row, size)
        else:
            self._route(b, "insert", row, size)

    def _row(self, b: BindingState, msg: Store) -> list[Any]:
        t = b.table
        doc = msg.doc
        if t.document is not None and not len(doc):
            raise TransactionError(f"store for binding {msg.binding} ({t.collection}) has no document")
        if b.fast_fields is not None and len(doc) and not len(msg.values):
            try:
                parsed = _json.decode(doc)
            except (msgspec.DecodeError, RecursionError) as err:
                key = _key_values(msg.key, msg.key_packed)
                raise TransactionError(
                    f"store for binding {msg.binding} ({t.collection}), key {_show(key)}: "
                    f"the document cannot be read: {err}"
                ) from None
            if type(parsed) is dict:
                row = [parsed.get(f) for f in b.fast_fields]
                row.append(bytes(doc))
                return row
        key = _key_values(msg.key, msg.key_packed)
        values = _key_values(msg.values, msg.values_packed)
        if len(values) != len(t.values) or len(key) != len(t.keys):
            raise TransactionError(
                f"store for binding {msg.binding} ({t.collection}) has {len(key)} key and {len(values)} value "
                f"field(s), but the field selection has {len(t.keys)} and {len(t.values)}"
            )
        row = [*key, *values]
        if t.document is not None:
            row.append(bytes(doc))
        return row

    # Rows reach PostgreSQL through one COPY stream at a time. The stream stays open while stores
    # keep coming for the same binding and kind, so the server ingests while we decode; rows of
    # another binding or kind wait in memory until the byte budget is spent, then everything
    # is sent.

    def _route(self, b: BindingState, kind: str, row: list[Any], size: int) -> None:
        stream = self.stream
        if stream is not None and stream.binding is b and stream.kind == kind:
            stream.write(row)
            return
        if stream is None and self.staged_bytes == 0:
            self.stream = self._open_stream(b, kind)
            self.stream.write(row)
            return
        self._stage(getattr(b, kind + "s"), row, size)

    def _stage(self, rows: list[list[Any]], row: list[Any], size: int) -> None:
        rows.append(row)
        self.staged_bytes += size
        if self.staged_bytes >= BUFFER_BYTES:
            self._send_staged()

    def _open_stream(self, b: BindingState, kind: str) -> CopyStream:
        t = b.table
        if kind == "insert":
            return CopyStream(self.store_conn, b, kind, t.ident, b.row_writer)
        if kind == "update":
            b.has_updates = True
            return CopyStream(self.store_conn, b, kind, dml.temp_name("store", t), b.row_writer)
        b.has_deletes = True
        return CopyStream(self.store_conn, b, kind, dml.temp_name("delete", t), b.key_writer)

    def _close_stream(self) -> None:
        if self.stream is not None:
            stream, self.stream = self.stream, None
            stream.close()

    def _send_staged(self) -> None:
        self._close_stream()
        for b in self.bindings:
            for kind in ("insert", "update", "delete"):
                rows = getattr(b, kind + "s")
                if rows:
                    stream = self._open_stream(b, kind)
                    for row in rows:
                        stream.write(row)
                    stream.close()
                    rows.clear()
            if b.row_updates:
                self._update_rows(b)
        self.staged_bytes = 0

    def _update_rows(self, b: BindingState) -> None:
        """Pipelined per-row UPDATEs: one network round trip for the whole batch."""
        t, w = b.table, b.row_writer
        stmt = dml.row_update(t)
        nk = len(t.keys)
        if stmt is not None:
            # Parameters carry their real types: the publication time back to a datetime.
            types = [
                "timestamptz" if ty == "int8" and c.type.copy_type == "timestamptz" else ty
                for c, ty in zip(w.columns, w.types, strict=True)
            ]
            params = [
                [
                    pgtypes.wrap(ty, typemap.from_pg_micros(v) if ty == "timestamptz" and type(v) is int else v)
                    for ty, v in zip([*types[nk:], *types[:nk]], [*row[nk:], *row[:nk]], strict=True)
                ]
                for row in b.row_updates
            ]
            try:
                with self.store_conn.pipeline():
                    self.store_conn.cursor().executemany(stmt, params)
            except psycopg.Error as err:
                raise _store_error(err, t) from None
        b.row_updates.clear()

    def start_commit(self, runtime_checkpoint: bytes | None) -> None:
        """Finish every store, move the checkpoint under our fence, and commit them together."""
        stored = json_to_stored(runtime_checkpoint)
        self._send_staged()
        conn = self.store_conn
        if any(b.has_updates or b.has_deletes for b in self.bindings):
            conn.execute(dml.INDEX_JOINS)
        for b in self.bindings:
            t = b.table
            if b.has_updates:
                stmt = dml.merge_update(t, dml.temp_name("store", t))
                if stmt:
                    self._execute(conn, stmt, t)
                b.has_updates = False
            if b.has_deletes:
                self._execute(conn, dml.delete_keys(t, dml.temp_name("delete", t)), t)
                b.has_deletes = False
        cur = conn.execute(
            dml.update_fence(self.ckpt_ident),
            [stored, self.spec.name, self.range.key_begin, self.range.key_end, self.fence],
        )
        if cur.rowcount != 1:
            conn.rollback()
            raise FencedOff(
                "this instance was fenced off by another: a newer instance of this shard (or of a shard "
                "covering its key range) has started, so this one must stop without committing"
            )
        try:
            conn.commit()
        except psycopg.Error as err:
            raise TransactionError(f"committing the store transaction failed: {err}") from None

    # ----------------------------------------------------------------------------------------
    # Helpers.

    def _convert(self, b: BindingState, w: Writer, row: list[Any], key: list[Any]) -> list[Any]:
        try:
            return [conv(v) if v is not None else None for conv, v in zip(w.converters, row, strict=True)]
        except ValueError_ as err:
            bad = next(c for c, conv, v in zip(w.columns, w.converters, row, strict=True) if _fails(conv, v))
            raise TransactionError(
                f"table {'.'.join(b.table.path)}, key {_show(key)}: field {bad.field!r} cannot be stored as "
                f"{bad.type.ddl}: {err}"
            ) from None
        except ValueError:
            raise TransactionError(
                f"table {'.'.join(b.table.path)}, key {_show(key)}: the document has {len(row)} field value(s) "
                f"but the table has {len(w.columns)} column(s)"
            ) from None

    def _execute(self, conn: psycopg.Connection, stmt: str, t: Table) -> None:
        try:
            conn.execute(stmt)
        except psycopg.Error as err:
            raise _store_error(err, t) from None

    def close(self) -> None:
        for stream in (self.stream, self.load_stream):
            if stream is not None:
                stream._abort(TransactionError("closing"))
        self.stream = self.load_stream = None
        for conn in (self.load_conn, self.store_conn):
            with contextlib.suppress(Exception):  # closing must never mask the error that brought us here
                conn.close()


class CopyStream:
    """An open binary COPY into one table, fed row by row.

    Rows go out as our buffer fills, so the server ingests while we decode the next requests.
    (psycopg's queued writer, which sends from a background thread, measured slower here: the hot
    path leaves little Python work to overlap, and the thread contends for the GIL.) Rows are
    encoded by psycopg's own C row formatter straight into our buffer: `Copy.write_row` adds two
    Python calls per row around that same function.
    """

    def __init__(self, conn: psycopg.Connection, b: BindingState, kind: str, ident: str, w: Writer):
        self.binding, self.kind, self.table = b, kind, b.table
        cur = conn.cursor()
        # JSON's binary form is its text and JSONB's a version byte and the text; the converters
        # produce exactly those bytes, so the columns are declared bytea to the COPY and sent by
        # psycopg's C bytes dumper (registered here: by OID psycopg would pick its DB-API one,
        # which is Python).
        cur.adapters.register_dumper(bytes, BytesBinaryDumper)
        self._cm = cur.copy(dml.copy_into(ident, w.columns))
        try:
            self.copy = self._cm.__enter__()
            self.copy.set_types(["bytea" if t in ("json", "jsonb") else t for t in w.types])
        except psycopg.Error as err:
            raise _store_error(err, self.table) from None
        self._buffer = bytearray(_COPY_SIGNATURE)
        self._transformer = self.copy.formatter.transformer
        self.write = self._write if _format_row is not None else self._write_row

    def _write(self, row: list[Any]) -> None:
        try:
            _format_row(row, self._transformer, self._buffer)  # type: ignore[misc]
        except (TypeError, OverflowError, psycopg.DataError) as err:
            raise self._unencodable(err) from None
        if len(self._buffer) > _COPY_BUFFER:
            self._send()

    def _write_row(self, row: list[Any]) -> None:
        try:
            self.copy.write_row(row)
        except (TypeError, OverflowError, psycopg.DataError) as err:
            raise self._unencodable(err) from None

    def _unencodable(self, err: Exception) -> TransactionError:
        self._abort(err)
        return TransactionError(f"table {'.'.join(self.table.path)}: a value cannot be encoded: {err}")

    def _send(self) -> None:
        data, self._buffer = self._buffer, bytearray()
        self.copy.write(data)

    def _abort(self, err: BaseException) -> None:
        with contextlib.suppress(Exception):  # the COPY is failing anyway; report the first error
            self._cm.__exit__(type(err), err, None)

    def close(self) -> None:
        try:
            if _format_row is not None:
                self._buffer += _COPY_TRAILER
                self._send()
            self._cm.__exit__(None, None, None)
        except psycopg.Error as err:
            raise _store_error(err, self.table) from None


# psycopg's binary COPY row formatter (C with psycopg[binary]), and the framing of the binary COPY
# format (PostgreSQL docs, "COPY ... Binary Format"). Without them, rows go through Copy.write_row.
try:
    from psycopg._copy_base import format_row_binary as _format_row
except ImportError:  # pragma: no cover - another psycopg layout
    _format_row = None  # type: ignore[assignment]
_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\0" + b"\x00\x00\x00\x00" * 2  # signature, flags, header extension
_COPY_TRAILER = b"\xff\xff"
_COPY_BUFFER = 1 << 15


def _tune_session(conn: psycopg.Connection) -> None:
    """Settings of our own sessions, for the few statements they run.

    No statement timeout: a large commit may take long. No JIT: the temporary tables have no
    statistics, so the planner guesses a few hundred thousand rows, and compiling then costs more
    than the index probes it would speed up. Memory to sort the key and staging tables in one
    pass, unless the server already allows more: its default of 4 MB spilled the sort of a merge
    of 20,000 documents of 1 KiB to disk.
    """
    conn.execute("SET statement_timeout = 0")
    conn.commit()
    if conn.info.server_version >= 110000:  # JIT arrived in PostgreSQL 11
        _try_setting(conn, "SET jit = off")
    _try_setting(
        conn,
        f"SELECT set_config('work_mem', '{SORT_MEMORY >> 10}kB', false) "
        f"WHERE pg_size_bytes(current_setting('work_mem')) < {SORT_MEMORY}",
    )


def _try_setting(conn: psycopg.Connection, stmt: str) -> None:
    """A setting that only makes us faster: a server that refuses it (a managed service's
    restrictions, a proxy) costs speed, never the session."""
    try:
        conn.execute(stmt)
        conn.commit()  # a session SET in a transaction that rolls back is undone with it
    except psycopg.Error as err:
        conn.rollback()
        log.info(
            "a session setting was refused; going on without it",
            extra={"fields": {"statement": stmt, "error": str(err).strip()}},
        )


def _prefer_lz4(conn: psycopg.Connection) -> None:
    """Compress the large values this session writes (TOAST) with LZ4 where the server has it.

    Documents over about 2 KB are compressed on their way into the table; with the server's
    default, pglz, that compression is most of the server's work for large documents. LZ4 took
    1 MiB JSON documents in at 2-2.6x the speed and reads them back faster (bench/PROFILE.md),
    at some cost in space. Only this session's default changes: values already stored keep their
    compression, every reader decompresses either, and a column given a compression of its own
    (ALTER TABLE ... ALTER COLUMN ... SET COMPRESSION pglz) keeps it. PostgreSQL before 14, or a
    build without LZ4, has no such choice, and keeps its default.
    """
    _try_setting(
        conn,
        "SELECT set_config('default_toast_compression', 'lz4', false) FROM pg_settings "
        "WHERE name = 'default_toast_compression' AND 'lz4' = ANY(enumvals)",
    )


def _store_error(err: psycopg.Error, t: Table) -> TransactionError:
    where = f"table {'.'.join(t.path)}"
    if isinstance(err, psycopg.OperationalError) and not isinstance(err, pgerr.QueryCanceled):
        return ConnectionLost(" ".join(str(err).split()))
    if isinstance(err, pgerr.UniqueViolation):
        return TransactionError(
            f"{where}: a row to insert already exists ({_detail(err)}). The runtime believed this key was "
            "new: was the table written by something else, or restored from a backup?"
        )
    if isinstance(err, pgerr.NotNullViolation):
        return TransactionError(f"{where}: {_detail(err)}; a required field is missing or null")
    return TransactionError(f"{where}: cannot store a row: {_detail(err)}")


def _typed(w: Writer) -> list[tuple[Column, str]]:
    return [(c, c.type.ddl) for c in w.columns]


def _fast_fields(t: Table, uuid_ptr: str) -> list[str] | None:
    """Document properties to read directly, in column order, when every column allows it."""
    if t.document is None:
        return None
    out = []
    for c in [*t.keys, *t.values]:
        p = c.projection
        simple = p.ptr.count("/") == 1 and "~" not in p.ptr and p.ptr != uuid_ptr
        scalar = c.type.flat in ("integer", "number", "boolean", "string", "string_integer", "string_number", "binary")
        if not (simple and scalar and not len(p.inference.default)):
            return None
        out.append(p.ptr[1:])
    return out


_AS_IS: dict[Converter, type] = {typemap._as_int: int, typemap._as_text: str}


def _key_reader(converters: list[Converter]) -> Callable[[bytes], list[Any] | None] | None:
    kinds = [_AS_IS.get(conv) for conv in converters]
    if not kinds or None in kinds:
        return None
    return key_reader(tuple(k for k in kinds if k is not None))


def _key_values(raw: msgspec.Raw | None, packed: bytes) -> list[Any]:
    if raw is not None and len(raw):
        parsed = _json.decode(raw)
        return [_json_elem(v) for v in parsed]
    return unpack(packed)


def _json_elem(v: Any) -> Any:
    # Objects and arrays are stored as raw JSON, as they arrive in packed tuples.
    return msgspec.json.encode(v) if isinstance(v, dict | list) else v


def _fails(conv: Converter, v: Any) -> bool:
    if v is None:
        return False
    try:
        conv(v)
    except (ValueError_, ValueError):
        return True
    return False


def _show(key: list[Any]) -> str:
    text = msgspec.json.encode([k.decode() if isinstance(k, bytes) else k for k in key]).decode()
    return text if len(text) < 200 else text[:200] + "…"


def _detail(err: psycopg.Error) -> str:
    diag = err.diag
    parts = [diag.message_primary or str(err).strip()]
    if diag.message_detail:
        parts.append(diag.message_detail)
    return " ".join(parts)
