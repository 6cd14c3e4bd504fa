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

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgspec
import psycopg
from psycopg import errors as pgerr

from .checkpoint import json_to_stored, stored_to_json
from .config import EndpointConfig
from .connect import Target, connect
from .identifiers import quote_path
from .introspect import existing_tables, lookup
from .protocol.messages import Load, MaterializationSpec, RangeSpec, Store
from .protocol.tuples import unpack
from .sql import dml
from .tables import Column, Table, build_table, checkpoints_path
from .typemap import Converter, ValueError_, writer_for

log = logging.getLogger(__name__)

BUFFER_BYTES = 32 * 1024 * 1024  # staged rows held in memory before they are sent
LOAD_BUFFER_KEYS = 50_000
_json = msgspec.json.Decoder()


class TransactionError(RuntimeError):
    """A transaction cannot complete; nothing of it is committed."""


class FencedOff(TransactionError):
    pass


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
    staged_bytes: int = 0
    has_updates: bool = False
    has_deletes: bool = False
    has_loads: bool = False
    temps_created: set[str] = field(default_factory=set)


def _writer(columns: list[Column], existing: dict[str, str]) -> Writer:
    types: list[str] = []
    convs: list[Converter] = []
    for c in columns:
        copy_type, conv = writer_for(c.type, existing.get(c.field))
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
            conn.execute("SET statement_timeout = 0")
            conn.commit()
        self.fence = 0
        self.bindings = self._bindings()
        self.staged_bytes = 0
        self.stats: dict[str, int] = {}

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
            out.append(BindingState(t, _writer(t.keys, types), _writer(t.columns, types)))
        return out

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
            raise TransactionError(f"binding index {index} is out of range: this materialization has "
                                   f"{len(self.bindings)} binding(s)")
        return self.bindings[index]

    def load(self, msg: Load) -> None:
        b = self.binding(msg.binding)
        if b.table.delta_updates:
            raise TransactionError(f"load for delta-updates binding {msg.binding} ({b.table.collection})")
        key = _key_values(msg.key, msg.key_packed)
        b.load_keys.append(self._convert(b, b.key_writer, key, key))
        if len(b.load_keys) >= LOAD_BUFFER_KEYS:
            self._send_load_keys(b)

    def _send_load_keys(self, b: BindingState) -> None:
        if not b.load_keys:
            return
        temp = dml.temp_name("load", b.table)
        self._ensure_temp(self.load_conn, b, temp, b.table.keys)
        self._copy(self.load_conn, temp, b.key_writer, b.load_keys, b.table)
        b.load_keys = []
        b.has_loads = True

    def flush(self, emit: Callable[[int, bytes], None]) -> int:
        """Run every pending load as one query and emit each document found."""
        for b in self.bindings:
            self._send_load_keys(b)
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
            cur = self.load_conn.cursor()
            for binding, doc in cur.stream("\nUNION ALL\n".join(parts)):
                emit(binding, doc.encode())
                found += 1
        self.load_conn.commit()  # ON COMMIT DELETE ROWS empties the key tables
        return found

    # ----------------------------------------------------------------------------------------
    # Store.

    def store(self, msg: Store) -> None:
        b = self.binding(msg.binding)
        t = b.table
        key = _key_values(msg.key, msg.key_packed)
        if msg.delete and self.hard_delete and not t.delta_updates:
            if msg.exists:  # deleting a key that was never stored writes nothing
                b.deletes.append(self._convert(b, b.key_writer, key, key))
                self._account(b, 64)
            return
        values = _key_values(msg.values, msg.values_packed)
        if len(values) != len(t.values):
            raise TransactionError(
                f"store for binding {msg.binding} ({t.collection}) has {len(values)} value(s) but the field "
                f"selection has {len(t.values)}"
            )
        row = [*key, *values]
        if t.document is not None:
            if not len(msg.doc):
                raise TransactionError(f"store for binding {msg.binding} ({t.collection}) has no document")
            row.append(bytes(msg.doc))
        converted = self._convert(b, b.row_writer, row, key)
        size = len(msg.values_packed) + len(msg.key_packed) + len(msg.doc)
        if msg.exists and not t.delta_updates:
            b.updates.append(converted)
        else:
            b.inserts.append(converted)
        self._account(b, size + 16)

    def _account(self, b: BindingState, size: int) -> None:
        b.staged_bytes += size
        self.staged_bytes += size
        if self.staged_bytes >= BUFFER_BYTES:
            self._send_staged()

    def _send_staged(self) -> None:
        for b in self.bindings:
            self._send_binding(b)
        self.staged_bytes = 0

    def _send_binding(self, b: BindingState) -> None:
        t = b.table
        if b.inserts:
            self._copy(self.store_conn, t.ident, b.row_writer, b.inserts, t)
            b.inserts = []
        if b.updates:
            staging = dml.temp_name("store", t)
            self._ensure_temp(self.store_conn, b, staging, t.columns)
            self._copy(self.store_conn, staging, b.row_writer, b.updates, t)
            b.updates = []
            b.has_updates = True
        if b.deletes:
            staging = dml.temp_name("delete", t)
            self._ensure_temp(self.store_conn, b, staging, t.keys)
            self._copy(self.store_conn, staging, b.key_writer, b.deletes, t)
            b.deletes = []
            b.has_deletes = True
        b.staged_bytes = 0

    def start_commit(self, runtime_checkpoint: bytes | None) -> None:
        """Finish every store, move the checkpoint under our fence, and commit them together."""
        stored = json_to_stored(runtime_checkpoint)
        self._send_staged()
        conn = self.store_conn
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

    def _ensure_temp(self, conn: psycopg.Connection, b: BindingState, name: str, columns: list[Column]) -> None:
        if name in b.temps_created:
            return
        conn.execute(dml.create_temp(name, [(c, c.type.ddl if not c.type.user_ddl else c.type.ddl) for c in columns]))
        b.temps_created.add(name)

    def _copy(self, conn: psycopg.Connection, ident: str, w: Writer, rows: list[list[Any]], t: Table) -> None:
        try:
            with conn.cursor().copy(dml.copy_into(ident, w.columns)) as copy:
                copy.set_types(w.types)
                for row in rows:
                    copy.write_row(row)
        except pgerr.UniqueViolation as err:
            raise TransactionError(
                f"table {'.'.join(t.path)}: a row to insert already exists ({_detail(err)}). The runtime "
                "believed this key was new; was the table written by something else, or restored?"
            ) from None
        except pgerr.NotNullViolation as err:
            raise TransactionError(f"table {'.'.join(t.path)}: {_detail(err)}; a required field is null") from None
        except (psycopg.DataError, pgerr.ProgramLimitExceeded, pgerr.IntegrityError) as err:
            raise TransactionError(f"table {'.'.join(t.path)}: cannot store a row: {_detail(err)}") from None
        except (TypeError, OverflowError) as err:
            raise TransactionError(f"table {'.'.join(t.path)}: a value cannot be encoded: {err}") from None

    def _execute(self, conn: psycopg.Connection, stmt: str, t: Table) -> None:
        try:
            conn.execute(stmt)
        except psycopg.DataError as err:
            raise TransactionError(f"table {'.'.join(t.path)}: {_detail(err)}") from None

    def close(self) -> None:
        for conn in (self.load_conn, self.store_conn):
            try:
                conn.close()
            except Exception:  # closing must never mask the error that brought us here
                pass


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
