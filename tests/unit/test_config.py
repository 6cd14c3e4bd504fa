"""Endpoint and resource configs: what Spec advertises, and what parsing accepts or refuses."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from materialize_postgres import config as cfg
from materialize_postgres.config import ConfigError, parse_endpoint, parse_resource
from materialize_postgres.connect import Target, connection_kwargs
from tests.shared_data import estuary_json

BASE = {
    "address": "db.example.com",
    "user": "flow",
    "credentials": {"auth_type": "UserPassword", "password": "s3cr3t!"},
}


def endpoint(**over: Any) -> dict[str, Any]:
    return {**BASE, **over}


def strip_prose(schema: Any) -> Any:
    """The schema without titles' and descriptions' wording, which is ours to write."""
    if isinstance(schema, dict):
        return {k: strip_prose(v) for k, v in schema.items() if k not in ("description", "title")}
    if isinstance(schema, list):
        return [strip_prose(v) for v in schema]
    return schema


def test_spec_schemas_match_the_go_connector_except_for_wording() -> None:
    expected = estuary_json("spec/expected.json")
    ours_endpoint = cfg.endpoint_schema()
    theirs = expected["config_schema_json"]
    # One additive, optional field: a CA certificate for verify-ca / verify-full.
    ours_advanced = dict(ours_endpoint["properties"]["advanced"]["properties"])
    assert ours_advanced.pop("sslrootcert")["type"] == "string"
    ours_endpoint["properties"]["advanced"]["properties"] = ours_advanced
    assert strip_prose(ours_endpoint) == strip_prose(theirs)
    assert strip_prose(cfg.resource_schema()) == strip_prose(expected["resource_config_schema_json"])
    assert expected["documentation_url"] == cfg.DOCS_URL


def test_spec_titles_are_present_where_the_go_connector_has_them() -> None:
    expected = estuary_json("spec/expected.json")["config_schema_json"]
    ours = cfg.endpoint_schema()
    for name, prop in expected["properties"].items():
        assert ("title" in prop) == ("title" in ours["properties"][name]), name


def test_minimal_config_and_defaults() -> None:
    c = parse_endpoint(endpoint())
    assert c.host_port() == ("db.example.com", 5432)
    assert c.schema_name == "public"
    assert not c.hardDelete
    assert c.feature_flags()["datetime_keys_as_string"] is True
    assert c.feature_flags()["allow_existing_tables_for_new_bindings"] is False


def test_legacy_top_level_password_is_accepted() -> None:
    c = parse_endpoint({"address": "h:6543", "user": "u", "password": "pw"})
    assert c.password_value() == "pw"
    assert c.host_port() == ("h", 6543)


def test_credentials_without_auth_type_default_to_password() -> None:
    c = parse_endpoint({"address": "h", "user": "u", "credentials": {"password": "pw"}})
    assert c.password_value() == "pw"


@pytest.mark.parametrize(
    ("data", "message"),
    [
        ({"user": "u", "password": "p"}, "missing 'address'"),
        ({"address": "h", "password": "p"}, "missing 'user'"),
        ({"address": "h", "user": "u"}, "missing 'password'"),
        ({**BASE, "adress": "typo"}, "unknown field 'adress'"),
        ({**BASE, "advanced": {"sslmode": "whoops"}}, "unknown setting 'whoops'; use one of disable, allow"),
        ({**BASE, "address": "h:notaport"}, "invalid 'address'"),
        ({**BASE, "hardDelete": "yes please"}, "'hardDelete'"),
        ({**BASE, "credentials": {"auth_type": "Kerberos"}}, "auth_type"),
        ({**BASE, "credentials": {"auth_type": "AWSIAM", "aws_region": "us-east-1"}}, "aws_role_arn"),
        ({**BASE, "address": "aws-0-us-east-1.pooler.supabase.com:6543"}, "Supabase connection pooler"),
    ],
)
def test_bad_configs_name_the_field(data: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_endpoint(data)
    assert message in str(err.value)
    assert "s3cr3t!" not in str(err.value)


def test_secrets_never_show_in_repr() -> None:
    c = parse_endpoint(endpoint(networkTunnel={"sshForwarding": {"sshEndpoint": "ssh://a@b", "privateKey": "KEYDATA"}}))
    assert "s3cr3t!" not in repr(c) and "KEYDATA" not in repr(c)
    assert "s3cr3t!" not in str(c.model_dump())


def test_connection_parameters() -> None:
    c = parse_endpoint(endpoint(database="somedb", advanced={"sslmode": "verify-full"}))
    kw = connection_kwargs(c, Target("db.example.com", 5432), application="test")
    assert kw["dbname"] == "somedb" and kw["sslmode"] == "verify-full" and Path(kw["sslrootcert"]).is_file()
    assert (kw["keepalives_idle"], kw["keepalives_interval"], kw["keepalives_count"]) == (120, 30, 6)
    assert kw["password"] == "s3cr3t!"


def test_resource_config() -> None:
    r = parse_resource({"table": "Orders", "schema": "sales", "delta_updates": True})
    assert r.path("public") == ["sales", "Orders"] and r.delta_updates
    assert parse_resource({"table": "t"}).path("other") == ["other", "t"]
    with pytest.raises(ConfigError, match="missing 'table'"):
        parse_resource({"schema": "x"})
    with pytest.raises(ConfigError, match="unknown field 'tabel'"):
        parse_resource({"table": "t", "tabel": "x"})


def test_feature_flags_turn_on_and_off() -> None:
    flags = cfg.parse_feature_flags("no_enum, allow_existing_tables_for_new_bindings ,,")
    assert flags["enum"] is False and flags["allow_existing_tables_for_new_bindings"] is True


def test_schema_is_valid_json() -> None:
    json.dumps(cfg.endpoint_schema())
