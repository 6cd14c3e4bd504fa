"""Loads, merges and deletes probe the target's primary key; none of them scans the whole target,
even when the planner has no statistics for the key table and stale ones for the target."""

from __future__ import annotations

from typing import Any

import msgspec
import psycopg
import pytest

from materialize_postgres.config import parse_endpoint
from materialize_postgres.runner.runtime import ProcessConnector, Runtime
from materialize_postgres.sql import dml
from materialize_postgres.tables import build_table
from tests.specs import binding, materialization, simple_collection

ROWS = 200_000


@pytest.fixture
def table(pg_database: Any) -> Any:
    spec = materialization(pg_database.endpoint_config(), binding("things", simple_collection()))
    Runtime(ProcessConnector(), spec).validate_and_apply()
    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        conn.execute(
            "INSERT INTO things (id, name, flow_published_at, flow_document) "
            "SELECT g, 'n' || g, now(), json_build_object('id', g) FROM generate_series(1, %s) g",
            [ROWS],
        )
        conn.execute("ANALYZE things")
    cfg = parse_endpoint(msgspec.json.decode(spec.config))
    return build_table(0, spec.bindings[0], cfg, spec.name)


def plan_of(conn: psycopg.Connection, statement: str) -> str:
    rows = conn.execute(f"EXPLAIN {statement}").fetchall()
    return "\n".join(r[0] for r in rows)


@pytest.mark.parametrize("keys", [100, 50_000, ROWS])
def test_loads_merges_and_deletes_use_the_primary_key(pg_database: Any, table: Any, keys: int) -> None:
    with psycopg.connect(pg_database.dsn) as conn:
        # As the connector's sessions have them: fresh temporary tables, never analyzed.
        conn.execute("CREATE TEMP TABLE k (id BIGINT NOT NULL)")
        conn.execute("INSERT INTO k SELECT g * 2 FROM generate_series(1, %s) g", [keys])
        conn.execute("CREATE TEMP TABLE s AS SELECT * FROM things WITH NO DATA")
        conn.execute("INSERT INTO s SELECT * FROM things WHERE id %% 3 = 0 LIMIT %s", [keys])
        conn.execute(dml.INDEX_JOINS)
        statements = {
            "load": dml.load_query(table, "k"),
            "merge": dml.merge_update(table, "s"),
            "delete": dml.delete_keys(table, "k"),
        }
        for name, statement in statements.items():
            assert statement is not None
            plan = plan_of(conn, statement)
            assert "things_pkey" in plan, f"{name} does not probe the primary key:\n{plan}"
            assert "Seq Scan on things" not in plan, f"{name} scans the whole target:\n{plan}"
            # Probes in key order touch neighbouring pages one after another.
            assert "Sort Key: " in plan.split("things_pkey")[0], f"{name} probes in no particular order:\n{plan}"
        conn.rollback()
