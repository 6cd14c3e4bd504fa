"""Apply: bring the database in line with a materialization spec.

`plan()` compares the spec with what exists and returns the actions to take, each a group of
statements run in one transaction (PostgreSQL DDL is transactional, so a table is created with
its comments, enum types and the user's additional SQL, or not at all). `plan()` changes nothing,
which is what `materialize-postgres plan` prints; `execute()` runs a plan.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

import psycopg

from .config import EndpointConfig
from .identifiers import quote, truncate
from .introspect import ExistingTable, existing_schemas, existing_tables, lookup
from .migrations import migration_cast
from .protocol.messages import MaterializationSpec
from .sql import ddl
from .tables import Column, Table, build_table, checkpoints_path
from .validate import last_bindings

log = logging.getLogger(__name__)


class ApplyError(RuntimeError):
    """A statement of Apply failed; the message quotes it."""


class UserStatement(str):
    """SQL the user wrote (additional_table_create_sql); errors name it as theirs."""

    __slots__ = ()


@dataclass
class Action:
    description: str
    statements: list[str] = field(default_factory=list)
    # Enum values cannot be added inside a transaction block that later uses them, so they run alone.
    autocommit: bool = False
    # A table whose existing rows the action rewrites or removes: its rows and the time taken are
    # logged, so that operators see what a migration of a large table cost.
    rewrites: Table | None = None


def plan(
    conn: psycopg.Connection, spec: MaterializationSpec, cfg: EndpointConfig, last: MaterializationSpec | None = None
) -> list[Action]:
    tables = [build_table(i, b, cfg, spec.name) for i, b in enumerate(spec.bindings)]
    ckpt_path = checkpoints_path(cfg)
    existing = existing_tables(conn, [t.path for t in tables] + [ckpt_path])
    actions = _schema_actions(conn, cfg, tables)
    if lookup(existing, ckpt_path) is None:
        create, comments = ddl.checkpoints_table(ckpt_path)
        actions.append(Action(ddl.render(create, comments), [create, *comments]))
    previous = last_bindings(last)
    for table in tables:
        prior = previous.get(tuple(table.path))
        current = lookup(existing, table.path)
        actions += _table_actions(table, current, prior.backfill if prior else None, cfg)
    return actions


def _schema_actions(conn: psycopg.Connection, cfg: EndpointConfig, tables: list[Table]) -> list[Action]:
    have = existing_schemas(conn)
    wanted = [cfg.schema_name] + [t.schema for t in tables]
    out: list[Action] = []
    for schema in dict.fromkeys(wanted):
        if schema and schema not in have:
            stmt = f"CREATE SCHEMA IF NOT EXISTS {quote(schema)};"
            out.append(Action(stmt, [stmt]))
    return out


def _create_actions(table: Table) -> list[Action]:
    create, comments = ddl.create_table(table)
    statements = [ddl.create_enum(c.type) for c in table.columns if c.type.enum_type]
    statements += [create, *comments]
    if table.resource.additional_table_create_sql:
        statements.append(UserStatement(table.resource.additional_table_create_sql))
    return [Action(ddl.render(create, comments), statements)]


def _table_actions(
    table: Table, current: ExistingTable | None, prior_backfill: int | None, cfg: EndpointConfig
) -> list[Action]:
    if current is None:
        return _create_actions(table)
    flags = cfg.feature_flags()
    if prior_backfill is not None and prior_backfill != table.backfill:
        return _backfill_actions(table, current, flags)
    return _alter_actions(table, current)


def _backfill_actions(table: Table, current: ExistingTable, flags: dict[str, bool]) -> list[Action]:
    keys_same = all(current.column(k.field) is not None for k in table.keys)
    fits = keys_same and all(_column_fits(c, current) for c in table.columns)
    if fits and not flags.get("always_drop_tables_on_backfill"):
        actions = []
        if not flags.get("retain_existing_data_on_backfill"):
            stmt = ddl.truncate_table(table)
            actions.append(Action(stmt, [stmt], rewrites=table))
        return actions + _alter_actions(table, current)
    if flags.get("retain_existing_data_on_backfill") and not flags.get("always_drop_tables_on_backfill"):
        raise ApplyError(
            f"table {'.'.join(table.path)} must be replaced for this backfill, but the feature flag "
            "'retain_existing_data_on_backfill' asks to keep its data: remove the flag to continue"
        )
    stmt = ddl.drop_table(table)
    return [Action(stmt, [stmt]), *_create_actions(table)]


def _column_fits(column: Column, current: ExistingTable) -> bool:
    existing = current.column(column.field)
    if existing is None:
        return True
    if column.type.is_compatible(existing.data_type, existing.udt_name):
        return True
    return not column.is_key and migration_cast(existing, column.type, column.ident) is not None


def _alter_actions(table: Table, current: ExistingTable) -> list[Action]:
    """Described as the Go connector does: enum statements, the ALTER TABLE between blank lines, casts."""
    add = [c for c in table.columns if current.column(c.field) is None]
    drop_not_null = _newly_nullable(table, current)
    migrations = [(c, cast) for c in table.columns if (cast := _migration(c, current)) is not None]
    changed = bool(add or drop_not_null or migrations)
    actions = _enum_actions(table, add + [c for c, _ in migrations], described=changed)
    if add or drop_not_null:
        stmt = ddl.alter_table(table, add, drop_not_null)
        actions.append(Action(f"\n{stmt}\n", [stmt]))
    for c, cast in migrations:  # one transaction each, as statements are retried by the next Apply
        stmt = ddl.migrate_column(table, c, cast)
        actions.append(Action(stmt, [stmt], rewrites=table))
    return actions


def _enum_actions(table: Table, changed: list[Column], *, described: bool) -> list[Action]:
    """Create the enum types of new or migrated columns and add every value of every enum column.

    They run alone: a value added by ALTER TYPE cannot be used in the transaction that added it.
    Every Apply runs them (idempotently) so that new values arrive even with no other change;
    they are described only alongside other changes, so an Apply with nothing to do says nothing.
    """
    enums = [c for c in table.columns if c.type.enum_type]
    if not enums:
        return []
    stmts = [ddl.create_enum(c.type) for c in changed if c.type.enum_type]
    stmts += [s for c in enums for s in ddl.add_enum_values(c.type)]
    return [Action("\n".join(stmts) if described else "", stmts, autocommit=True)]


def _newly_nullable(table: Table, current: ExistingTable) -> list[str]:
    """NOT NULL columns that may now get NULLs: fields no longer required, and columns not selected."""
    out: list[str] = []
    for c in table.columns:
        existing = current.column(c.field)
        defaulted = existing is not None and (existing.has_default or len(c.projection.inference.default) > 0)
        if existing is not None and not existing.nullable and not c.not_null and not defaulted:
            out.append(existing.name)
    selected = {truncate(c.field) for c in table.columns}
    out += [name for name, col in current.columns.items() if name not in selected and not col.nullable]
    return out


def _migration(column: Column, current: ExistingTable) -> str | None:
    """The cast that migrates an existing column of another type in place; keys never migrate."""
    existing = current.column(column.field)
    if existing is None or column.is_key or column.type.is_compatible(existing.data_type, existing.udt_name):
        return None
    # None: Validate reported the field incompatible, and a backfill replaces the table.
    return migration_cast(existing, column.type, column.ident)


def describe(actions: list[Action]) -> str:
    return "\n".join(a.description for a in actions if a.description)


def execute(conn: psycopg.Connection, actions: list[Action]) -> None:
    for action in actions:
        if action.autocommit:
            conn.commit()
            prior = conn.autocommit
            conn.autocommit = True
            try:
                for stmt in action.statements:
                    _run(conn, stmt)
            finally:
                conn.autocommit = prior
            continue
        with conn.transaction():
            rows = _count(conn, action.rewrites.ident) if action.rewrites else None
            started = time.monotonic()
            for stmt in action.statements:
                _run(conn, stmt)
        if action.rewrites:
            seconds = round(time.monotonic() - started, 3)
            table = ".".join(action.rewrites.path)
            fields = {"table": table, "rows": rows, "seconds": seconds, "statement": action.statements[-1]}
            log.info("rewrote table", extra={"fields": fields})
    conn.commit()


def _count(conn: psycopg.Connection, table: str) -> int:
    # Exact, and cheap next to the rewrite that follows it: both read the whole table.
    row = conn.execute(f"SELECT count(*) FROM {table}".encode()).fetchone()
    return int(row[0]) if row else 0


def _run(conn: psycopg.Connection, stmt: str) -> None:
    try:
        conn.execute(stmt.encode())  # bytes: no client-side parameter parsing of '%' in user SQL
    except psycopg.Error as err:
        what = "additional SQL statement" if isinstance(stmt, UserStatement) else "statement"
        raise ApplyError(f"executing {what} {stmt.strip()!r}: {str(err).strip()}") from None
