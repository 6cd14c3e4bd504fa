"""Schema evolution: a column whose field changes type is migrated in place with its data
converted; changes that cannot migrate are refused at Validate; backfills truncate or replace."""

from __future__ import annotations

import copy
from typing import Any

import msgspec
import psycopg
import pytest

from materialize_postgres.driver import do_apply, do_validate
from materialize_postgres.protocol.messages import Apply, MaterializationSpec, Validate, ValidateBinding
from materialize_postgres.runner.runtime import InProcessConnector, Runtime
from tests.specs import binding, materialization, projection


def spec_with(
    endpoint: dict[str, Any], field: dict[str, Any], *, backfill: int = 0, **resource: Any
) -> MaterializationSpec:
    coll = {
        "name": "m/things",
        "key": ["/id"],
        "projections": sorted(
            [projection("id", "/id", ["integer"], key=True), field, projection("flow_document", "", ["object"])],
            key=lambda p: p["field"],
        ),
    }
    b = binding("things", coll, **resource)
    if backfill:
        b["backfill"] = backfill
    return materialization(endpoint, b)


def validate(spec: MaterializationSpec, last: MaterializationSpec | None) -> dict[str, str]:
    req = Validate(
        name=spec.name,
        config=spec.config,
        bindings=[
            ValidateBinding(
                resource_config=b.resource_config,
                collection=b.collection,
                backfill=b.backfill,
                field_config=b.field_selection.field_config,
            )
            for b in spec.bindings
        ],
        last_materialization=last,
    )
    return {f: c.type for f, c in do_validate(req).bindings[0].constraints.items()}


def apply(spec: MaterializationSpec, last: MaterializationSpec | None) -> str:
    return do_apply(Apply(materialization=spec, last_materialization=last)).action_description


def planned(spec: MaterializationSpec, last: MaterializationSpec | None) -> str:
    """What `materialize-postgres plan` prints for an apply request (it changes nothing)."""
    import tempfile
    from pathlib import Path

    from materialize_postgres.planning import dry_run

    request = {"apply": {"materialization": spec, "lastMaterialization": last}}
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "apply.json"
        path.write_bytes(msgspec.json.encode(request))
        return dry_run(path, None, None)


def store(spec: MaterializationSpec, docs: list[dict[str, Any]]) -> None:
    rt = Runtime(InProcessConnector(), spec)
    rt.open()
    rt.transaction([("m/things", d) for d in docs], {})
    rt.close()


def column(dsn: str) -> tuple[str, list[Any]]:
    with psycopg.connect(dsn) as conn:
        (data_type,) = conn.execute(
            "SELECT data_type FROM information_schema.columns WHERE table_name = 'things' AND column_name = 'v'"
        ).fetchone() or ("",)
        values = [r[0] for r in conn.execute("SELECT v::text FROM things ORDER BY id").fetchall()]
    return data_type, values


MIGRATIONS = [
    # (before projection kwargs, value, after projection kwargs, new data_type, value as text after)
    ({"types": ["integer"]}, 42, {"types": ["number"]}, "double precision", "42"),
    ({"types": ["integer"]}, 42, {"types": ["string"]}, "text", "42"),
    ({"types": ["integer"]}, 42, {"types": ["integer", "string"], "fmt": "integer"}, "numeric", "42"),
    ({"types": ["number"]}, 1.5, {"types": ["string"]}, "text", "1.5"),
    ({"types": ["string"], "fmt": "date"}, "2024-01-01", {"types": ["string"]}, "text", "2024-01-01"),
    (
        {"types": ["string"], "fmt": "date-time"},
        "2024-01-01T12:00:00Z",
        {"types": ["string"]},
        "text",
        "2024-01-01T12:00:00.000000Z",
    ),
    ({"types": ["string"], "fmt": "time"}, "10:11:12", {"types": ["string"]}, "text", "10:11:12"),
    ({"types": ["object"]}, {"a": 1}, {"types": ["string"]}, "text", '{"a":1}'),
    ({"types": ["boolean"]}, True, {"types": ["boolean", "string"]}, "json", "true"),
    (
        {"types": ["string"]},
        "aGk=",
        {"types": ["string"], "string_extra": {"contentEncoding": "base64"}},
        "bytea",
        "\\x6869",
    ),
]


def _projection(kw: dict[str, Any]) -> dict[str, Any]:
    kw = dict(kw)
    extra = kw.pop("string_extra", None)
    p = projection("v", "/v", kw.pop("types"), must=False, **kw)
    if extra:
        p["inference"].setdefault("string", {}).update(extra)
    return p


