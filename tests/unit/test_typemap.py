"""Type mapping as pure functions: flattening, column DDL, compatibility, enum names, converters."""

from __future__ import annotations

import datetime as dt
import ipaddress
import uuid
from decimal import Decimal
from typing import Any

import msgspec
import pytest

from materialize_postgres.introspect import ExistingColumn
from materialize_postgres.migrations import migration_cast
from materialize_postgres.protocol.messages import Projection
from materialize_postgres.typemap import (
    JSONB_MEDIA_TYPE,
    ColumnType,
    ValueError_,
    describe_types,
    enum_type_name,
    flat_type,
    map_projection,
    writer_for,
)

DEFAULT_FLAGS: dict[str, bool] = {}
PATH = ["public", "orders"]


def proj(types: list[str], *, key: bool = False, field: str = "f", **inference: Any) -> Projection:
    data: dict[str, Any] = {"field": field, "ptr": "/" + field, "inference": {"types": types, **inference}}
    if key:
        data["isPrimaryKey"] = True
    return msgspec.convert(data, Projection)


def fmt(name: str) -> dict[str, Any]:
    return {"string": {"format": name}}


def mapped(
    p: Projection, *, key: bool = False, config: dict[str, Any] | None = None, flags: dict[str, bool] | None = None
) -> ColumnType:
    return map_projection(p, is_key=key, field_config=config, flags=flags or DEFAULT_FLAGS, table_path=PATH)


# --------------------------------------------------------------------------------------------
# Flattening.


@pytest.mark.parametrize(
    ("types", "inference", "key", "expected"),
    [
        (["integer"], {}, False, "integer"),
        (["integer", "null"], {}, False, "integer"),
        (["number"], {}, False, "number"),
        (["fractional"], {}, False, "number"),
        (["boolean"], {}, False, "boolean"),
        (["object"], {}, False, "object"),
        (["array"], {}, False, "array"),
        (["string"], {}, False, "string"),
        (["null"], {}, False, "never"),
        ([], {}, False, "never"),
        (["integer", "number"], {}, False, "multiple"),
        (["boolean", "integer", "object"], {}, False, "multiple"),
        (["string"], {"string": {"contentEncoding": "base64"}}, False, "binary"),
        (
            ["string"],
            {"string": {"contentEncoding": "base64", "contentType": "application/octet-stream"}},
            False,
            "binary",
        ),
        (
            ["string"],
            {"string": {"contentEncoding": "base64", "contentType": "application/x-protobuf"}},
            False,
            "string",
        ),
        (["integer", "string"], fmt("integer"), False, "string_integer"),
        (["string", "null"], fmt("integer"), False, "string_integer"),
        (["number", "string"], fmt("number"), False, "string_number"),
        (["integer", "number", "string"], fmt("number"), False, "multiple"),  # integer is not allowed for "number"
        (["integer", "string"], fmt("integer"), True, "multiple"),  # keys are never numeric strings
        (["string"], fmt("integer"), True, "string"),
    ],
)
def test_flat_type(types: list[str], inference: dict[str, Any], key: bool, expected: str) -> None:
    assert flat_type(proj(types, key=key, **inference)) == expected


# --------------------------------------------------------------------------------------------
# Column DDL.

BIG_MAX = {"numeric": {"hasMaximum": True, "maximum": 1e20}}
BIG_MIN = {"numeric": {"hasMinimum": True, "minimum": -1e20}}
INT64_RANGE = {"numeric": {"hasMinimum": True, "minimum": -9e18, "hasMaximum": True, "maximum": 9e18}}


