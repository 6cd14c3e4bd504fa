"""The DDL text the Go connector produced, reproduced by ours.

* TestSQLGeneration's createTargetTable: binding 0 of the sqlgen spec as a standard table, binding 1
  as a delta-updates table without a document (as the Go test renders it), through
  `tables.build_table` and `ddl.create_table`.
* TestIntegration-materialize's first Apply: the action description for the checkpoints table and
  four tables, through `driver.do_apply`, with the run suffix and enum hash normalised as the Go test's
  sanitizers do; then information_schema of the created tables.
"""

from __future__ import annotations

import json
import re
from dataclasses import replace
from typing import Any

import msgspec
import psycopg
import pytest

from materialize_postgres.config import EndpointConfig, parse_endpoint
from materialize_postgres.driver import do_apply
from materialize_postgres.protocol.messages import Apply, MaterializationSpec
from materialize_postgres.sql import ddl
from materialize_postgres.tables import build_table
from tests.shared_data import estuary, estuary_json

# The Go test appends "_<uuid8>_flow_test_<unix seconds>" to table and task names and strips it from
# the snapshot; a fixed one here keeps enum names (which embed the table name) the same length.
RUN_SUFFIX = "_1f2e3d4c_flow_test_1755800000"
TRUNCATED_SUFFIX = re.compile(r"_[0-9a-f]{8}_flow_test_\d+")
ENUM_HASH = re.compile(r"_[0-9a-f]{8}_flow_enum")


def sanitize(text: str) -> str:
    """The Go test's sanitizers: the run suffix, any truncated remainder of it, the enum name hash."""
    text = text.replace(RUN_SUFFIX, "")
    text = TRUNCATED_SUFFIX.sub("", text)
    return ENUM_HASH.sub("_<hash>_flow_enum", text)


def sqlgen_endpoint() -> EndpointConfig:
    return parse_endpoint({"address": "localhost:5432", "user": "flow", "password": "flow"})


def sqlgen_spec() -> MaterializationSpec:
    spec = msgspec.json.decode(estuary("sqlgen/spec.json").read_bytes(), type=MaterializationSpec)
    delta = spec.bindings[1]
    delta.delta_updates = True
    delta.field_selection.document = ""
    return spec


@pytest.mark.parametrize(("index", "table"), [(0, "key_value"), (1, "delta_updates")])
def test_create_table_text_matches_sqlgen(index: int, table: str) -> None:
    expected = estuary_json("sqlgen/expected.json")["createTargetTable"][table]
    spec = sqlgen_spec()
    built = build_table(index, spec.bindings[index], sqlgen_endpoint(), spec.name)
    create, comments = ddl.create_table(built)
    assert create == expected["table"]["create_sql"]
    assert ddl.render(create, comments) == expected["text"]


def snapshot_block(name: str) -> str:
    """One `--- Begin <name> ---` block of the TestSQLGeneration snapshot, as the template rendered it."""
    text = estuary("snapshots/TestSQLGeneration").read_text()
    begin, end = f"--- Begin {name} ---\n", f"--- End {name} ---"
    return text[text.index(begin) + len(begin) : text.index(end)]


@pytest.mark.parametrize(
    ("block", "added", "dropped"),
    [
        ("alter table add columns and drop not nulls", True, True),
        ("alter table add columns", True, False),
        ("alter table drop not nulls", False, True),
    ],
)
def test_alter_table_text_matches_sqlgen(block: str, added: bool, dropped: bool) -> None:
    spec = sqlgen_spec()
    table = build_table(0, spec.bindings[0], sqlgen_endpoint(), spec.name)
    template = table.values[0]
    add = [
        replace(template, field=name, ident=name, type=replace(template.type, ddl=ddl_type))
        for name, ddl_type in (("first_new_column", "STRING"), ("second_new_column", "BOOL"))
    ]
    drop = ["first_required_column", "second_required_column"]
    stmt = ddl.alter_table(table, add if added else [], drop if dropped else [])
    assert f"\n{stmt}\n" == snapshot_block(block)  # Apply describes it between blank lines, as Go does


