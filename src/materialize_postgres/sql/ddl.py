"""DDL text: tables, comments, the checkpoints table, column changes and enum types.

Statements are rendered in the Go connector's layout so that Apply's action description reads the
same to a user switching between the two.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..identifiers import literal, quote, quote_path
from ..tables import Column, Table
from ..typemap import ColumnType

CHECKPOINTS_COLUMNS = (
    ("materialization", "TEXT NOT NULL", "The name of the materialization."),
    ("key_begin", "BIGINT NOT NULL", "The inclusive lower-bound key hash covered by this checkpoint."),
    ("key_end", "BIGINT NOT NULL", "The inclusive upper-bound key hash covered by this checkpoint."),
    (
        "fence",
        "BIGINT NOT NULL",
        "This nonce is used to uniquely identify unique process assignments of a shard and prevent them "
        "from conflicting.",
    ),
    ("checkpoint", "TEXT NOT NULL", "Checkpoint of the Flow consumer shard, encoded as base64 protobuf."),
)
CHECKPOINTS_COMMENT = (
    "This table holds Flow processing checkpoints used for exactly-once processing of materializations"
)


def _create(ident: str, columns: Iterable[tuple[str, str]], keys: list[str]) -> str:
    lines = [f"\t\t{name} {ddl}" for name, ddl in columns]
    body = ",\n".join(lines)
    if keys:
        body += ",\n\n\t\tPRIMARY KEY (" + ", ".join(keys) + ")"
    return f"CREATE TABLE IF NOT EXISTS {ident} (\n{body}\n);"


def _comments(ident: str, table_comment: str, columns: Iterable[tuple[str, str]]) -> list[str]:
    out = [f"COMMENT ON TABLE {ident} IS {literal(table_comment)};"]
    out += [f"COMMENT ON COLUMN {ident}.{name} IS {literal(text)};" for name, text in columns]
    return out


def render(create: str, comments: list[str]) -> str:
    """A CREATE TABLE and its comments as one script, laid out like the Go connector's."""
    return "\n" + create + "\n\n" + "\n".join(comments) + "\n"


def checkpoints_table(path: list[str]) -> tuple[str, list[str]]:
    ident = quote_path(path)
    create = _create(ident, ((n, d) for n, d, _ in CHECKPOINTS_COLUMNS), ["materialization", "key_begin", "key_end"])
    comments = _comments(ident, CHECKPOINTS_COMMENT, ((n, c) for n, _, c in CHECKPOINTS_COLUMNS))
    return create, comments


def create_table(table: Table) -> tuple[str, list[str]]:
    cols = table.columns
    keys = [] if table.delta_updates else [c.ident for c in table.keys]
    create = _create(table.ident, ((c.ident, c.ddl) for c in cols), keys)
    comments = _comments(table.ident, table.comment(), ((c.ident, c.comment()) for c in cols))
    return create, comments


def create_enum(ctype: ColumnType) -> str:
    values = ", ".join(literal(v) for v in ctype.enum_values)
    # Idempotent: re-running an interrupted Apply finds the type already there.
    return (
        f"DO $$ BEGIN CREATE TYPE {ctype.enum_type} AS ENUM ({values}); "
        "EXCEPTION WHEN duplicate_object THEN NULL; END $$"
    )


def add_enum_values(ctype: ColumnType) -> list[str]:
    return [f"ALTER TYPE {ctype.enum_type} ADD VALUE IF NOT EXISTS {literal(v)}" for v in ctype.enum_values]


def alter_table(table: Table, add: list[Column], drop_not_null: list[str]) -> str:
    clauses = [f"\tADD COLUMN {c.ident} {c.nullable_ddl}" for c in add]
    clauses += [f"\tALTER COLUMN {quote(name)} DROP NOT NULL" for name in drop_not_null]
    return f"ALTER TABLE {table.ident}\n" + ",\n".join(clauses) + ";"


def migrate_column(table: Table, column: Column, cast: str) -> str:
    return f"ALTER TABLE {table.ident} ALTER COLUMN {column.ident} TYPE {column.type.ddl} USING {cast}"


def truncate_table(table: Table) -> str:
    return f"TRUNCATE TABLE {table.ident};"


def drop_table(table: Table) -> str:
    return f"DROP TABLE {table.ident};"
