"""Every type mapping end to end: Apply creates the column, a value goes in through the type's
converter by binary COPY exactly as the transactor writes it, and comes back out as PostgreSQL
renders it. Also names (reserved words, quoting, non-ASCII, 63-byte truncation), idempotent Apply
and additional_table_create_sql."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import psycopg
import pytest

from materialize_postgres import pgtypes
from materialize_postgres.apply import ApplyError
from materialize_postgres.driver import do_apply, do_validate, endpoint_config
from materialize_postgres.introspect import existing_tables, lookup
from materialize_postgres.protocol.messages import (
    Apply,
    MaterializationSpec,
    Validate,
    ValidateBinding,
)
from materialize_postgres.tables import BindingError, Table, build_table
from materialize_postgres.typemap import writer_for
from materialize_postgres.validate import ValidationFailure
from tests.specs import binding, materialization, projection

BIG = {"numeric": {"hasMinimum": True, "minimum": -1e30, "hasMaximum": True, "maximum": 1e30}}
JSONB_MEDIA = "application/vnd.estuary.postgresql.jsonb+json"


@dataclass
class Case:
    """One field's projection, field config, a JSON value, and what PostgreSQL shows for it."""

    types: list[str]
    value: Any
    data_type: str  # information_schema.columns.data_type of the created column
    text: str  # the stored value as `col::text`
    inference: dict[str, Any] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)


