"""From a projection's inferred JSON types to a PostgreSQL column type, and from a JSON value to
the Python value that psycopg writes into that column by binary COPY.

The mapping follows the Go connector so that tables stay interchangeable between the two.
"""

from __future__ import annotations

import base64
import binascii
import datetime as dt
import hashlib
import ipaddress
import math
import re
import struct
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

import msgspec

from .identifiers import MAX_IDENTIFIER_BYTES, quote, truncate
from .protocol.messages import Projection, StringInference

JSONB_MEDIA_TYPE = "application/vnd.estuary.postgresql.jsonb+json"
INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1

_encode_json = msgspec.json.Encoder().encode


class ValueError_(ValueError):
    """A value that cannot be written to its column; the message says why."""


Converter = Callable[[Any], Any]


@dataclass(frozen=True)
class ColumnType:
    """How one field is stored.

    `ddl` is the type in CREATE TABLE; `compatible` the information_schema `data_type` names an
    existing column may have and still be written without a migration; `copy_type` the type name
    psycopg uses for binary COPY; `convert` turns a JSON value into what psycopg dumps for it.
    Types psycopg has no binary dumper for (JSON, JSONB, INTERVAL, MACADDR) are encoded here into
    their binary wire form, which pgtypes.py's dumpers pass through unchanged.
    """

    ddl: str
    flat: str
    copy_type: str
    convert: Converter
    compatible: tuple[str, ...] = ()
    enum_type: str | None = None  # quoted "schema".name of an enum type
    enum_name: str | None = None  # bare name, as information_schema.udt_name shows it
    enum_values: tuple[str, ...] = ()
    user_ddl: bool = False
    uncast: str = ""  # how no_flow_document loads turn the column back into JSON
    extra: dict[str, Any] = field(default_factory=dict)

    def is_compatible(self, data_type: str, udt_name: str = "") -> bool:
        if self.user_ddl:
            return True
        data_type = data_type.lower()
        if self.enum_name is not None:
            return data_type == "user-defined" and udt_name.lower() == truncate(self.enum_name).lower()
        return data_type == self.ddl.lower() or data_type in self.compatible


# --------------------------------------------------------------------------------------------
# Flattening the inferred types.


_FLAT_NAMES = frozenset({"string", "integer", "number", "fractional", "boolean", "object", "array"})


def flat_type(p: Projection) -> str:
    inf = p.inference
    types = [t for t in inf.types if t != "null"]
    fmt = inf.string.format if inf.string else ""
    if not p.is_primary_key and inf.string is not None:
        allowed = set(inf.types)
        if fmt == "integer" and allowed <= {"integer", "null", "string"}:
            return "string_integer"
        if fmt == "number" and allowed <= {"number", "null", "string"}:
            return "string_number"
    types = [t for t in types if t in _FLAT_NAMES]
    if not types:
        return "never"
    if len(types) > 1:
        return "multiple"  # even integer and number: the Go connector stores either as JSON
    t = types[0]
    if t == "string":
        enc = inf.string.content_encoding if inf.string else ""
        media = inf.string.content_type if inf.string else ""
        if enc == "base64" and media in ("", "application/octet-stream"):
            return "binary"
        return "string"
    if t == "fractional":
        return "number"
    return t


def must_exist(p: Projection) -> bool:
    return p.inference.must_exist


def describe_types(p: Projection) -> str:
    """A schema summary for error messages, in the Go connector's shape."""
    inf = p.inference
    parts = [f"type: [{', '.join(inf.types)}]"]
    if inf.string:
        if inf.string.format:
            parts.append(f"format: {inf.string.format}")
        if inf.string.content_type:
            parts.append(f"content-type: {inf.string.content_type}")
        if inf.string.content_encoding:
            parts.append(f"content-encoding: {inf.string.content_encoding}")
        if inf.string.max_length:
            parts.append(f"maxLength: {inf.string.max_length}")
    return "{ " + ", ".join(parts) + " }"


# --------------------------------------------------------------------------------------------
# Value converters. Each takes the JSON value from a packed tuple (objects and arrays arrive as
# raw JSON bytes) and returns what psycopg's binary dumper for the column type expects.