@pytest.mark.parametrize(("before", "value", "after", "data_type", "text"), MIGRATIONS)
def test_in_place_migrations_keep_the_data(
    pg_database: Any, before: dict[str, Any], value: Any, after: dict[str, Any], data_type: str, text: str
) -> None:
    endpoint = pg_database.endpoint_config()
    v1 = spec_with(endpoint, _projection(before))
    apply(v1, None)
    store(v1, [{"id": 1, "v": value}])
    v2 = spec_with(endpoint, _projection(after))
    assert validate(v2, v1)["v"] == "FIELD_OPTIONAL"
    assert f"ALTER COLUMN V TYPE {data_type.upper()}" in planned(v2, v1).upper()
    assert column(pg_database.dsn)[0] != data_type  # planning changed nothing
    description = apply(v2, v1)
    assert "ALTER COLUMN v TYPE" in description and "USING" in description
    assert column(pg_database.dsn) == (data_type, [text])
    assert apply(v2, v2) == ""  # nothing left to do


@pytest.mark.parametrize(
    ("before", "after"),
    [
        ({"types": ["boolean"]}, {"types": ["integer"]}),
        ({"types": ["string"]}, {"types": ["integer"]}),
        ({"types": ["string"], "fmt": "uuid"}, {"types": ["integer"]}),
        ({"types": ["number"]}, {"types": ["boolean"]}),
    ],
)
def test_incompatible_changes_are_refused_at_validate(
    pg_database: Any, before: dict[str, Any], after: dict[str, Any]
) -> None:
    endpoint = pg_database.endpoint_config()
    v1 = spec_with(endpoint, _projection(before))
    apply(v1, None)
    v2 = spec_with(endpoint, _projection(after))
    assert validate(v2, v1)["v"] == "INCOMPATIBLE"
    # A backfill makes it acceptable again: the table is replaced.
    v3 = spec_with(endpoint, _projection(after), backfill=1)
    assert validate(v3, v1)["v"] != "INCOMPATIBLE"
    assert "DROP TABLE" in planned(v3, v1) and "CREATE TABLE" in planned(v3, v1)
    description = apply(v3, v1)
    assert "DROP TABLE" in description and "CREATE TABLE" in description


def test_a_backfill_that_fits_truncates(pg_database: Any) -> None:
    endpoint = pg_database.endpoint_config()
    v1 = spec_with(endpoint, _projection({"types": ["integer"]}))
    apply(v1, None)
    store(v1, [{"id": 1, "v": 1}, {"id": 2, "v": 2}])
    v2 = spec_with(endpoint, _projection({"types": ["integer"]}), backfill=1)
    assert "TRUNCATE TABLE" in planned(v2, v1) and "TRUNCATE TABLE" not in planned(v2, v2)
    assert column(pg_database.dsn) == ("bigint", ["1", "2"])
    assert "TRUNCATE TABLE" in apply(v2, v1)
    assert column(pg_database.dsn) == ("bigint", [])


def test_retain_existing_data_on_backfill(pg_database: Any) -> None:
    endpoint = pg_database.endpoint_config(advanced={"feature_flags": "retain_existing_data_on_backfill"})
    v1 = spec_with(endpoint, _projection({"types": ["integer"]}))
    apply(v1, None)
    store(v1, [{"id": 1, "v": 1}])
    v2 = spec_with(endpoint, _projection({"types": ["integer"]}), backfill=1)
    assert "TRUNCATE" not in planned(v2, v1)
    assert "TRUNCATE" not in apply(v2, v1)
    assert column(pg_database.dsn) == ("bigint", ["1"])


def test_always_drop_tables_on_backfill(pg_database: Any) -> None:
    endpoint = pg_database.endpoint_config(advanced={"feature_flags": "always_drop_tables_on_backfill"})
    v1 = spec_with(endpoint, _projection({"types": ["integer"]}))
    apply(v1, None)
    v2 = spec_with(endpoint, _projection({"types": ["integer"]}), backfill=1)
    assert "DROP TABLE" in planned(v2, v1)
    assert "DROP TABLE" in apply(v2, v1)


def test_fields_becoming_optional_or_deselected_lose_not_null(pg_database: Any) -> None:
    endpoint = pg_database.endpoint_config()
    v1 = spec_with(endpoint, projection("v", "/v", ["string"], must=True))
    apply(v1, None)
    v2 = spec_with(endpoint, projection("v", "/v", ["string"], must=False))
    assert "DROP NOT NULL" in planned(v2, v1)
    assert "DROP NOT NULL" in apply(v2, v1)
    with psycopg.connect(pg_database.dsn) as conn:
        (nullable,) = conn.execute(
            "SELECT is_nullable FROM information_schema.columns WHERE table_name='things' AND column_name='v'"
        ).fetchone() or ("",)
    assert nullable == "YES"


