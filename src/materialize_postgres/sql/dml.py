"""Statements of the transaction path: fencing, loads, set-based merges and deletes."""

from __future__ import annotations

import json

from ..identifiers import quote
from ..tables import Column, Table

# Joins of a key or staging table against a target go through the target's primary key, one probe
# per row, as the Go connector's per-row statements do. Left to itself the planner often hashes
# the whole target instead: temporary tables have no statistics, and a target that has just grown
# has stale ones. Measured on a 550k-row table, a 50k-row UPDATE ... FROM took 0.47 s with probes
# and 0.76 s with the hash join the planner chose. The probes go in key order (the key or staging
# table sorted first), so that neighbouring keys hit neighbouring index and heap pages: that halved
# a 50k-key load (0.38 s to 0.17 s) and cut a 50k-row UPDATE by a third (bench/PROFILE.md).
INDEX_JOINS = "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off"


def temp_name(prefix: str, table: Table) -> str:
    return f"flow_{prefix}_{table.binding}"


def create_temp(name: str, columns: list[tuple[Column, str]]) -> str:
    cols = ",\n".join(
        f"\t{c.ident} {data_type} NOT NULL" if c.is_key else f"\t{c.ident} {data_type}" for c, data_type in columns
    )
    return f"CREATE TEMPORARY TABLE IF NOT EXISTS {name} (\n{cols}\n) ON COMMIT DELETE ROWS;"


def copy_into(ident: str, columns: list[Column]) -> str:
    return f"COPY {ident} ({', '.join(c.ident for c in columns)}) FROM STDIN (FORMAT BINARY)"


def _in_key_order(table: Table, temp: str) -> str:
    return f"(SELECT * FROM {temp} ORDER BY {', '.join(k.ident for k in table.keys)})"


def _join(table: Table, left: str = "l", right: str = "r") -> str:
    return " AND ".join(f"{left}.{k.ident} = {right}.{k.ident}" for k in table.keys)


def load_query(table: Table, temp: str) -> str:
    assert table.document is not None
    return (
        f"SELECT {table.binding}, r.{table.document.ident}::text FROM {_in_key_order(table, temp)} AS l "
        f"JOIN {table.ident} AS r ON {_join(table)}"
    )


def load_query_rebuilt(table: Table, temp: str) -> str:
    """no_flow_document: rebuild each document from its top-level columns.

    The document is assembled as JSON text rather than JSONB: JSONB rejects a NUL escape that a
    JSON column may hold, and stripping nulls from JSONB would also drop nulls nested in values.
    An optional field whose column is NULL is left out; a required one comes back as null.
    """
    members: list[str] = []
    for c in [*table.keys, *table.values]:
        if c.projection.ptr.count("/") != 1:
            continue
        name = c.projection.ptr[1:].replace("~1", "/").replace("~0", "~")
        expr = f"r.{c.ident}"
        if c.type.uncast and not (c.is_key and c.type.ddl == "TEXT"):
            expr = c.type.uncast.format(c=expr)
        value = f"to_json({expr})::text"
        if c.projection.inference.exists == "MUST":
            value = f"COALESCE({value}, 'null')"
        members.append(f"{_sql_string(json.dumps(name) + ':')} || {value}")
    # A function takes at most 100 arguments: join chunks, then join the non-empty chunks.
    chunks = [f"concat_ws(',', {', '.join(members[i : i + 90])})" for i in range(0, len(members), 90)]
    body = chunks[0] if len(chunks) == 1 else "concat_ws(',', " + ", ".join(f"NULLIF({c}, '')" for c in chunks) + ")"
    obj = f"'{{' || {body} || '}}'" if chunks else "'{}'"
    keys = _in_key_order(table, temp)
    return f"SELECT {table.binding}, {obj} FROM {keys} AS l JOIN {table.ident} AS r ON {_join(table)}"


def _sql_string(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def merge_update(table: Table, staging: str) -> str | None:
    cols = [*table.values, *([table.document] if table.document else [])]
    if not cols:
        return None
    sets = ", ".join(f"{c.ident} = l.{c.ident}" for c in cols)
    return f"UPDATE {table.ident} AS r SET {sets} FROM {_in_key_order(table, staging)} AS l WHERE {_join(table)}"


def row_update(table: Table) -> str | None:
    """One row's UPDATE; parameters are the values and document, then the keys."""
    cols = [*table.values, *([table.document] if table.document else [])]
    if not cols:
        return None
    sets = ", ".join(f"{c.ident} = %s::{c.type.ddl}" for c in cols)
    where = " AND ".join(f"{k.ident} = %s::{k.type.ddl}" for k in table.keys)
    return f"UPDATE {table.ident} SET {sets} WHERE {where}"


def delete_keys(table: Table, staging: str) -> str:
    return f"DELETE FROM {table.ident} AS r USING {_in_key_order(table, staging)} AS l WHERE {_join(table)}"


def install_fence(ckpt: str) -> tuple[str, str, str]:
    bump = f"UPDATE {ckpt} SET fence = fence + 1 WHERE materialization = %s AND key_end >= %s AND key_begin <= %s"
    covering = (
        f"SELECT fence, key_begin, key_end, checkpoint FROM {ckpt} "
        "WHERE materialization = %s AND key_begin <= %s AND key_end >= %s "
        "ORDER BY key_end - key_begin ASC LIMIT 1"
    )
    insert = f"INSERT INTO {ckpt} (materialization, key_begin, key_end, fence, checkpoint) VALUES (%s, %s, %s, %s, %s)"
    return bump, covering, insert


def update_fence(ckpt: str) -> str:
    return (
        f"UPDATE {ckpt} SET checkpoint = %s "
        "WHERE materialization = %s AND key_begin = %s AND key_end = %s AND fence = %s"
    )


__all__ = ["quote"]
