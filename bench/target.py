"""The benchmark's server and tables: where to connect, the catalog of a workload's table, resets.

Shared by the workload runs (bench/__main__.py), the big-table loads (bench/bigtable.py) and the
shard scale-out (bench/shards.py): every table is created by the connector's own Apply.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import yaml

from bench import driver
from bench.workloads import Workload
from materialize_postgres.protocol.messages import MaterializationSpec
from materialize_postgres.runner.catalog import load_catalog

PG_TYPES = {"int8": "bigint", "text": "text", "timestamptz": "timestamptz", "json": "json", "jsonb": "jsonb"}


@dataclass
class Target:
    host: str
    port: int
    user: str
    database: str

    @property
    def dsn(self) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={self.database}"


def ensure_database(target: Target) -> None:
    admin = Target(target.host, target.port, target.user, "postgres")
    with psycopg.connect(admin.dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [target.database]).fetchone():
            conn.execute(f'CREATE DATABASE "{target.database}"')


def write_catalog(wl: Workload, table: str, target: Target, tmp: Path) -> Path:
    """A flow.yaml with the workload's collection and one materialization, `bench/<table>`."""
    config = {
        "address": f"{target.host}:{target.port}",
        "user": target.user,
        "password": os.environ.get("PGPASSWORD", "postgres"),  # the local server trusts loopback
        "database": target.database,
        "hardDelete": True,
    }
    catalog = {
        "collections": {wl.collection: {"schema": wl.schema, "key": ["/id"]}},
        "materializations": {
            f"bench/{table}": {
                "endpoint": {"connector": {"image": "materialize-postgres", "config": config}},
                "bindings": [{"source": wl.collection, "resource": {"table": table}}],
            }
        },
    }
    path = tmp / f"{table}.flow.yaml"
    path.write_text(yaml.safe_dump(catalog))
    return path


def catalog_spec(wl: Workload, table: str, target: Target, tmp: Path) -> MaterializationSpec:
    return load_catalog(write_catalog(wl, table, target, tmp)).to_spec()


def drop(target: Target, table: str, materialization: str) -> None:
    """The table and the materialization's checkpoint rows (its fences) gone."""
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        if conn.execute("SELECT to_regclass('flow_checkpoints_v1')").fetchone() != (None,):
            conn.execute("DELETE FROM flow_checkpoints_v1 WHERE materialization = %s", [materialization])


def reset(spec: MaterializationSpec, table: str, target: Target) -> None:
    drop(target, table, spec.name)
    driver.apply(spec)
    checkpoint(target)


def checkpoint(target: Target) -> None:
    """Start each measured phase with no dirty buffers left over from the one before."""
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def column_types(target: Target, table: str, fields: list[str]) -> list[dict[str, Any]]:
    # The connector's schema only: the peers' schemas hold tables of the same name.
    query = "SELECT column_name, udt_name FROM information_schema.columns WHERE table_name = %s"
    with psycopg.connect(target.dsn) as conn:
        rows = dict(conn.execute(query + " AND table_schema = current_schema()", [table]).fetchall())
    return [{"name": f, "type": PG_TYPES[rows[f]], "key": i == 0} for i, f in enumerate(fields)]
