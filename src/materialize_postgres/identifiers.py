"""SQL identifiers and literals as the Go connector renders them.

A name is written bare only when it is "simple" (lowercase letters, digits and underscores, not
starting with a digit) and not a reserved word; otherwise it is double-quoted, which preserves
capitalization and any other character. PostgreSQL truncates identifiers to 63 bytes, so lookups
in information_schema use the truncated form and collisions are detected up front.
"""

from __future__ import annotations

import unicodedata

from .reserved_words import RESERVED_WORDS

MAX_IDENTIFIER_BYTES = 63


def _is_lower_letter(ch: str) -> bool:
    return unicodedata.category(ch) == "Ll"


def is_simple(name: str) -> bool:
    if not name:
        return False
    first, rest = name[0], name[1:]
    if not (first == "_" or _is_lower_letter(first)):
        return False
    return all(c == "_" or _is_lower_letter(c) or unicodedata.category(c) == "Nd" for c in rest)


def quote(name: str) -> str:
    """One identifier, quoted only when it has to be."""
    if is_simple(name) and name.lower() not in RESERVED_WORDS:
        return name
    return '"' + name.replace('"', '""') + '"'


def quote_path(path: list[str]) -> str:
    return ".".join(quote(p) for p in path)


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def truncate(name: str, limit: int = MAX_IDENTIFIER_BYTES) -> str:
    """The name PostgreSQL actually stores: at most 63 bytes, never splitting a UTF-8 character."""
    raw = name.encode()
    if len(raw) <= limit:
        return name
    return raw[:limit].decode("utf-8", errors="ignore")
