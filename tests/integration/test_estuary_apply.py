"""Estuary's TestIntegration-apply, driven through our Validate and Apply.

The Go test (materialize-boilerplate testutil `RunApplyTest`) validates and applies a sequence of
built specs against one table and snapshots the constraint types Validate answers and the columns
information_schema shows afterwards. The recorded outputs are in the shared folder's
`apply/expected.json`, one block per snapshot heading; the specs are `apply/specs/*.json`. Reasons
are ours to word, so only constraint types are compared.

Like the Go test, an Apply request is built from the Validated response the way Flow's control plane
selects fields: keys, the first root document, the live selection and every required field, plus
every optional or recommended field that is not forbidden or incompatible. As in Go, Apply mutates
the spec it is given (config, resource, path, selection), and that spec is later passed as "last".
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import msgspec
import psycopg
import pytest
from psycopg import sql

from materialize_postgres.driver import do_apply, do_validate
from materialize_postgres.protocol.messages import (
    Apply,
    CollectionSpec,
    FieldSelection,
    MaterializationSpec,
    Validate,
    ValidateBinding,
    Validated,
    ValidatedBinding,
    raw,
)
from tests.shared_data import estuary, estuary_json

FEATURE_FLAGS = "allow_existing_tables_for_new_bindings"  # as in the Go test's config.local.yaml
HARD_RULES = ("FIELD_REQUIRED", "LOCATION_REQUIRED")


@pytest.fixture(scope="module")
def blocks() -> dict[str, list[dict[str, Any]]]:
    return estuary_json("apply/expected.json")["blocks"]


def load_spec(name: str) -> MaterializationSpec:
    return msgspec.json.decode(estuary(f"apply/specs/{name}.json").read_bytes(), type=MaterializationSpec)


class Harness:
    """Validate/Apply requests for one table, shaped like the Go test's validateReq/applyReq."""

    def __init__(self, endpoint: dict[str, Any], conn: psycopg.Connection, table: str) -> None:
        self.config = raw(endpoint)
        self.resource = raw({"table": table, "schema": endpoint["schema"]})
        self.conn = conn
        self.table = table

    def validate(self, spec: MaterializationSpec, last: MaterializationSpec | None) -> Validated:
        b = spec.bindings[0]
        binding = ValidateBinding(
            resource_config=self.resource,
            collection=b.collection,
            field_config=b.field_selection.field_config,
            backfill=b.backfill,
        )
        req = Validate(name=spec.name, config=self.config, bindings=[binding], last_materialization=last)
        return do_validate(req)

    def apply(self, spec: MaterializationSpec, last: MaterializationSpec | None, validated: Validated) -> str:
        b, vb = spec.bindings[0], validated.bindings[0]
        spec.config = self.config
        b.resource_config = self.resource
        b.resource_path = list(vb.resource_path)
        b.delta_updates = vb.delta_updates
        live = last.bindings[0].field_selection if last is not None and last.bindings else FieldSelection()
        b.field_selection = select_fields(vb, b.collection, live)
        return do_apply(
            Apply(materialization=spec, version="someVersion", last_materialization=last)
        ).action_description

    def schema(self) -> list[dict[str, Any]]:
        """information_schema columns as the Go test dumps them: {Name, Nullable, Type} sorted by name."""
        rows = self.conn.execute(
            "SELECT column_name, is_nullable = 'YES', data_type FROM information_schema.columns "
            "WHERE table_schema = 'public' AND table_name = %s",
            [self.table],
        ).fetchall()
        return sorted(({"Name": n, "Nullable": nullable, "Type": t} for n, nullable, t in rows), key=_by_name)

    def drop(self) -> None:
        self.conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(self.table)))


def _by_name(row: dict[str, Any]) -> bytes:
    return row["Name"].encode()  # Go compares strings bytewise