CASES: dict[str, Case] = {
    "integer": Case(["integer"], 9007199254740993, "bigint", "9007199254740993"),
    "integer_min": Case(["integer"], -(2**63), "bigint", str(-(2**63))),
    "big_integer": Case(["integer"], 2**70, "numeric", str(2**70), BIG),
    "number": Case(["number"], 1.5, "double precision", "1.5"),
    "number_nan": Case(["number"], "NaN", "double precision", "NaN"),
    "number_infinity": Case(["number"], "-Infinity", "double precision", "-Infinity"),
    "integer_and_number": Case(["integer", "number"], 3, "json", "3"),
    "boolean": Case(["boolean"], True, "boolean", "true"),
    "object": Case(["object"], b'{"a": [1, 2], "b": null}', "json", '{"a": [1, 2], "b": null}'),
    "array": Case(["array"], b'[1,"two",{"3":4}]', "json", '[1,"two",{"3":4}]'),
    "multiple_scalar": Case(["boolean", "integer", "object"], 42, "json", "42"),
    "multiple_object": Case(["boolean", "integer", "object"], b'{"x":true}', "json", '{"x":true}'),
    "string": Case(["string"], "héllo\x00 wörld", "text", "héllo wörld"),
    "binary": Case(["string"], "aGVsbG8=", "bytea", "\\x68656c6c6f", {"string": {"contentEncoding": "base64"}}),
    "string_integer": Case(
        ["integer", "string"],
        "123456789012345678901234567890",
        "numeric",
        "123456789012345678901234567890",
        {"string": {"format": "integer"}},
    ),
    "string_integer_native": Case(["integer", "string"], 17, "numeric", "17", {"string": {"format": "integer"}}),
    "string_number": Case(["number", "string"], "1.25e3", "numeric", "1250", {"string": {"format": "number"}}),
    "string_number_nan": Case(["number", "string"], "NaN", "numeric", "NaN", {"string": {"format": "number"}}),
    "date": Case(["string"], "2024-02-29", "date", "2024-02-29", {"string": {"format": "date"}}),
    "date_year_zero": Case(["string"], "0000-01-01", "date", "0001-01-01", {"string": {"format": "date"}}),
    "date_time": Case(
        ["string"],
        "2023-01-15T10:30:45.123456z",
        "timestamp with time zone",
        "2023-01-15 10:30:45.123456+00",
        {"string": {"format": "date-time"}},
    ),
    "date_time_offset": Case(
        ["string"],
        "2023-01-15 12:30:45+02:00",
        "timestamp with time zone",
        "2023-01-15 10:30:45+00",
        {"string": {"format": "date-time"}},
    ),
    "time": Case(["string"], "01:02:03.000Z", "time without time zone", "01:02:03", {"string": {"format": "time"}}),
    "duration": Case(
        ["string"],
        "P1Y2M3DT4H5M6.5S",
        "interval",
        "1 year 2 mons 3 days 04:05:06.5",
        {"string": {"format": "duration"}},
    ),
    "ipv4": Case(["string"], "192.168.1.0/24", "cidr", "192.168.1.0/24", {"string": {"format": "ipv4"}}),
    "ipv4_host": Case(["string"], "10.0.0.1", "cidr", "10.0.0.1/32", {"string": {"format": "ipv4"}}),
    "ipv6": Case(["string"], "2001:db8::/32", "cidr", "2001:db8::/32", {"string": {"format": "ipv6"}}),
    "macaddr": Case(["string"], "08:00:2B:01:02:03", "macaddr", "08:00:2b:01:02:03", {"string": {"format": "macaddr"}}),
    "macaddr8": Case(
        ["string"], "08:00:2b:01:02:03:04:05", "macaddr8", "08:00:2b:01:02:03:04:05", {"string": {"format": "macaddr8"}}
    ),
    "uuid": Case(
        ["string"],
        "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11",
        "uuid",
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11",
        {"string": {"format": "uuid"}},
    ),
    "email": Case(["string"], "a@example.com", "text", "a@example.com", {"string": {"format": "email"}}),
    "enum": Case(["string"], "beta", "USER-DEFINED", "beta", {"enum": ["gamma", "beta", "alpha", "beta"]}),
    "jsonb": Case(
        ["object", "array", "string"],
        b'{"b": 1, "a": [true]}',
        "jsonb",
        '{"a": [true], "b": 1}',
        {"contentMediaType": JSONB_MEDIA},
    ),
    "cast_to_string_number": Case(["number"], 1e20, "text", "100000000000000000000", config={"castToString": True}),
    "cast_to_string_bool": Case(["boolean"], False, "text", "false", config={"castToString": True}),
    "cast_to_string_object": Case(["object"], b'{"a":1}', "text", '{"a":1}', config={"castToString": True}),
    "cast_to_string_date": Case(
        ["string"], "2024-13-45", "text", "2024-13-45", {"string": {"format": "date"}}, {"ignoreStringFormat": True}
    ),
    "cast_to_string_enum": Case(["string"], "a", "USER-DEFINED", "a", {"enum": ["a", "b"]}, {"castToString": True}),
    "ddl_numeric": Case(["integer"], 123, "numeric", "123", config={"DDL": "DECIMAL(20)"}),
    "ddl_varchar": Case(["string"], "abc", "character varying", "abc", config={"DDL": "VARCHAR(10)"}),
    "ddl_smallint": Case(["integer"], -7, "smallint", "-7", config={"DDL": "SMALLINT"}),
}


def spec_for(endpoint: dict[str, Any], fields: dict[str, Case], table: str = "things", **resource: Any) -> Any:
    projections = [projection("id", "/id", ["integer"], key=True), projection("flow_document", "", ["object"])]
    for name, case in fields.items():
        projections.append(projection(name, "/" + name, case.types, must=False, **case.inference))
    coll = {"name": "acme/things", "key": ["/id"], "projections": sorted(projections, key=lambda p: p["field"])}
    b = binding(table, coll, **resource)
    b["fieldSelection"]["fieldConfig"] = {n: c.config for n, c in fields.items() if c.config}
    return materialization(endpoint, b)


def applied(spec: MaterializationSpec, last: MaterializationSpec | None = None) -> str:
    return do_apply(Apply(materialization=spec, version="v1", last_materialization=last)).action_description


def validated(spec: MaterializationSpec, last: MaterializationSpec | None = None) -> dict[str, str]:
    b = spec.bindings[0]
    req = Validate(
        name=spec.name,
        config=spec.config,
        bindings=[
            ValidateBinding(
                resource_config=b.resource_config, collection=b.collection, field_config=b.field_selection.field_config
            )
        ],
        last_materialization=last,
    )
    return {f: c.type for f, c in do_validate(req).bindings[0].constraints.items()}