@pytest.mark.parametrize(
    ("types", "inference", "ddl"),
    [
        (["integer"], {}, "BIGINT"),
        (["integer"], INT64_RANGE, "BIGINT"),
        (["integer"], BIG_MAX, "NUMERIC"),
        (["integer"], BIG_MIN, "NUMERIC"),
        (["number"], {}, "DOUBLE PRECISION"),
        (["boolean"], {}, "BOOLEAN"),
        (["object"], {}, "JSON"),
        (["array"], {}, "JSON"),
        (["boolean", "integer", "object"], {}, "JSON"),
        (["object"], {"contentMediaType": JSONB_MEDIA_TYPE}, "JSONB"),
        (["array", "null"], {"contentMediaType": JSONB_MEDIA_TYPE}, "JSONB"),
        (["object", "string"], {"contentMediaType": JSONB_MEDIA_TYPE}, "JSONB"),
        (["string"], {"string": {"contentEncoding": "base64"}}, "BYTEA"),
        (["integer", "string"], fmt("integer"), "NUMERIC"),
        (["number", "string"], fmt("number"), "DECIMAL"),
        (["string"], {}, "TEXT"),
        (["string"], fmt("date"), "DATE"),
        (["string"], fmt("date-time"), "TIMESTAMPTZ"),
        (["string"], fmt("time"), "TIME"),
        (["string"], fmt("duration"), "INTERVAL"),
        (["string"], fmt("ipv4"), "CIDR"),
        (["string"], fmt("ipv6"), "CIDR"),
        (["string"], fmt("macaddr"), "MACADDR"),
        (["string"], fmt("macaddr8"), "MACADDR8"),
        (["string"], fmt("uuid"), "UUID"),
        (["string"], fmt("email"), "TEXT"),
        (["string"], fmt("hostname"), "TEXT"),
        (["string"], fmt("uri"), "TEXT"),
        (["string"], fmt("regex"), "TEXT"),
        (["string"], {"string": {"maxLength": 10}}, "TEXT"),  # no VARCHAR(n)
    ],
)
def test_value_ddl(types: list[str], inference: dict[str, Any], ddl: str) -> None:
    assert mapped(proj(types, **inference)).ddl == ddl


@pytest.mark.parametrize(
    ("types", "inference", "ddl"),
    [
        (["string"], fmt("date"), "TEXT"),
        (["string"], fmt("date-time"), "TEXT"),
        (["string"], fmt("time"), "TEXT"),
        (["string"], fmt("uuid"), "UUID"),
        (["string"], fmt("ipv4"), "CIDR"),
        (["string"], {"enum": ["a", "b"]}, "TEXT"),  # keys are never enums
        (["integer"], {}, "BIGINT"),
        (["string"], {"string": {"contentEncoding": "base64"}}, "BYTEA"),
    ],
)
def test_key_ddl(types: list[str], inference: dict[str, Any], ddl: str) -> None:
    assert mapped(proj(types, key=True, **inference), key=True).ddl == ddl


def test_feature_flags_change_the_mapping() -> None:
    off = {"datetime_keys_as_string": False, "native_binary_column_type": False, "enum": False, "jsonb": False}
    assert mapped(proj(["string"], key=True, **fmt("date-time")), key=True, flags=off).ddl == "TIMESTAMPTZ"
    assert mapped(proj(["string"], string={"contentEncoding": "base64"}), flags=off).ddl == "TEXT"
    assert mapped(proj(["string"], enum=["a"]), flags=off).ddl == "TEXT"
    assert mapped(proj(["object"], contentMediaType=JSONB_MEDIA_TYPE), flags=off).ddl == "JSON"


def test_jsonb_needs_the_inference_media_type() -> None:
    # The string inference's content type is a different annotation, as in the Go connector.
    assert mapped(proj(["object", "string"], string={"contentType": JSONB_MEDIA_TYPE})).ddl == "JSON"


def test_enum_mapping() -> None:
    ctype = mapped(proj(["string", "null"], field="status", enum=["b", "a", "b", None]))
    assert ctype.ddl == '"public".orders_status_flow_enum'
    assert ctype.enum_values == ("a", "b")
    assert ctype.enum_name == "orders_status_flow_enum"
    capital = mapped(proj(["string"], field="enumField", enum=["x"]))
    assert capital.ddl == '"public"."orders_enumField_flow_enum"'
    assert mapped(proj(["string", "integer"], enum=["a", 1])).ddl == "JSON"  # not string-only
    assert mapped(proj(["string"], enum=[])).ddl == "TEXT"


def test_enum_schema_for_one_part_path() -> None:
    ctype = map_projection(
        proj(["string"], field="s", enum=["a"]), is_key=False, field_config=None, flags={}, table_path=["orders"]
    )
    assert ctype.ddl == '"public".orders_s_flow_enum'


