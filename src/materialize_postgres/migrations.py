"""In-place column type migrations: which existing types may change to which, and the cast."""

from __future__ import annotations

from .introspect import ExistingColumn
from .typemap import ColumnType

_CAST = "CAST({c} AS {ddl})"
_TS_TEXT = "to_char({c} AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.US\"Z\"')"

# existing information_schema data_type -> {new DDL (upper) -> cast template}
_MIGRATIONS: dict[str, dict[str, str]] = {
    "numeric": {"DOUBLE PRECISION": _CAST, "TEXT": _CAST},
    "bigint": {"DOUBLE PRECISION": _CAST, "NUMERIC": _CAST, "TEXT": _CAST},
    "integer": {"DOUBLE PRECISION": _CAST, "NUMERIC": _CAST, "TEXT": _CAST},
    "double precision": {"TEXT": _CAST},
    "date": {"TEXT": _CAST},
    "time without time zone": {"TEXT": _CAST},
    "timestamp with time zone": {"TEXT": _TS_TEXT},
    "text": {"BYTEA": "decode({c}, 'base64')"},
    "character varying": {"BYTEA": "decode({c}, 'base64')"},
    "user-defined": {"TEXT": "{c}::text"},
    "bytea": {"TEXT": "translate(encode({c}, 'base64'), E'\\n', '')"},
    "json": {"JSONB": _CAST, "TEXT": _CAST},
    "jsonb": {"JSON": _CAST, "TEXT": _CAST},
}


def migration_cast(existing: ExistingColumn, target: ColumnType, column_ident: str) -> str | None:
    """The USING expression that turns `existing` into `target`, or None if it cannot migrate."""
    data_type = existing.data_type.lower()
    if target.enum_type is not None:
        if data_type in ("text", "character varying"):
            return f"{column_ident}::{target.enum_type}"
        return None
    new = target.ddl.upper()
    template = _MIGRATIONS.get(data_type, {}).get(new)
    if template is None and new == "JSON":
        template = "to_json({c})"  # any other type becomes JSON; a type's own rule comes first
    if template is None:
        return None
    return template.format(c=column_ident, ddl=target.ddl)
