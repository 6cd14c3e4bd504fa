"""Packed keys and values: FoundationDB tuples (the codec has already base64-decoded them)."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable
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


def unpack_keys(packed: bytes, kinds: tuple[type, ...]) -> list[Any] | None:
    """The hot path of loads: a packed key of integers and strings, read without fdb.

    `kinds` names each element's expected type (int or str). Only what a key column takes as is
    is decoded here: integers of up to 7 bytes (always within BIGINT) and strings without NUL
    characters. Anything else (another type, a wider integer, an escaped NUL, a malformed tuple)
    returns None, and the caller falls back to `unpack` and the column converters, which decide
    or report it. The encoding is FoundationDB's tuple layer: a type code, then for an integer
    its magnitude in big-endian bytes (negative ones in one's complement), for a string its UTF-8
    bytes ended by a NUL.
    """
    out: list[Any] = []
    i, n = 0, len(packed)
    for kind in kinds:
        if i >= n:
            return None
        code = packed[i]
        if kind is int:
            if 0x14 <= code <= 0x1B:  # zero, or positive in 1-7 bytes
                end = i + code - 0x13
                value = int.from_bytes(packed[i + 1 : end], "big")
            elif 0x0D <= code < 0x14:  # negative in 1-7 bytes
                size = 0x14 - code
                end = i + 1 + size
                value = int.from_bytes(packed[i + 1 : end], "big") - (1 << (8 * size)) + 1
            else:
                return None
            if end > n:
                return None
            out.append(value)
        elif code == 0x02:
            end = packed.find(b"\x00", i + 1)
            if end < 0 or packed[end + 1 : end + 2] == b"\xff":
                return None  # unterminated, or a NUL escaped inside the string
            try:
                out.append(packed[i + 1 : end].decode())
            except UnicodeDecodeError:
                return None
            end += 1
        else:
            return None
        i = end
    return out if i == n else None


def key_reader(kinds: tuple[type, ...]) -> Callable[[bytes], list[Any] | None]:
    """`unpack_keys` for one key shape; a lone non-negative integer, the most common key, is
    read in a single step."""
    if kinds != (int,):
        return functools.partial(unpack_keys, kinds=kinds)

    def one_int(packed: bytes) -> list[Any] | None:
        if packed and 0x14 <= packed[0] <= 0x1B and len(packed) == packed[0] - 0x13:
            return [int.from_bytes(packed[1:], "big")]
        return unpack_keys(packed, kinds)

    return one_int


def pack_keys(values: Iterable[Any]) -> bytes | None:
    """The inverse of `unpack_keys`: a key of integers (up to 7 bytes) and strings without NUL
    characters, packed as FoundationDB's tuple layer packs it; None for anything else (the caller
    packs that with fdb)."""
    out = bytearray()
    for v in values:
        kind = type(v)
        if kind is int:
            size = (abs(v).bit_length() + 7) // 8
            if size > 7:
                return None
            if v >= 0:
                out.append(0x14 + size)
                out += v.to_bytes(size, "big")
            else:
                out.append(0x14 - size)
                out += (v + (1 << (8 * size)) - 1).to_bytes(size, "big")
        elif kind is str:
            try:
                encoded = v.encode()
            except UnicodeEncodeError:  # a lone surrogate: fdb's error, not ours
                return None
            if encoded.find(b"\x00") != -1:
                return None
            out.append(0x02)
            out += encoded
            out.append(0)
        else:
            return None
    return bytes(out)