@pytest.mark.parametrize(
    ("table", "field", "expected"),
    [
        ("orders", "status", "orders_status_flow_enum"),
        ("mytable", "col", "mytable_col_flow_enum"),
        # The Go connector's own regression vector: a long table and a field starting with "_".
        (
            "somelongtenant_baaaaaaaaaaaaaaaaaaaaaaaaaaaadocuments",
            "_meta/op",
            "somelongtenant_baaaaaaaaaaaaaaaaaaaaaaaaaa___33e4d166_flow_enum",
        ),
    ],
)
def test_enum_type_name(table: str, field: str, expected: str) -> None:
    assert enum_type_name(table, field) == expected


@pytest.mark.parametrize(("table", "field"), [("orders", "x" * 60), ("a" * 60, "status"), ("é" * 40, "ü" * 40)])
def test_hashed_enum_names_fit_63_bytes(table: str, field: str) -> None:
    name = enum_type_name(table, field)
    assert len(name.encode()) <= 63
    assert name.endswith("_flow_enum")
    assert enum_type_name(table, field) == name  # stable
    assert enum_type_name(table, field + "2") != name


def test_field_config() -> None:
    number = proj(["number"])
    assert mapped(number, config={"castToString": True}).ddl == "TEXT"
    assert mapped(number, config={"ignoreStringFormat": True}).ddl == "TEXT"
    assert mapped(proj(["string"], **fmt("date")), config={"castToString": True}).ddl == "TEXT"
    user = mapped(proj(["integer"]), config={"DDL": "DECIMAL(20)"})
    assert (user.ddl, user.user_ddl) == ("DECIMAL(20)", True)
    assert user.is_compatible("anything at all")
    both = mapped(number, config={"DDL": "VARCHAR(30)", "castToString": True})
    assert (both.ddl, both.convert(2.5)) == ("VARCHAR(30)", "2.5")


def test_cast_to_string_keeps_enum_like_the_go_connector() -> None:
    ctype = mapped(proj(["string"], field="status", enum=["a"]), config={"castToString": True})
    assert ctype.enum_type == '"public".orders_status_flow_enum'
    assert ctype.convert("a") == "a"


# --------------------------------------------------------------------------------------------
# Compatibility with existing columns.


@pytest.mark.parametrize(
    ("types", "inference", "data_type", "compatible"),
    [
        (["integer"], {}, "bigint", True),
        (["integer"], {}, "integer", True),
        (["integer"], {}, "numeric", False),
        (["integer"], BIG_MAX, "numeric", True),
        (["number"], {}, "double precision", True),
        (["string"], {}, "text", True),
        (["string"], {}, "character varying", True),
        (["string"], {}, "uuid", False),
        (["string"], fmt("uuid"), "text", True),
        (["string"], fmt("uuid"), "uuid", True),
        (["string"], fmt("date-time"), "timestamp with time zone", True),
        (["string"], fmt("date-time"), "text", False),
        (["string"], fmt("time"), "time without time zone", True),
        (["string"], fmt("date"), "date", True),
        (["string"], fmt("duration"), "interval", True),
        (["string"], fmt("ipv4"), "cidr", True),
        (["number", "string"], fmt("number"), "numeric", True),
        (["boolean"], {}, "BOOLEAN", True),  # information_schema case does not matter
        (["boolean"], {}, "bigint", False),
        (["object"], {}, "json", True),
        (["object"], {}, "jsonb", False),
    ],
)
def test_is_compatible(types: list[str], inference: dict[str, Any], data_type: str, compatible: bool) -> None:
    assert mapped(proj(types, **inference)).is_compatible(data_type) is compatible


def test_enum_compatibility() -> None:
    ctype = mapped(proj(["string"], field="status", enum=["a"]))
    assert ctype.is_compatible("USER-DEFINED", "orders_status_flow_enum")
    assert ctype.is_compatible("USER-DEFINED", "orders_STATUS_flow_enum")
    assert not ctype.is_compatible("USER-DEFINED", "my_custom_enum")
    assert not ctype.is_compatible("text", "orders_status_flow_enum")


def test_describe_types() -> None:
    assert describe_types(proj(["integer"])) == "{ type: [integer] }"
    p = proj(
        ["string", "null"],
        string={"format": "date", "contentType": "text/plain", "contentEncoding": "x", "maxLength": 5},
    )
    assert (
        describe_types(p) == "{ type: [string, null], format: date, content-type: text/plain, content-encoding: x, "
        "maxLength: 5 }"
    )


# --------------------------------------------------------------------------------------------
# Converters.


