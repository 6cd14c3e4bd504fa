"""Binary wire formats psycopg does not provide, registered on our connections.

The value converters in typemap.py produce the binary representation of JSON, JSONB, INTERVAL,
MACADDR and MACADDR8 themselves (JSON is its own text; JSONB is a version byte and the text;
INTERVAL is microseconds, days and months; MAC addresses are their raw bytes). The dumpers here
pass those bytes through unchanged under the right type OID, both for binary COPY (looked up by
OID) and for query parameters (looked up by the wrapper classes below).
"""

from __future__ import annotations

from typing import Any

import psycopg
from psycopg.adapt import Dumper
from psycopg.pq import Format


class JsonText(bytes):
    pass


class JsonbBinary(bytes):
    pass


class IntervalBinary(bytes):
    pass


class MacaddrBinary(bytes):
    pass


class Macaddr8Binary(bytes):
    pass


WRAPPERS: dict[str, type[bytes]] = {
    "json": JsonText,
    "jsonb": JsonbBinary,
    "interval": IntervalBinary,
    "macaddr": MacaddrBinary,
    "macaddr8": Macaddr8Binary,
}


def _passthrough(type_name: str, oid: int) -> type[Dumper]:
    def dump(self: Dumper, obj: Any) -> bytes:
        return obj if isinstance(obj, bytes) else bytes(obj)

    return type(f"{type_name.title()}PassthroughDumper", (Dumper,), {"format": Format.BINARY, "oid": oid, "dump": dump})


def register(conn: psycopg.Connection) -> None:
    types = conn.adapters.types
    for name, wrapper in WRAPPERS.items():
        info = types.get(name)
        assert info is not None, name
        # Registering by class also makes ours the dumper COPY's set_types() finds by OID.
        conn.adapters.register_dumper(wrapper, _passthrough(name, info.oid))


def wrap(copy_type: str, value: Any) -> Any:
    """A converted value, typed for use as a query parameter."""
    wrapper = WRAPPERS.get(copy_type)
    return wrapper(value) if wrapper is not None and value is not None else value
