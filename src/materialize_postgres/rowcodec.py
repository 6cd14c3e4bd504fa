"""Store requests decoded straight into table rows: the per-document hot path.

A store request carries the document and, as packed tuples, the values the runtime projected
out of it. Unpacking tuples is Python work for every value. Reading the same fields from the
document is not, when msgspec does it: per binding we build a msgspec type holding exactly the
projected locations, typed as their columns want them, and decode each document into it in C.

This is an optimisation with an exit: whenever a document is anything but plain (a value of an
unexpected type, a missing parent object, a NUL character, an integer out of range, a binding
it cannot describe) `RowCodec.row` returns None and the general path, which unpacks the tuples
and names the offending field in its errors, handles the request instead.
"""

from __future__ import annotations

import datetime as dt
import operator
from collections.abc import Callable
from dataclasses import dataclass
from typing import Annotated, Any

import msgspec

from . import typemap
from .tables import Column, Table

INT64 = Annotated[int, msgspec.Meta(ge=typemap.INT64_MIN, le=typemap.INT64_MAX)]
AWARE = Annotated[dt.datetime, msgspec.Meta(tz=True)]

# Column converters whose whole job msgspec's typed decoding does (or, for JSON, makes moot).
_NATIVE: dict[Callable[[Any], Any], Any] = {
    typemap._as_int: INT64,
    typemap._as_float: float,
    typemap._as_bool: bool,
    typemap._as_text: str,
    typemap._as_timestamp: AWARE,
    typemap._as_date: dt.date,
}

# 100 ns ticks from the UUID epoch (1582-10-15) to the Unix epoch, then on to PostgreSQL's (2000-01-01).
_UUID_TO_PG_EPOCH = 0x01B21DD213814000 + 946_684_800 * 10_000_000
_NULL = msgspec.Raw(b"null")


class StoreRequest(msgspec.Struct):
    binding: int = 0
    doc: msgspec.Raw = msgspec.Raw(b"")
    exists: bool = False
    delete: bool = False


class _Line(msgspec.Struct):
    store: StoreRequest


decode_store_line = msgspec.json.Decoder(_Line).decode


class LoadRequest(msgspec.Struct, rename="camel"):
    binding: int = 0
    key_packed: bytes = b""


class _LoadLine(msgspec.Struct):
    load: LoadRequest


decode_load_line = msgspec.json.Decoder(_LoadLine).decode


def published_micros(text: str) -> int:
    """The publication time in a Flow document UUID (v1) as PostgreSQL's timestamptz microseconds,
    rounded as PostgreSQL rounds the runtime's 100 ns timestamp."""
    if len(text) != 36 or text[14] != "1":
        raise ValueError("not a v1 UUID")
    micros, rest = divmod(int(text[15:18] + text[9:13] + text[0:8], 16) - _UUID_TO_PG_EPOCH, 10)
    if rest > 5 or (rest == 5 and micros & 1):
        micros += 1
    return micros


def published_at(text: str) -> dt.datetime:
    return typemap.from_pg_micros(published_micros(text))


@dataclass
class _Slot:
    column: int  # index in the row
    path: list[str]  # property names from the document root
    kind: str  # "native", "json", "convert" or "published"
    annotation: Any
    default: Any
    convert: Callable[[Any], Any] | None = None


class RowCodec:
    """Turns one binding's documents into rows (key, values, document) ready for COPY."""

    def __init__(self, slots: list[_Slot], document: Callable[[bytes], Any] | None):
        self._document = document
        self._decode = msgspec.json.Decoder(_struct_for(slots, ())).decode
        self._get = operator.attrgetter(*[".".join(f"f{i}" for i in _attr_path(slots, s)) for s in slots])
        if len(slots) == 1:
            get = self._get
            self._get = lambda doc: (get(doc),)
        self._fixups = [(s.column, s.kind, s.convert) for s in slots if s.kind != "native"]

    def row(self, doc: bytes) -> list[Any] | None:
        """The row read from a document's JSON text, or None to leave it to the general path."""
        # Text columns drop NUL characters: the general path does that. (`find`, not `in`: bytes
        # `in` first tries the needle as an integer, and raises and clears an error every call.)
        if doc.find(b"\\u0000") != -1:
            return None
        try:
            row = list(self._get(self._decode(doc)))
            for i, kind, convert in self._fixups:
                v = row[i]
                if v is None:
                    continue
                if kind == "published":
                    row[i] = published_micros(v)
                elif kind == "json":
                    row[i] = None if v == _NULL else v
                else:
                    value = msgspec.json.decode(v)
                    row[i] = None if value is None else convert(_raw_containers(value))  # type: ignore[misc]
        except (msgspec.MsgspecError, AttributeError, ValueError, TypeError, OverflowError, RecursionError):
            return None
        row.append(doc if self._document is None else self._document(doc))
        return row


