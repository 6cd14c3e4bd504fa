"""Validate and Apply fail with errors that say what to fix, and never leak the password."""

from __future__ import annotations

import socket
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from materialize_postgres import connect as connect_mod
from materialize_postgres.driver import do_apply, do_validate
from materialize_postgres.protocol.messages import Apply, Validate, ValidateBinding
from tests.specs import binding, materialization, simple_collection

SECRET = "s3cr3t-Pa55word"


def validate_request(endpoint: dict[str, Any]) -> Validate:
    spec = materialization(endpoint, binding("things", simple_collection()))
    b = spec.bindings[0]
    return Validate(
        name=spec.name,
        connector_type="IMAGE",
        config=spec.config,
        bindings=[ValidateBinding(resource_config=b.resource_config, collection=b.collection)],
    )


def failure(fn: Any, req: Any) -> str:
    with pytest.raises(Exception) as err:
        fn(req)
    message = str(err.value)
    assert SECRET not in message
    return message


def test_an_unknown_database_is_named(pg_database: Any) -> None:
    msg = failure(do_validate, validate_request(pg_database.endpoint_config(database="no_such_db", password=SECRET)))
    assert "database 'no_such_db' does not exist" in msg


def test_nothing_listening_is_a_refused_connection(pg_database: Any) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    msg = failure(
        do_validate, validate_request(pg_database.endpoint_config(address=f"127.0.0.1:{port}", password=SECRET))
    )
    assert "refused" in msg and str(port) in msg


@pytest.fixture
def silent_port() -> Iterator[int]:
    """A port that accepts TCP connections and then never says a word."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen(8)
        yield s.getsockname()[1]


def test_a_host_that_does_not_answer_times_out(
    pg_database: Any, silent_port: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(connect_mod, "CONNECT_TIMEOUT_S", 2)
    endpoint = pg_database.endpoint_config(address=f"127.0.0.1:{silent_port}", password=SECRET)
    msg = failure(do_validate, validate_request(endpoint))
    assert "timed out" in msg and str(silent_port) in msg


@pytest.fixture
def limited_role(pg_database: Any) -> Iterator[str]:
    """A role that may connect but not create anything in schema public."""
    role = f"limited_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
        conn.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{SECRET}'")
        conn.execute(f"REVOKE CREATE ON SCHEMA public FROM PUBLIC, {role}")
        conn.execute(f"REVOKE CREATE ON DATABASE {pg_database.dbname} FROM PUBLIC, {role}")
    try:
        yield role
    finally:
        with psycopg.connect(pg_database.dsn, autocommit=True) as conn:
            conn.execute(f"DROP OWNED BY {role}")
            conn.execute(f"DROP ROLE {role}")


def test_permission_denied_on_the_schema_names_it(pg_database: Any, limited_role: str) -> None:
    endpoint = pg_database.endpoint_config(user=limited_role, password=SECRET)
    spec = materialization(endpoint, binding("things", simple_collection()))
    msg = failure(do_apply, Apply(materialization=spec, version="test"))
    assert "permission denied" in msg.lower()
    assert "public" in msg, msg