def convert(types: list[str], value: Any, **inference: Any) -> Any:
    return mapped(proj(types, **inference)).convert(value)


def test_integer_and_number_converters() -> None:
    assert convert(["integer"], 2**63 - 1) == 2**63 - 1
    with pytest.raises(ValueError_, match="BIGINT"):
        convert(["integer"], 2**63)
    assert convert(["integer"], 2**70, **BIG_MAX) == 2**70
    assert convert(["number"], 3) == 3.0
    assert str(convert(["number"], "NaN")) == "nan"
    assert convert(["number"], "-Infinity") == float("-inf")
    with pytest.raises(ValueError_):
        convert(["number"], True)
    assert convert(["integer", "string"], "123456789012345678901234567890", **fmt("integer")) == Decimal(
        "123456789012345678901234567890"
    )
    assert convert(["number", "string"], "1.5e3", **fmt("number")) == Decimal("1.5e3")


def test_text_converter_strips_nul() -> None:
    assert convert(["string"], "a\x00b\x00") == "ab"
    key = map_projection(proj(["string"], key=True), is_key=True, field_config=None, flags={}, table_path=PATH)
    assert key.convert("k\x00") == "k"


def test_json_converters() -> None:
    assert convert(["object"], b'{"a":1}') == b'{"a":1}'
    assert convert(["boolean", "integer", "object"], 5) == b"5"
    assert convert(["boolean", "integer", "object"], "x") == b'"x"'
    assert convert(["object"], b"{}", contentMediaType=JSONB_MEDIA_TYPE) == b"\x01{}"


def test_binary_converter() -> None:
    assert convert(["string"], "aGVsbG8=", string={"contentEncoding": "base64"}) == b"hello"
    with pytest.raises(ValueError_, match="base64"):
        convert(["string"], "not base64!", string={"contentEncoding": "base64"})


def test_date_converter() -> None:
    assert convert(["string"], "2024-02-29", **fmt("date")) == dt.date(2024, 2, 29)
    assert convert(["string"], "0000-01-01", **fmt("date")) == dt.date(1, 1, 1)
    for bad in ("2024-13-01", "2024-01-01T00:00:00Z", "2024-01-01 junk", "20240101", "2024-1-01"):
        with pytest.raises(ValueError_, match="is not a date"):
            convert(["string"], bad, **fmt("date"))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2023-01-15T10:30:45Z", dt.datetime(2023, 1, 15, 10, 30, 45, tzinfo=dt.UTC)),
        ("2023-01-15T10:30:45z", dt.datetime(2023, 1, 15, 10, 30, 45, tzinfo=dt.UTC)),
        ("2023-01-15 10:30:45Z", dt.datetime(2023, 1, 15, 10, 30, 45, tzinfo=dt.UTC)),
        ("2023-01-15T12:30:45+02:00", dt.datetime(2023, 1, 15, 10, 30, 45, tzinfo=dt.UTC)),
        ("2023-01-15T10:30:45.1234567Z", dt.datetime(2023, 1, 15, 10, 30, 45, 123457, tzinfo=dt.UTC)),
        ("0000-01-01T00:00:00Z", dt.datetime(1, 1, 1, tzinfo=dt.UTC)),
    ],
)
def test_timestamp_converter(text: str, expected: dt.datetime) -> None:
    assert convert(["string"], text, **fmt("date-time")) == expected


def test_timestamp_converter_rejects_garbage() -> None:
    with pytest.raises(ValueError_, match="RFC 3339"):
        convert(["string"], "yesterday", **fmt("date-time"))