def test_jsonb_create_table_matches_sqlgen() -> None:
    """The Go test's synthetic table: a multiple-typed field with the JSONB media type, and one without."""
    expected = snapshot_block("createTargetTable [jsonb contentMediaType]")
    multiple = ["object", "string", "array", "number", "boolean", "null"]
    media = "application/vnd.estuary.postgresql.jsonb+json"
    collection = {
        "name": "acme/jsonb",
        "key": ["/id"],
        "projections": [
            {"field": "id", "ptr": "/id", "isPrimaryKey": True, "inference": {"types": ["integer"], "exists": "MUST"}},
            {"field": "plain_json", "ptr": "/plain_json", "inference": {"types": multiple, "exists": "MAY"}},
            {
                "field": "jsonb_col",
                "ptr": "/jsonb_col",
                "inference": {"types": multiple, "exists": "MAY", "contentMediaType": media},
            },
        ],
    }
    binding = {
        "resourceConfig": {"table": "jsonb_round_trip"},
        "resourcePath": ["public", "jsonb_round_trip"],
        "collection": collection,
        "fieldSelection": {"keys": ["id"], "values": ["plain_json", "jsonb_col"]},
    }
    spec = msgspec.json.decode(json.dumps({"name": "m", "bindings": [binding]}), type=MaterializationSpec)
    create, _ = ddl.create_table(build_table(0, spec.bindings[0], sqlgen_endpoint(), spec.name))
    assert expected.startswith(f"\n{create}\n\nCOMMENT ON TABLE")


def materialize_spec(endpoint: dict[str, Any]) -> MaterializationSpec:
    data = estuary_json("materialize/bindings.json")
    bindings = []
    for b in data["bindings"]:
        table = b["table"] + RUN_SUFFIX
        bindings.append(
            {
                "resourceConfig": {**b["resourceConfig"], "table": table},
                "resourcePath": [b["resourceConfig"]["schema"], table],
                "collection": b["collection"],
                "fieldSelection": b["fieldSelection"],
                "deltaUpdates": b["deltaUpdates"],
            }
        )
    config = {**data["endpointConfig"], **endpoint}
    spec = {
        "name": data["materialization"] + RUN_SUFFIX,
        "connectorType": "IMAGE",
        "config": config,
        "bindings": bindings,
    }
    return msgspec.json.decode(json.dumps(spec), type=MaterializationSpec)


def info_schema(conn: psycopg.Connection, table: str) -> list[dict[str, Any]]:
    rows = conn.execute(
        "SELECT column_name, is_nullable = 'YES', data_type FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = %s",
        [table],
    ).fetchall()
    out = [{"Name": n, "Nullable": nullable, "Type": t} for n, nullable, t in rows]
    return sorted(out, key=lambda r: r["Name"].encode())


def test_first_apply_matches_materialize_snapshot(pg_database: Any, pg_conn: psycopg.Connection) -> None:
    expected = estuary_json("materialize/expected.json")
    spec = materialize_spec(pg_database.endpoint_config())

    first = do_apply(Apply(materialization=spec, version="v1")).action_description
    assert sanitize(first) == expected["actionDescription"]

    second = do_apply(Apply(materialization=spec, version="v1", last_materialization=spec)).action_description
    assert second == expected["secondApplyActionDescription"]

    for table, columns in expected["info_schema"].items():
        assert info_schema(pg_conn, table + RUN_SUFFIX) == columns, table


def test_comments_and_keys_match_materialize_snapshot(pg_database: Any, pg_conn: psycopg.Connection) -> None:
    expected = estuary_json("materialize/expected.json")["tables"]
    do_apply(Apply(materialization=materialize_spec(pg_database.endpoint_config())))
    for name, table in expected.items():
        if name == "flow_checkpoints_v1":
            continue
        real = name + RUN_SUFFIX
        comment = pg_conn.execute("SELECT obj_description(%s::regclass, 'pg_class')", [f"public.{real}"]).fetchone()
        assert comment is not None
        assert sanitize(comment[0]) == table["table_comment"]
        assert primary_key(pg_conn, real) == table["primary_key"]
        assert column_comments(pg_conn, real) == table["column_comments"]


def column_comments(conn: psycopg.Connection, table: str) -> dict[str, str]:
    rows = conn.execute(
        "SELECT attname, col_description(attrelid, attnum) FROM pg_attribute "
        "WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped ORDER BY attnum",
        [f"public.{table}"],
    ).fetchall()
    return {name: text for name, text in rows}


def primary_key(conn: psycopg.Connection, table: str) -> list[str]:
    rows = conn.execute(
        "SELECT a.attname FROM pg_index i JOIN pg_attribute a ON a.attrelid = i.indrelid AND a.attnum = ANY(i.indkey) "
        "WHERE i.indrelid = %s::regclass AND i.indisprimary ORDER BY array_position(i.indkey, a.attnum)",
        [f"public.{table}"],
    ).fetchall()
    return [r[0] for r in rows]