def table_of(spec: MaterializationSpec) -> Table:
    """The table model the transactor builds for the spec's only binding."""
    return build_table(0, spec.bindings[0], endpoint_config(spec.config), spec.name)


def copy_rows(conn: psycopg.Connection, table: Table, rows: list[list[Any]]) -> None:
    """Binary COPY as the transactor does it: wire types for the existing columns, then converters."""
    pgtypes.register(conn)
    existing = lookup(existing_tables(conn, [table.path]), table.path)
    assert existing is not None
    writers = [writer_for(c.type, existing.column(c.field).data_type) for c in table.columns]  # type: ignore[union-attr]
    cols = ", ".join(c.ident for c in table.columns)
    with conn.cursor() as cur, cur.copy(f"COPY {table.ident} ({cols}) FROM STDIN (FORMAT BINARY)") as copy:
        copy.set_types([t for t, _ in writers])
        for row in rows:
            copy.write_row([None if v is None else conv(v) for (_, conv), v in zip(writers, row, strict=True)])


def column_info(conn: psycopg.Connection, table: str) -> dict[str, tuple[str, str, bool]]:
    rows = conn.execute(
        "SELECT column_name, data_type, udt_name, is_nullable = 'YES' FROM information_schema.columns "
        "WHERE table_schema = 'public' AND table_name = %s",
        [table],
    ).fetchall()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


@pytest.mark.parametrize("name", list(CASES))
def test_type_round_trip(pg_database: Any, pg_conn: psycopg.Connection, name: str) -> None:
    case = CASES[name]
    spec = spec_for(pg_database.endpoint_config(), {"v": case})
    assert "CREATE TABLE" in applied(spec)
    assert column_info(pg_conn, "things")["v"][0] == case.data_type

    table = table_of(spec)
    copy_rows(pg_conn, table, [[1, case.value, b'{"id":1}'], [2, None, b'{"id":2}']])
    rows = pg_conn.execute("SELECT id, v::text FROM things ORDER BY id").fetchall()
    assert rows == [(1, case.text), (2, None)]


def test_enum_type_is_named_for_table_and_field(pg_database: Any, pg_conn: psycopg.Connection) -> None:
    spec = spec_for(pg_database.endpoint_config(), {"status": CASES["enum"]})
    text = applied(spec)
    assert '"status" "public".things_status_flow_enum' not in text  # status is simple: unquoted
    assert 'status "public".things_status_flow_enum' in text
    assert column_info(pg_conn, "things")["status"][1] == "things_status_flow_enum"
    labels = pg_conn.execute("SELECT enum_range(NULL::things_status_flow_enum)::text").fetchone()
    assert labels == ("{alpha,beta,gamma}",)


def test_second_apply_is_a_no_op(pg_database: Any, pg_conn: psycopg.Connection) -> None:
    spec = spec_for(pg_database.endpoint_config(), CASES)
    applied(spec)
    before = column_info(pg_conn, "things")
    assert applied(spec, spec) == ""
    assert applied(spec, None) == ""  # also when the runtime has no last spec
    assert column_info(pg_conn, "things") == before


# --------------------------------------------------------------------------------------------
# Names.

ODD_NAMES = [
    "select",  # reserved
    "order",
    "user",
    "Capitals",
    "with space",
    'dou"ble',
    "sin'gle",
    "κόσμε",  # non-ASCII lowercase: written bare
    "Ünïcödé",
    "123digits",
    "$dollar",
    "a" * 70,  # stored as its first 63 bytes
    "é" * 40,  # 80 bytes; cut between characters at 62 bytes
]