def test_an_interrupted_apply_is_finished_by_the_next(pg_database: Any) -> None:
    from materialize_postgres.apply import execute, plan
    from materialize_postgres.connect import Target, connect
    from materialize_postgres.driver import endpoint_config

    endpoint = pg_database.endpoint_config()
    v1 = spec_with(endpoint, _projection({"types": ["integer"]}))
    apply(v1, None)
    store(v1, [{"id": 1, "v": 7}])
    # v2 adds a field and migrates another: stop after the first action, as a crash would.
    v2 = copy.deepcopy(spec_with(endpoint, _projection({"types": ["string"]})))
    v2.bindings[0].collection.projections.append(msgspec_projection(projection("w", "/w", ["boolean"], must=False)))
    v2.bindings[0].collection.projections.sort(key=lambda p: p.field)
    v2.bindings[0].field_selection.values = sorted([*v2.bindings[0].field_selection.values, "w"])
    cfg = endpoint_config(v2.config)
    with connect(cfg, Target(pg_database.host, pg_database.port), application="test") as conn:
        actions = plan(conn, v2, cfg, v1)
        assert len(actions) >= 2
        execute(conn, actions[:1])
    apply(v2, v1)  # the re-run finishes what is left
    assert apply(v2, v2) == ""
    assert column(pg_database.dsn) == ("text", ["7"])


def msgspec_projection(p: dict[str, Any]) -> Any:
    import json

    import msgspec

    from materialize_postgres.protocol.messages import Projection

    return msgspec.json.decode(json.dumps(p), type=Projection)


def test_plan_prints_the_migration_and_changes_nothing(pg_database: Any, tmp_path: Any) -> None:
    import subprocess
    import sys

    import msgspec

    endpoint = pg_database.endpoint_config()
    v1 = spec_with(endpoint, _projection({"types": ["integer"]}))
    apply(v1, None)
    v2 = spec_with(endpoint, _projection({"types": ["string"]}))
    request = tmp_path / "apply.json"
    request.write_bytes(b'{"apply":{"materialization":' + msgspec.json.encode(v2) + b"}}")
    done = subprocess.run([sys.executable, "-m", "materialize_postgres", "plan", str(request)], capture_output=True)
    assert done.returncode == 0, done.stderr.decode()
    assert "ALTER TABLE" in done.stdout.decode() and "TYPE TEXT USING" in done.stdout.decode()
    assert column(pg_database.dsn)[0] == "bigint"


def test_rewrites_of_existing_rows_are_logged_with_rows_and_time(pg_database: Any, caplog: Any) -> None:
    endpoint = pg_database.endpoint_config()
    v1 = spec_with(endpoint, _projection({"types": ["integer"]}))
    apply(v1, None)
    store(v1, [{"id": i, "v": i} for i in range(1, 251)])
    v2 = spec_with(endpoint, _projection({"types": ["number"]}))
    with caplog.at_level("INFO", logger="materialize_postgres.apply"):
        apply(v2, v1)
        apply(spec_with(endpoint, _projection({"types": ["number"]}), backfill=1), v2)
    logged = [r.fields for r in caplog.records if r.getMessage() == "rewrote table"]  # type: ignore[attr-defined]
    assert [(f["table"], f["rows"]) for f in logged] == [("public.things", 250), ("public.things", 250)]
    assert "ALTER COLUMN v TYPE" in logged[0]["statement"] and logged[1]["statement"].startswith("TRUNCATE")
    assert all(isinstance(f["seconds"], float) and f["seconds"] >= 0 for f in logged)


def test_a_removed_binding_leaves_its_table_and_rows_alone(pg_database: Any) -> None:
    endpoint = pg_database.endpoint_config()
    coll = {
        "name": "m/others",
        "key": ["/id"],
        "projections": [projection("flow_document", "", ["object"]), projection("id", "/id", ["integer"], key=True)],
    }
    v1 = spec_with(endpoint, _projection({"types": ["integer"]}))
    things = msgspec.json.decode(msgspec.json.encode(v1.bindings[0]))
    both = materialization(endpoint, things, binding("others", coll))
    apply(both, None)
    store(both, [{"id": 1, "v": 1}])
    assert planned(v1, both) == "-- nothing to do: the database already matches the spec"
    assert apply(v1, both) == ""
    with psycopg.connect(pg_database.dsn) as conn:
        assert conn.execute("SELECT to_regclass('others') IS NOT NULL").fetchone() == (True,)
    assert column(pg_database.dsn) == ("bigint", ["1"])