def _as_json(v: Any) -> bytes:
    """JSON's binary wire format is its text, so raw JSON goes out untouched."""
    if isinstance(v, bytes | bytearray | memoryview):
        return bytes(v)
    return _encode_json(v)


def _as_jsonb(v: Any) -> bytes:
    # JSONB's binary wire format is a version byte followed by the text.
    return b"\x01" + _as_json(v)


def _as_int(v: Any) -> int:
    if isinstance(v, bool) or not isinstance(v, int):
        if isinstance(v, float) and v.is_integer():
            v = int(v)
        elif isinstance(v, str):
            try:
                v = int(v)
            except ValueError:
                raise ValueError_(f"{v!r} is not an integer") from None
        else:
            raise ValueError_(f"{v!r} is not an integer")
    if not INT64_MIN <= v <= INT64_MAX:
        raise ValueError_(f"{v} does not fit in a BIGINT column (64-bit); widen the schema's maximum")
    return v


def _as_float(v: Any) -> float:
    if isinstance(v, bool):
        raise ValueError_(f"{v!r} is not a number")
    if isinstance(v, int | float):
        return float(v)
    if isinstance(v, str):
        try:
            return float(v)
        except ValueError:
            pass
    raise ValueError_(f"{v!r} is not a number")


def _as_bool(v: Any) -> bool:
    if isinstance(v, bool):
        return v
    raise ValueError_(f"{v!r} is not a boolean")


def _as_text(v: Any) -> str:
    if not isinstance(v, str):
        raise ValueError_(f"{v!r} is not a string")
    # PostgreSQL text cannot hold NUL characters; the Go connector drops them too.
    return v.replace("\x00", "") if "\x00" in v else v