def test_odd_names_round_trip(pg_database: Any, pg_conn: psycopg.Connection) -> None:
    fields = {n: Case(["string"], f"value of {n}", "text", f"value of {n}") for n in ODD_NAMES}
    spec = spec_for(pg_database.endpoint_config(), fields, table="Odd Table")
    applied(spec)
    info = column_info(pg_conn, "Odd Table")
    expected_names = {n.encode()[:63].decode("utf-8", errors="ignore") for n in ODD_NAMES}
    assert expected_names <= set(info)

    table = table_of(spec)
    values = [f"value of {c.field}" if c.field in fields else (1 if c.is_key else b"{}") for c in table.columns]
    copy_rows(pg_conn, table, [values])
    row = pg_conn.execute('SELECT * FROM "Odd Table"').fetchone()
    assert row is not None
    got = dict(zip([d.name for d in pg_conn.execute('SELECT * FROM "Odd Table"').description], row, strict=True))
    for n in ODD_NAMES:
        assert got[n.encode()[:63].decode("utf-8", errors="ignore")] == f"value of {n}"
    assert applied(spec, spec) == ""  # the truncated columns are found again


def test_non_ascii_lowercase_is_unquoted(pg_database: Any) -> None:
    spec = spec_for(pg_database.endpoint_config(), {"κόσμε": CASES["string"], "select": CASES["string"]})
    text = applied(spec)
    assert "\t\tκόσμε TEXT," in text
    assert '\t\t"select" TEXT,' in text


def colliding(endpoint: dict[str, Any], *, keys: bool) -> MaterializationSpec:
    a, b = "x" * 63 + "_first", "x" * 63 + "_second"
    if not keys:
        return spec_for(endpoint, {a: CASES["string"], b: CASES["string"]})
    projections = [
        projection(a, "/" + a, ["string"], key=True),
        projection(b, "/" + b, ["string"], key=True),
        projection("flow_document", "", ["object"]),
    ]
    coll = {"name": "acme/things", "key": ["/" + a, "/" + b], "projections": projections}
    return materialization(endpoint, binding("things", coll))


def test_truncation_collision_fails_apply_naming_both(pg_database: Any, pg_conn: psycopg.Connection) -> None:
    spec = colliding(pg_database.endpoint_config(), keys=False)
    with pytest.raises(BindingError) as err:
        applied(spec)
    assert "x" * 63 + "_first" in str(err.value)
    assert "x" * 63 + "_second" in str(err.value)
    assert "things" not in column_info(pg_conn, "things")  # nothing created


def test_truncation_collision_of_keys_fails_validate_naming_both(pg_database: Any) -> None:
    spec = colliding(pg_database.endpoint_config(), keys=True)
    with pytest.raises(ValidationFailure) as err:
        validated(spec)
    assert "x" * 63 + "_first" in str(err.value)
    assert "x" * 63 + "_second" in str(err.value)


# --------------------------------------------------------------------------------------------
# additional_table_create_sql.


def test_additional_sql_runs_with_the_create(pg_database: Any, pg_conn: psycopg.Connection) -> None:
    extra = "CREATE INDEX things_v_idx ON things (v); COMMENT ON INDEX things_v_idx IS '100% custom'"
    spec = spec_for(pg_database.endpoint_config(), {"v": CASES["string"]}, additional_table_create_sql=extra)
    applied(spec)
    row = pg_conn.execute("SELECT obj_description('things_v_idx'::regclass, 'pg_class')").fetchone()
    assert row == ("100% custom",)


def test_failing_additional_sql_rolls_back_the_table(pg_database: Any, pg_conn: psycopg.Connection) -> None:
    extra = "CREATE INDEX things_idx ON things (no_such_column)"
    spec = spec_for(pg_database.endpoint_config(), {"v": CASES["string"]}, additional_table_create_sql=extra)
    with pytest.raises(ApplyError) as err:
        applied(spec)
    assert f"executing additional SQL statement {extra!r}" in str(err.value)
    assert "no_such_column" in str(err.value)
    assert column_info(pg_conn, "things") == {}
    # The checkpoints table was its own step and stays; a fixed spec then creates the table.
    assert column_info(pg_conn, "flow_checkpoints_v1")
    fixed = spec_for(pg_database.endpoint_config(), {"v": CASES["string"]})
    assert "CREATE TABLE IF NOT EXISTS" in applied(fixed)
    assert set(column_info(pg_conn, "things")) == {"id", "v", "flow_document"}


