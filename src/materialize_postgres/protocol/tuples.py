"""Packed keys and values: FoundationDB tuples (the codec has already base64-decoded them)."""

from __future__ import annotations

from typing import Any

import fdb.tuple
import msgspec

_json = msgspec.json.Decoder()


class TupleError(ValueError):
    pass


def unpack(packed: bytes) -> list[Any]:
    """Decode a packed tuple, keeping objects and arrays as their raw JSON bytes.

    Flow packs objects and arrays as a bytes element holding their JSON text. They are kept raw so
    that a JSON column receives exactly the text Flow sent, without a parse and re-serialization.
    Everything else (null, booleans, integers of any size, doubles, strings) maps directly onto
    its JSON counterpart.
    """
    if not packed:
        return []
    try:
        return list(fdb.tuple.unpack(packed))
    except Exception as err:  # fdb raises bare ValueError/IndexError/struct.error on bad input
        raise TupleError(f"packed tuple {packed[:32].hex()} cannot be decoded: {err}") from None


def unpack_json(packed: bytes) -> list[Any]:
    """Decode a packed tuple into plain JSON values, parsing object and array elements."""
    return [_json.decode(v) if isinstance(v, bytes) else v for v in unpack(packed)]