def codec_for(table: Table, converters: list[Callable[[Any], Any]], uuid_ptr: str) -> RowCodec | None:
    """A codec for the table's rows, or None when some column cannot be read from the document."""
    if table.document is None:
        return None
    columns = [*table.keys, *table.values]
    slots: list[_Slot] = []
    for i, (c, convert) in enumerate(zip(columns, converters, strict=False)):
        slot = _slot(i, c, convert, uuid_ptr)
        if slot is None:
            return None
        slots.append(slot)
    if not slots or not _consistent(slots):
        return None
    doc_convert = converters[len(columns)]
    document: Callable[[bytes], Any] | None
    if doc_convert is typemap._as_json:
        document = None  # the text as it came
    elif doc_convert is typemap._as_jsonb:
        document = typemap._as_jsonb
    else:
        return None
    return RowCodec(slots, document)


def _slot(i: int, c: Column, convert: Callable[[Any], Any], uuid_ptr: str) -> _Slot | None:
    ptr = c.projection.ptr
    if not ptr.startswith("/") or ptr == "/":
        return None
    path = [p.replace("~1", "/").replace("~0", "~") for p in ptr[1:].split("/")]
    if any(p.isdigit() or p == "-" for p in path):
        return None  # may index an array
    default: Any = None
    if len(c.projection.inference.default):
        try:
            default = convert(_raw_containers(msgspec.json.decode(c.projection.inference.default)))
        except (ValueError, TypeError, msgspec.MsgspecError):
            return None
    if ptr == uuid_ptr:
        if convert is not typemap._as_timestamp_micros:
            return None  # the transactor writes the publication time as int8 microseconds
        if c.not_null:
            return _Slot(i, path, "published", str, msgspec.NODEFAULT)
        return _Slot(i, path, "published", str | None, None)
    native = _NATIVE.get(convert)
    if convert is typemap._as_json:
        return _Slot(i, path, "json", msgspec.Raw, default)
    if native is not None:
        if c.not_null and default is None:
            return _Slot(i, path, "native", native, msgspec.NODEFAULT)
        return _Slot(i, path, "native", native | None, default)
    return _Slot(i, path, "convert", msgspec.Raw, default, convert)


def _consistent(slots: list[_Slot]) -> bool:
    """No location is both a column's value and the parent of another column's."""
    leaves = {tuple(s.path) for s in slots}
    parents = {tuple(s.path[:n]) for s in slots for n in range(1, len(s.path))}
    return len(leaves) == len(slots) and not leaves & parents


def _attr_path(slots: list[_Slot], slot: _Slot) -> list[int]:
    """Attribute indexes (f0, f1, ...) from the root struct down to the slot's field."""
    out = []
    for depth, name in enumerate(slot.path):
        names = _names_at(slots, tuple(slot.path[:depth]))
        out.append(names.index(name))
    return out


def _names_at(slots: list[_Slot], prefix: tuple[str, ...]) -> list[str]:
    names: list[str] = []
    for s in slots:
        if tuple(s.path[: len(prefix)]) == prefix and len(s.path) > len(prefix) and s.path[len(prefix)] not in names:
            names.append(s.path[len(prefix)])
    return names


def _struct_for(slots: list[_Slot], prefix: tuple[str, ...]) -> type[msgspec.Struct]:
    fields: list[tuple[str, Any, Any]] = []
    rename: dict[str, str] = {}
    for n, name in enumerate(_names_at(slots, prefix)):
        attr = f"f{n}"
        rename[attr] = name
        path = (*prefix, name)
        leaf = next((s for s in slots if tuple(s.path) == path), None)
        if leaf is None:
            # A parent object: absent or null makes attribute access fail, and the general path
            # takes the document.
            fields.append((attr, _struct_for(slots, path) | None, None))
        elif leaf.default is msgspec.NODEFAULT:
            fields.append((attr, leaf.annotation, msgspec.NODEFAULT))
        else:
            fields.append((attr, leaf.annotation, leaf.default))
    required = [f[:2] for f in fields if f[2] is msgspec.NODEFAULT]
    optional = [f for f in fields if f[2] is not msgspec.NODEFAULT]
    return msgspec.defstruct("Doc_" + "_".join(prefix), [*required, *optional], rename=rename)


def _raw_containers(v: Any) -> Any:
    # Converters take objects and arrays as raw JSON, as they arrive in packed tuples.
    return msgspec.json.encode(v) if isinstance(v, dict | list) else v