def test_user_ddl_column_stays_compatible(pg_database: Any, pg_conn: psycopg.Connection) -> None:
    """A field with its own DDL validates against whatever column it made, and re-applies as a no-op."""
    spec = spec_for(pg_database.endpoint_config(), {"n": CASES["ddl_numeric"], "s": CASES["ddl_varchar"]})
    assert validated(spec)["n"] == "LOCATION_RECOMMENDED"
    applied(spec)
    assert column_info(pg_conn, "things")["s"][0] == "character varying"
    constraints = validated(spec, spec)
    assert (constraints["n"], constraints["s"]) == ("FIELD_OPTIONAL", "FIELD_OPTIONAL")
    assert applied(spec, spec) == ""


# --------------------------------------------------------------------------------------------
# Changes to an existing table.


def test_new_enum_values_are_added_without_other_changes(pg_database: Any, pg_conn: psycopg.Connection) -> None:
    v1 = spec_for(pg_database.endpoint_config(), {"status": Case(["string"], "a", "", "", {"enum": ["a", "b"]})})
    applied(v1)
    v2 = spec_for(pg_database.endpoint_config(), {"status": Case(["string"], "c", "", "", {"enum": ["a", "b", "c"]})})
    assert validated(v2, v1)["status"] == "FIELD_OPTIONAL"
    assert applied(v2, v1) == ""  # nothing a user needs to read
    labels = pg_conn.execute("SELECT enum_range(NULL::things_status_flow_enum)::text").fetchone()
    assert labels == ("{a,b,c}",)
    copy_rows(pg_conn, table_of(v2), [[1, "c", b"{}"]])
    assert pg_conn.execute("SELECT status::text FROM things").fetchone() == ("c",)


def test_alter_is_described_like_the_go_connector(pg_database: Any) -> None:
    enum = Case(["string"], "a", "", "", {"enum": ["a"]})
    v1 = spec_for(pg_database.endpoint_config(), {"status": enum})
    applied(v1)
    v2 = spec_for(pg_database.endpoint_config(), {"status": enum, "added": CASES["integer"]})
    assert applied(v2, v1) == (
        """ALTER TYPE "public".things_status_flow_enum ADD VALUE IF NOT EXISTS 'a'\n"""
        """\nALTER TABLE "public".things\n\tADD COLUMN added BIGINT;\n"""
    )


def test_not_null_stays_when_the_projection_has_a_default(pg_database: Any, pg_conn: psycopg.Connection) -> None:
    endpoint = pg_database.endpoint_config()
    required = Case(["string"], "", "", "")
    v1 = spec_for(endpoint, {"d": required, "n": required})
    for p in v1.bindings[0].collection.projections:
        if p.field in ("d", "n"):
            p.inference.exists = "MUST"
    applied(v1)
    v2 = spec_for(endpoint, {"d": Case(["string"], "", "", "", {"default": "x"}), "n": required})
    assert "ALTER COLUMN n DROP NOT NULL" in applied(v2, v1)
    info = column_info(pg_conn, "things")
    assert (info["d"][2], info["n"][2]) == (False, True)


def test_a_former_value_may_become_a_key(pg_database: Any) -> None:
    """Only a key the table never had is refused; one already materialized as a value is required."""
    endpoint = pg_database.endpoint_config()
    v1 = spec_for(endpoint, {"k2": Case(["integer"], 0, "", "")})
    for p in v1.bindings[0].collection.projections:
        if p.field == "k2":
            p.inference.exists = "MUST"
    applied(v1)
    v2 = spec_for(endpoint, {"k2": Case(["integer"], 0, "", ""), "k3": Case(["integer"], 0, "", "")})
    for p in v2.bindings[0].collection.projections:
        if p.field in ("k2", "k3"):
            p.is_primary_key, p.inference.exists = True, "MUST"
    v2.bindings[0].collection.key = ["/id", "/k2", "/k3"]
    constraints = validated(v2, v1)
    assert (constraints["k2"], constraints["k3"]) == ("FIELD_REQUIRED", "FIELD_FORBIDDEN")