def select_fields(vb: ValidatedBinding, collection: CollectionSpec, live: FieldSelection) -> FieldSelection:
    """The control plane's selection at "recommended" depth, as the Go test emulates it."""
    live_fields = {*live.keys, *live.values, *([live.document] if live.document else [])}
    out = FieldSelection()
    for field in sorted(vb.constraints):
        kind = vb.constraints[field].type
        proj = collection.projection(field)
        is_key = proj is not None and proj.is_primary_key
        is_doc = proj is not None and proj.ptr == ""
        hard = kind in HARD_RULES or is_key or is_doc or field in live_fields
        if kind == "FIELD_FORBIDDEN" or (kind == "INCOMPATIBLE" and not hard):
            continue
        if is_key:
            out.keys.append(field)
        elif is_doc and not out.document:
            out.document = field
        else:
            out.values.append(field)
    out.keys.sort()
    out.values.sort()
    return out


def constraint_types(validated: Validated) -> dict[str, str]:
    return {f: c.type for f, c in validated.bindings[0].constraints.items()}


def expected_types(rows: list[dict[str, Any]]) -> dict[str, str]:
    out: dict[str, str] = {}
    for r in rows:
        out.setdefault(r["Field"], r["TypeString"])  # the first (lowest) type when Go answered two
    return out


def normalized(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{"Name": r["Name"], "Nullable": r["Nullable"], "Type": r["Type"]} for r in rows]


@pytest.fixture
def harness_for(pg_database: Any, pg_conn: psycopg.Connection) -> Callable[[str], Harness]:
    endpoint = pg_database.endpoint_config(hardDelete=True, advanced={"feature_flags": FEATURE_FLAGS})
    return lambda table: Harness(endpoint, pg_conn, table)


def test_big_schema(harness_for: Callable[[str], Harness], blocks: dict[str, Any]) -> None:
    h = harness_for("bigschema_apply")
    fixture = load_spec("big-schema")

    validated = h.validate(fixture, None)
    assert constraint_types(validated) == expected_types(blocks["Big Schema Initial Constraints"])
    h.apply(fixture, None, validated)
    all_required = h.schema()
    assert all_required == normalized(blocks["Big Schema Materialized Resource Schema With All Fields Required"])

    validated = h.validate(fixture, fixture)
    assert constraint_types(validated) == expected_types(blocks["Big Schema Re-validated Constraints"])
    assert h.apply(fixture, fixture, validated) == ""
    assert h.schema() == all_required

    changed = load_spec("big-schema-changed")
    validated = h.validate(changed, fixture)
    assert constraint_types(validated) == expected_types(blocks["Big Schema Changed Types Constraints"])

    nullable = load_spec("big-schema-nullable")
    validated = h.validate(nullable, fixture)
    h.apply(nullable, fixture, validated)
    no_required = h.schema()
    assert h.apply(nullable, nullable, validated) == ""
    assert h.schema() == no_required
    assert no_required == normalized(blocks["Big Schema Materialized Resource Schema With No Fields Required"])

    changed.bindings[0].backfill = 1
    validated = h.validate(changed, nullable)
    assert constraint_types(validated) == expected_types(blocks["Big Schema Changed Types With Backfill Constraints"])
    h.apply(changed, nullable, validated)
    assert h.schema() == normalized(blocks["Big Schema Materialized Resource Schema Changed Types With Backfill"])


@pytest.mark.parametrize(
    ("block", "spec_name"),
    [
        ("add a single field", "add-single-optional"),
        ("remove a single optional field", "remove-single-optional"),
        ("remove a single required field", "remove-single-required"),
        ("add and remove many fields", "add-and-remove-many"),
    ],
)
def test_add_and_remove_fields(
    harness_for: Callable[[str], Harness], blocks: dict[str, Any], block: str, spec_name: str
) -> None:
    h = harness_for("addandremovefields_apply")
    initial = load_spec("base")
    h.apply(initial, None, h.validate(initial, None))

    new_spec = load_spec(spec_name)
    h.apply(new_spec, initial, h.validate(new_spec, initial))
    assert h.schema() == normalized(blocks[block])
    h.drop()


def test_challenging_field_names(harness_for: Callable[[str], Harness], blocks: dict[str, Any]) -> None:
    h = harness_for("challengingnames_apply")
    fixture = load_spec("challenging-fields")
    descriptions = []
    for _ in range(2):  # the second round must read back the columns it created and add none
        descriptions.append(h.apply(fixture, None, h.validate(fixture, None)))
    assert "CREATE TABLE" in descriptions[0]
    assert descriptions[1] == ""
    assert h.schema() == normalized(blocks["Challenging Field Names Materialized Columns"])
