"""Estuary's own materialization fixture, played through the connector process as Flow would,
leaves exactly the table rows the Go connector left (publication times and document UUIDs aside,
which Flow's test clock chose)."""

from __future__ import annotations

import base64
import datetime as dt
import json
from decimal import Decimal
from typing import Any

import msgspec
import psycopg

from materialize_postgres.protocol.messages import MaterializationSpec
from materialize_postgres.runner.runtime import ProcessConnector, Runtime, new_uuid
from tests.shared_data import estuary, estuary_json

TABLES = ["simple_standard", "simple_delta", "not_simple", "data_types"]


def estuary_spec(endpoint: dict[str, Any]) -> MaterializationSpec:
    data = estuary_json("materialize/bindings.json")
    config = {**data["endpointConfig"], **endpoint}
    config.pop("password", None)
    config["password"] = endpoint.get("password", "unused")
    bindings = [
        {
            "resourceConfig": b["resourceConfig"],
            "resourcePath": [b["resourceConfig"]["schema"], b["table"]],
            "collection": b["collection"],
            "fieldSelection": b["fieldSelection"],
            "deltaUpdates": b["deltaUpdates"],
        }
        for b in data["bindings"]
    ]
    spec = {"name": data["materialization"], "config": config, "bindings": bindings}
    return msgspec.json.decode(json.dumps(spec), type=MaterializationSpec)


def fixture_transactions() -> list[list[tuple[str, Any]]]:
    txns: list[list[tuple[str, Any]]] = [[]]
    for line in estuary("source/fixture.materialize.json").read_text().splitlines():
        item = json.loads(line)
        if isinstance(item, dict):
            txns.append([])
            continue
        collection, doc = item
        doc.setdefault("_meta", {})["uuid"] = new_uuid()
        txns[-1].append((collection, doc))
    return [t for t in txns if t]


def render(value: Any, data_type: str) -> Any:
    """A column value as Estuary's Go test printed it (see estuary-tests/README.md)."""
    if value is None:
        return None
    if data_type in ("bigint", "integer", "double precision", "numeric"):
        return json.loads(value)
    if data_type == "boolean":
        return value == "true"
    if data_type in ("json", "jsonb"):
        return json.loads(value)
    if data_type == "date":
        return value + "T00:00:00Z"
    if data_type == "timestamp with time zone":
        ts = dt.datetime.fromisoformat(value).astimezone(dt.UTC)
        text = ts.strftime("%Y-%m-%dT%H:%M:%S")
        if ts.microsecond:
            text += f".{ts.microsecond:06d}".rstrip("0")
        return text + "Z"
    if data_type == "bytea":
        value = bytes.fromhex(value[2:]).decode()
    try:
        return json.loads(value)
    except ValueError:
        return value


def table_rows(conn: psycopg.Connection, table: str) -> list[dict[str, Any]]:
    cols = conn.execute(
        "SELECT column_name, data_type FROM information_schema.columns WHERE table_name = %s ORDER BY ordinal_position",
        [table],
    ).fetchall()
    select = ", ".join(f'"{name.replace(chr(34), chr(34) * 2)}"::text' for name, _ in cols)
    rows = []
    for raw in conn.execute(f"SELECT {select} FROM {table}").fetchall():
        row = {name: render(v, data_type) for (name, data_type), v in zip(cols, raw, strict=True)}
        row.pop("flow_published_at", None)
        if isinstance(row.get("flow_document"), dict):
            row["flow_document"].get("_meta", {}).pop("uuid", None)
        rows.append(row)
    return rows


def expected_rows(table: str) -> list[dict[str, Any]]:
    rows = []
    for line in estuary(f"materialize/rows_{table}.jsonl").read_text().splitlines():
        row = json.loads(line)
        row.pop("flow_published_at", None)
        if isinstance(row.get("flow_document"), dict):
            row["flow_document"].get("_meta", {}).pop("uuid", None)
        rows.append(row)
    return rows


def canonical(rows: list[dict[str, Any]]) -> list[str]:
    return sorted(json.dumps(r, sort_keys=True, default=str) for r in rows)


def test_fixture_leaves_the_go_connectors_rows(pg_database: Any) -> None:
    spec = estuary_spec(pg_database.endpoint_config())
    setup = ProcessConnector()
    Runtime(setup, spec).validate_and_apply()
    setup.close()

    connector = ProcessConnector()
    runtime = Runtime(connector, spec)
    assert runtime.open() == {}
    for i, txn in enumerate(fixture_transactions()):
        runtime.transaction(txn, {"sources": {"fixture": {"readThrough": str(i + 1)}}})
    runtime.close()

    with psycopg.connect(pg_database.dsn) as conn:
        for table in TABLES:
            assert canonical(table_rows(conn, table)) == canonical(expected_rows(table)), table


def test_reopen_returns_the_last_checkpoint(pg_database: Any) -> None:
    spec = estuary_spec(pg_database.endpoint_config())
    connector = ProcessConnector()
    runtime = Runtime(connector, spec)
    runtime.validate_and_apply()
    connector.close()
    runtime.open()
    checkpoint = {"sources": {"a/journal;materialize/x": {"readThrough": "4096"}}}
    runtime.transaction(fixture_transactions()[0], checkpoint)
    runtime.close()

    again = Runtime(ProcessConnector(), spec)
    assert again.open() == checkpoint
    again.close()


_ = (Decimal, base64)