def test_time_duration_network_uuid_converters() -> None:
    assert convert(["string"], "01:02:03.5Z", **fmt("time")) == dt.time(1, 2, 3, 500000)
    # months, days, microseconds as PostgreSQL's binary interval
    assert convert(["string"], "P1Y2M3DT4H", **fmt("duration")) == (
        (4 * 3600 * 1_000_000).to_bytes(8, "big") + (3).to_bytes(4, "big") + (14).to_bytes(4, "big")
    )
    with pytest.raises(ValueError_, match="ISO 8601"):
        convert(["string"], "P", **fmt("duration"))
    assert convert(["string"], "10.0.0.0/8", **fmt("ipv4")) == ipaddress.ip_network("10.0.0.0/8")
    assert convert(["string"], "08-00-2b-01-02-03", **fmt("macaddr")) == bytes.fromhex("08002b010203")
    assert convert(["string"], "08:00:2b:01:02:03", **fmt("macaddr8")) == bytes.fromhex("08002bfffe010203")
    assert convert(["string"], "A0EEBC99-9C0B-4EF8-BB6D-6BB9BD380A11", **fmt("uuid")) == uuid.UUID(
        "a0eebc99-9c0b-4ef8-bb6d-6bb9bd380a11"
    )


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (1e20, "100000000000000000000"),
        (1.5, "1.5"),
        (1.0, "1"),
        (1e-7, "0.0000001"),
        (-2.5, "-2.5"),
        (12, "12"),
        (2**70, str(2**70)),
        (True, "true"),
        (False, "false"),
        ("s\x00", "s"),
        (b'{"a": 1}', '{"a": 1}'),
    ],
)
def test_cast_to_string_converter(value: Any, text: str) -> None:
    assert mapped(proj(["number"]), config={"castToString": True}).convert(value) == text


# --------------------------------------------------------------------------------------------
# Writing into existing columns.


def test_writer_for_own_column() -> None:
    ctype = mapped(proj(["integer"]))
    assert writer_for(ctype, None) == ("int8", ctype.convert)


@pytest.mark.parametrize(
    ("data_type", "wire"),
    [
        ("integer", "int4"),
        ("smallint", "int2"),
        ("numeric", "numeric"),
        ("text", "text"),
        ("character varying", "text"),
        ("USER-DEFINED", "text"),
        ("double precision", "float8"),
    ],
)
def test_writer_for_existing_column(data_type: str, wire: str) -> None:
    assert writer_for(mapped(proj(["integer"])), data_type)[0] == wire


def test_writer_for_text_column_of_other_type_writes_its_string_form() -> None:
    _, conv = writer_for(mapped(proj(["number"])), "text")
    assert conv(1e20) == "100000000000000000000"
    _, conv = writer_for(mapped(proj(["string"])), "text")
    assert conv("a\x00") == "a"


# --------------------------------------------------------------------------------------------
# In-place migrations of existing columns (the Go connector's MigratableTypes).


TS_TO_TEXT = """to_char(c AT TIME ZONE 'UTC', 'YYYY-MM-DD"T"HH24:MI:SS.US"Z"')"""


@pytest.mark.parametrize(
    ("data_type", "types", "inference", "cast"),
    [
        ("bigint", ["number"], {}, "CAST(c AS DOUBLE PRECISION)"),
        ("bigint", ["integer"], BIG_MAX, "CAST(c AS NUMERIC)"),
        ("bigint", ["string"], {}, "CAST(c AS TEXT)"),
        ("numeric", ["number"], {}, "CAST(c AS DOUBLE PRECISION)"),
        ("double precision", ["string"], {}, "CAST(c AS TEXT)"),
        ("date", ["string"], {}, "CAST(c AS TEXT)"),
        ("time without time zone", ["string"], {}, "CAST(c AS TEXT)"),
        ("timestamp with time zone", ["string"], {}, TS_TO_TEXT),
        ("text", ["string"], {"string": {"contentEncoding": "base64"}}, "decode(c, 'base64')"),
        ("bytea", ["string"], {}, "translate(encode(c, 'base64'), E'\\n', '')"),
        ("json", ["object"], {"contentMediaType": JSONB_MEDIA_TYPE}, "CAST(c AS JSONB)"),
        ("jsonb", ["object"], {}, "CAST(c AS JSON)"),  # the type's own rule before the catch-all
        ("boolean", ["boolean", "string"], {}, "to_json(c)"),
        ("USER-DEFINED", ["string"], {}, "c::text"),
        ("text", ["string"], {"enum": ["a"]}, 'c::"public".orders_f_flow_enum'),
        ("boolean", ["integer"], {}, None),
        ("interval", ["string"], {}, None),
        ("cidr", ["string"], {}, None),
        ("uuid", ["string"], {}, None),
        ("text", ["integer"], {}, None),
        ("double precision", ["boolean"], {}, None),
    ],
)
def test_migration_cast(data_type: str, types: list[str], inference: dict[str, Any], cast: str | None) -> None:
    existing = ExistingColumn("c", data_type, "", True, 0)
    assert migration_cast(existing, mapped(proj(types, **inference)), "c") == cast
