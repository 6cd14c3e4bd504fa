"""What already exists in the database: schemas, tables and their columns."""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from .identifiers import truncate


@dataclass(frozen=True)
class ExistingColumn:
    name: str
    data_type: str
    udt_name: str
    nullable: bool
    char_max_length: int
    has_default: bool = False

    @property
    def type_label(self) -> str:
        label = self.data_type.upper()
        return f"{label}({self.char_max_length})" if self.char_max_length else label


@dataclass
class ExistingTable:
    schema: str
    name: str
    columns: dict[str, ExistingColumn]

    def column(self, field: str) -> ExistingColumn | None:
        return self.columns.get(truncate(field))


def _key(path: list[str]) -> tuple[str, str]:
    schema = path[0] if len(path) > 1 else "public"
    return truncate(schema), truncate(path[-1])


def existing_schemas(conn: psycopg.Connection) -> set[str]:
    rows = conn.execute("SELECT schema_name FROM information_schema.schemata").fetchall()
    return {r[0] for r in rows}


def existing_tables(conn: psycopg.Connection, paths: list[list[str]]) -> dict[tuple[str, str], ExistingTable]:
    """Tables (with columns) among `paths`, keyed by their truncated (schema, name)."""
    wanted = {_key(p) for p in paths}
    if not wanted:
        return {}
    schemas = sorted({s for s, _ in wanted})
    rows = conn.execute(
        """
        SELECT c.table_schema, c.table_name, c.column_name, c.data_type, c.udt_name,
               c.is_nullable = 'YES', COALESCE(c.character_maximum_length, 0), c.column_default IS NOT NULL
        FROM information_schema.columns c
        WHERE c.table_schema = ANY(%s)
        ORDER BY c.table_schema, c.table_name, c.ordinal_position
        """,
        [schemas],
    ).fetchall()
    out: dict[tuple[str, str], ExistingTable] = {}
    for schema, table, col, data_type, udt, nullable, maxlen, has_default in rows:
        if (schema, table) not in wanted:
            continue
        t = out.setdefault((schema, table), ExistingTable(schema, table, {}))
        t.columns[col] = ExistingColumn(col, data_type, udt, nullable, maxlen, has_default)
    return out


def lookup(tables: dict[tuple[str, str], ExistingTable], path: list[str]) -> ExistingTable | None:
    return tables.get(_key(path))