def _as_string_form(v: Any) -> str:
    """castToString: any JSON value as text, as the Go connector renders it."""
    if isinstance(v, str):
        return _as_text(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        return _float_text(v)
    if v is None:
        return "null"
    return _as_json(v).decode()


def _float_text(v: float) -> str:
    """The shortest digits that read back as `v`, never in exponent form: 1e20 is "100000000000000000000"."""
    if math.isnan(v):
        return "NaN"
    if math.isinf(v):
        return "+Inf" if v > 0 else "-Inf"
    text = format(Decimal(repr(v)), "f")
    return text.removesuffix(".0") if "." in text and text.endswith(".0") else text


def _as_numeric(v: Any) -> Decimal | int:
    if isinstance(v, bool):
        raise ValueError_(f"{v!r} is not a number")
    if isinstance(v, int):
        return v
    try:
        d = Decimal(str(v))
    except InvalidOperation:
        raise ValueError_(f"{v!r} is not a number") from None
    return d


def _as_bytes(v: Any) -> bytes:
    if not isinstance(v, str):
        raise ValueError_(f"{v!r} is not a base64 string")
    try:
        return base64.b64decode(v, validate=True)
    except (binascii.Error, ValueError):
        raise ValueError_(f"{v[:40]!r} is not valid base64") from None


def _as_date(v: Any) -> dt.date:
    s = _as_text(v)
    if s.startswith("0000-"):
        # Year 0 does not exist in PostgreSQL; like the Go connector, clamp a valid one to 0001-01-01.
        _as_date("0001-" + s[5:])
        return dt.date(1, 1, 1)
    try:
        if len(s) != 10 or s[4] != "-" or s[7] != "-":
            raise ValueError
        return dt.date.fromisoformat(s)
    except ValueError:
        raise ValueError_(f"{s!r} is not a date (YYYY-MM-DD) between years 1 and 9999") from None


_TS_FIX = str.maketrans({"t": "T", "z": "Z", " ": "T"})
_FRACTION = re.compile(r"\.(\d+)")


def _split_fraction(s: str) -> tuple[str, int]:
    """Seconds' fraction rounded to microseconds, as PostgreSQL rounds it (Python truncates)."""
    m = _FRACTION.search(s)
    if not m:
        return s, 0
    digits = m.group(1)
    micros = round(int(digits) / 10 ** (len(digits) - 6)) if len(digits) > 6 else int(digits.ljust(6, "0"))
    return s[: m.start()] + s[m.end() :], micros


def _as_timestamp(v: Any) -> dt.datetime:
    s = _as_text(v).translate(_TS_FIX)
    if s.startswith("0000-"):
        return dt.datetime(1, 1, 1, tzinfo=dt.UTC)
    whole, micros = _split_fraction(s)
    try:
        ts = dt.datetime.fromisoformat(whole)
    except ValueError:
        raise ValueError_(f"{s!r} is not an RFC 3339 date-time between years 1 and 9999") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    return ts + dt.timedelta(microseconds=micros)


# PostgreSQL's binary timestamptz is a big-endian int64 of microseconds since 2000-01-01 UTC, the
# same bytes as an int8: a column written as such skips building a datetime per row.
PG_EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
_MICROSECOND = dt.timedelta(microseconds=1)


def pg_micros(ts: dt.datetime) -> int:
    return (ts - PG_EPOCH) // _MICROSECOND


def from_pg_micros(micros: int) -> dt.datetime:
    return PG_EPOCH + dt.timedelta(microseconds=micros)


def _as_timestamp_micros(v: Any) -> int:
    """A date-time as PostgreSQL's microseconds, for timestamptz columns COPY'd as int8."""
    return pg_micros(_as_timestamp(v))


def _as_time(v: Any) -> dt.time:
    s = _as_text(v).translate(_TS_FIX)
    whole, micros = _split_fraction(s)
    try:
        # A TIME column keeps no zone: PostgreSQL drops it on input, and so do we.
        t = dt.time.fromisoformat(whole).replace(tzinfo=None)
    except ValueError:
        raise ValueError_(f"{s!r} is not a time of day (HH:MM:SS[.frac][zone])") from None
    full = dt.datetime.combine(dt.date(2000, 1, 1), t) + dt.timedelta(microseconds=micros)
    return full.time() if full.date() == dt.date(2000, 1, 1) else dt.time(23, 59, 59, 999999)


_DURATION = re.compile(
    r"^(?P<sign>-)?P(?:(?P<y>\d+(?:\.\d+)?)Y)?(?:(?P<mo>\d+(?:\.\d+)?)M)?(?:(?P<w>\d+(?:\.\d+)?)W)?"
    r"(?:(?P<d>\d+(?:\.\d+)?)D)?(?:T(?:(?P<h>\d+(?:\.\d+)?)H)?(?:(?P<mi>\d+(?:\.\d+)?)M)?"
    r"(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def _as_interval(v: Any) -> bytes:
    """An ISO 8601 duration as PostgreSQL's binary interval: microseconds, days, months."""
    s = _as_text(v).strip()
    m = _DURATION.match(s)
    if not m or s in ("P", "-P") or s.endswith("T"):
        raise ValueError_(f"{s!r} is not an ISO 8601 duration such as P1DT2H30M")
    g = {k: Decimal(x) for k, x in m.groupdict().items() if x and k != "sign"}
    months = g.get("y", Decimal(0)) * 12 + g.get("mo", Decimal(0))
    days = g.get("w", Decimal(0)) * 7 + g.get("d", Decimal(0))
    micros = (g.get("h", Decimal(0)) * 3600 + g.get("mi", Decimal(0)) * 60 + g.get("s", Decimal(0))) * 1_000_000
    # Fractions of months and days spill into the smaller unit, as PostgreSQL does.
    whole_months = int(months)
    days += (months - whole_months) * 30
    whole_days = int(days)
    micros += (days - whole_days) * 86_400_000_000
    sign = -1 if m.group("sign") else 1
    return struct.pack(">qii", sign * int(micros), sign * whole_days, sign * whole_months)


def _as_cidr(v: Any) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    s = _as_text(v)
    try:
        return ipaddress.ip_network(s)
    except ValueError:
        raise ValueError_(f"{s!r} is not an IP address or network") from None


_MAC_SEP = str.maketrans("", "", ":-.")


def _mac_bytes(v: Any, sizes: tuple[int, ...]) -> bytes:
    s = _as_text(v)
    digits = s.translate(_MAC_SEP)
    try:
        raw = bytes.fromhex(digits)
    except ValueError:
        raw = b""
    if len(raw) not in sizes:
        raise ValueError_(f"{s!r} is not a MAC address")
    return raw


def _as_macaddr(v: Any) -> bytes:
    return _mac_bytes(v, (6,))


def _as_macaddr8(v: Any) -> bytes:
    raw = _mac_bytes(v, (6, 8))
    # A 6-byte MAC in a MACADDR8 column is stored EUI-64 style, as PostgreSQL does.
    return raw[:3] + b"\xff\xfe" + raw[3:] if len(raw) == 6 else raw


def _as_uuid(v: Any) -> uuid.UUID:
    s = _as_text(v)
    try:
        return uuid.UUID(s)
    except ValueError:
        raise ValueError_(f"{s!r} is not a UUID") from None


def _as_enum(v: Any) -> str:
    return _as_text(v)


# --------------------------------------------------------------------------------------------
# The mapping.


_FORMATS: dict[str, tuple[str, str, Converter, tuple[str, ...], str]] = {
    # format: (DDL, copy type, converter, compatible data_types, uncast expression)
    "date": ("DATE", "date", _as_date, (), "TO_CHAR({c}, 'YYYY-MM-DD')"),
    "date-time": (
        "TIMESTAMPTZ",
        "timestamptz",
        _as_timestamp,
        ("timestamp with time zone",),
        "to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')",
    ),
    "time": ("TIME", "time", _as_time, ("time without time zone",), "TO_CHAR({c}, 'HH24:MI:SS.US\"Z\"')"),
    "duration": ("INTERVAL", "interval", _as_interval, (), ""),
    "ipv4": ("CIDR", "cidr", _as_cidr, (), ""),
    "ipv6": ("CIDR", "cidr", _as_cidr, (), ""),
    "macaddr": ("MACADDR", "macaddr", _as_macaddr, (), ""),
    "macaddr8": ("MACADDR8", "macaddr8", _as_macaddr8, (), ""),
    "uuid": ("UUID", "uuid", _as_uuid, ("text", "character varying"), ""),
}

TEXT = ColumnType("TEXT", "string", "text", _as_text, ("character varying",))


def _json_type(p: Projection, flags: dict[str, bool], flat: str) -> ColumnType:
    if flags.get("jsonb", True) and p.inference.content_media_type == JSONB_MEDIA_TYPE:
        return ColumnType("JSONB", flat, "jsonb", _as_jsonb)
    return ColumnType("JSON", flat, "json", _as_json)


def enum_type_name(table: str, fieldname: str) -> str:
    """The enum type's bare name: `<table>_<field>_flow_enum`, hashed when it would pass 63 bytes."""
    table = truncate(table)
    base = f"{table}_{fieldname}_flow_enum"
    if len(base.encode()) <= MAX_IDENTIFIER_BYTES:
        return base
    digest = hashlib.sha256(f"{table}_{fieldname}".encode()).hexdigest()[:8]
    short_table = truncate(table, 42)
    room = MAX_IDENTIFIER_BYTES - len(short_table.encode()) - 20
    return f"{short_table}_{truncate(fieldname, max(room, 0))}_{digest}_flow_enum"


def map_projection(
    p: Projection,
    *,
    is_key: bool,
    field_config: dict[str, Any] | None,
    flags: dict[str, bool],
    table_path: list[str],
) -> ColumnType:
    cfg = field_config or {}
    if cfg.get("castToString") or cfg.get("ignoreStringFormat"):
        base = _cast_to_string(p, is_key=is_key, flags=flags, table_path=table_path)
    else:
        base = _map_flat(p, flat_type(p), is_key=is_key, flags=flags, table_path=table_path)
    if isinstance(cfg.get("DDL"), str) and cfg["DDL"]:
        return replace(base, ddl=cfg["DDL"], user_ddl=True, enum_type=None, enum_name=None, enum_values=())
    return base


def _cast_to_string(p: Projection, *, is_key: bool, flags: dict[str, bool], table_path: list[str]) -> ColumnType:
    """Mapped as a plain string (no format), every value converted to its text."""
    plain = msgspec.structs.replace(p, inference=msgspec.structs.replace(p.inference, string=StringInference()))
    return replace(_map_string(plain, is_key=is_key, flags=flags, table_path=table_path), convert=_as_string_form)


def _map_flat(p: Projection, flat: str, *, is_key: bool, flags: dict[str, bool], table_path: list[str]) -> ColumnType:
    inf = p.inference
    if flat == "integer":
        num = inf.numeric
        wide = num is not None and (
            (num.has_minimum and num.minimum < INT64_MIN) or (num.has_maximum and num.maximum > INT64_MAX)
        )
        if wide:
            return ColumnType("NUMERIC", flat, "numeric", _as_numeric, ("numeric",))
        return ColumnType("BIGINT", flat, "int8", _as_int, ("bigint", "integer"))
    if flat == "number":
        return ColumnType("DOUBLE PRECISION", flat, "float8", _as_float)
    if flat == "boolean":
        return ColumnType("BOOLEAN", flat, "bool", _as_bool)
    if flat in ("object", "array", "multiple"):
        return _json_type(p, flags, flat)
    if flat == "binary":
        if flags.get("native_binary_column_type", True):
            return ColumnType(
                "BYTEA", flat, "bytea", _as_bytes, (), uncast="translate(encode({c}, 'base64'), E'\\n', '')"
            )
        return TEXT
    if flat == "string_integer":
        return ColumnType("NUMERIC", flat, "numeric", _as_numeric, (), uncast="CAST({c} AS TEXT)")
    if flat == "string_number":
        return ColumnType("DECIMAL", flat, "numeric", _as_numeric, ("numeric",), uncast="CAST({c} AS TEXT)")
    if flat == "string":
        return _map_string(p, is_key=is_key, flags=flags, table_path=table_path)
    raise ValueError_(f"field {p.field!r} has no type that can be materialized")


def _map_string(p: Projection, *, is_key: bool, flags: dict[str, bool], table_path: list[str]) -> ColumnType:
    inf = p.inference
    fmt = inf.string.format if inf.string else ""
    if is_key and fmt in ("date", "date-time", "time") and flags.get("datetime_keys_as_string", True):
        return TEXT
    if fmt in _FORMATS:
        ddl, copy_type, conv, compat, uncast = _FORMATS[fmt]
        return ColumnType(ddl, "string", copy_type, conv, compat, uncast=uncast)
    only_strings = set(inf.types) <= {"string", "null"}
    if not is_key and flags.get("enum", True) and only_strings and inf.enum:
        values = tuple(sorted({str(v) for v in inf.enum if isinstance(v, str)}))
        if values:
            schema = table_path[0] if len(table_path) > 1 else "public"
            name = enum_type_name(table_path[-1], p.field)
            qualified = f"{quote(schema)}.{quote(name)}"
            return ColumnType(
                qualified,
                "string",
                "text",
                _as_enum,
                enum_type=qualified,
                enum_name=name,
                enum_values=values,
            )
    return TEXT


# --------------------------------------------------------------------------------------------
# Writing into a column whose type is not the one we would have created (a user DDL, or a table
# made elsewhere with a compatible type): binary COPY needs the column's exact wire type.

_BY_DATA_TYPE: dict[str, tuple[str, Converter]] = {
    "bigint": ("int8", _as_int),
    "integer": ("int4", _as_int),
    "smallint": ("int2", _as_int),
    "numeric": ("numeric", _as_numeric),
    "double precision": ("float8", _as_float),
    "real": ("float4", _as_float),
    "boolean": ("bool", _as_bool),
    "json": ("json", _as_json),
    "jsonb": ("jsonb", _as_jsonb),
    "bytea": ("bytea", _as_bytes),
    "date": ("date", _as_date),
    "timestamp with time zone": ("timestamptz", _as_timestamp),
    "time without time zone": ("time", _as_time),
    "interval": ("interval", _as_interval),
    "cidr": ("cidr", _as_cidr),
    "macaddr": ("macaddr", _as_macaddr),
    "macaddr8": ("macaddr8", _as_macaddr8),
    "uuid": ("uuid", _as_uuid),
}
_TEXTUAL = ("text", "character varying", "character", "user-defined")


def writer_for(ctype: ColumnType, data_type: str | None) -> tuple[str, Converter]:
    """The COPY wire type and converter for writing `ctype`'s values into an existing column."""
    if data_type is None:
        return ctype.copy_type, ctype.convert
    dt_lower = data_type.lower()
    if dt_lower in _TEXTUAL:
        return "text", ctype.convert if ctype.copy_type == "text" else _as_string_form
    return _BY_DATA_TYPE.get(dt_lower, (ctype.copy_type, ctype.convert))
