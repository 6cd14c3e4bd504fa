"""Every sslmode against a real TLS server with its own CA, and the errors a user sees when TLS
cannot be set up: an untrusted certificate, a host name the certificate does not name, a server
without TLS, and a wrong password (which must never be echoed back)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest

from materialize_postgres.config import EndpointConfig, parse_endpoint
from materialize_postgres.connect import ConnectError, connect, endpoint, explain
from tests.tls_server import PASSWORD, PASSWORD_ROLE, TLS_ONLY_ROLE, Cluster, ca_pem, make_ca, running_cluster


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    """PGSSLMODE, PGSSLROOTCERT, PGPASSWORD and friends would silently change what libpq does."""
    for name in list(os.environ):
        if name.startswith("PG") or name in ("SSL_CERT_FILE", "SSL_CERT_DIR"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def tls_server() -> Iterator[Cluster]:
    with running_cluster(tls=True) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def plain_server() -> Iterator[Cluster]:
    with running_cluster(tls=False) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def other_ca() -> str:
    return ca_pem(make_ca("some other CA")[1])


@pytest.fixture(scope="module")
def impostor_ca() -> str:
    """Same name as the server's CA, different key: OpenSSL finds it and the signature check fails."""
    return ca_pem(make_ca()[1])


def config(
    server: Cluster,
    sslmode: str | None,
    *,
    host: str = "localhost",
    rootcert: str | None = None,
    user: str = "postgres",
    password: str = "unused-with-trust-auth",
) -> EndpointConfig:
    advanced: dict[str, Any] = {}
    if sslmode:
        advanced["sslmode"] = sslmode
    if rootcert:
        advanced["sslrootcert"] = rootcert
    return parse_endpoint(
        {
            "address": server.address(host),
            "user": user,
            "database": "postgres",
            "credentials": {"auth_type": "UserPassword", "password": password},
            "advanced": advanced,
        }
    )


def uses_tls(cfg: EndpointConfig) -> bool:
    """Connect, run a query, and say whether the connection is encrypted."""
    with endpoint(cfg) as target, connect(cfg, target, application="test-tls") as conn:
        row = conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone()
        assert row is not None
        assert row[0] == conn.pgconn.ssl_in_use
        return bool(row[0])


def connect_error(cfg: EndpointConfig) -> str:
    with pytest.raises(ConnectError) as info:
        uses_tls(cfg)
    return str(info.value)


@pytest.mark.parametrize(
    ("sslmode", "encrypted"),
    [
        pytest.param("disable", False, id="disable"),
        pytest.param("allow", False, id="allow"),  # tries plain first, and the server accepts it
        pytest.param("prefer", True, id="prefer"),
        pytest.param("require", True, id="require"),
        pytest.param(None, True, id="unset-is-libpq-prefer"),
    ],
)
def test_sslmodes_without_verification(tls_server: Cluster, sslmode: str | None, encrypted: bool) -> None:
    assert uses_tls(config(tls_server, sslmode)) is encrypted


@pytest.mark.parametrize("sslmode", ["verify-ca", "verify-full"])
def test_verify_modes_trust_the_configured_ca(tls_server: Cluster, sslmode: str) -> None:
    assert uses_tls(config(tls_server, sslmode, rootcert=tls_server.ca_pem))


@pytest.mark.parametrize("sslmode", ["verify-ca", "verify-full"])
@pytest.mark.parametrize("which", ["other_ca", "impostor_ca"])
def test_verify_modes_reject_a_certificate_from_another_ca(
    tls_server: Cluster, sslmode: str, which: str, request: pytest.FixtureRequest
) -> None:
    wrong_ca = request.getfixturevalue(which)
    message = connect_error(config(tls_server, sslmode, rootcert=wrong_ca))
    assert f"the TLS certificate of localhost:{tls_server.port} is not trusted by advanced.sslrootcert" in message


@pytest.mark.parametrize("sslmode", ["verify-ca", "verify-full"])
def test_verify_modes_without_sslrootcert_use_the_system_store(tls_server: Cluster, sslmode: str) -> None:
    message = connect_error(config(tls_server, sslmode))
    assert "is not trusted by the system trust store" in message


def test_system_store_honours_ssl_cert_file(
    tls_server: Cluster, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert tls_server.ca_pem is not None
    bundle = tmp_path / "bundle.pem"
    bundle.write_text(tls_server.ca_pem)
    monkeypatch.setenv("SSL_CERT_FILE", str(bundle))
    assert uses_tls(config(tls_server, "verify-full"))


def test_verify_full_rejects_an_address_the_certificate_does_not_name(tls_server: Cluster) -> None:
    message = connect_error(config(tls_server, "verify-full", host="127.0.0.1", rootcert=tls_server.ca_pem))
    assert f"the TLS certificate of 127.0.0.1:{tls_server.port} does not match its host name" in message
    assert '"127.0.0.1"' in message


def test_verify_ca_does_not_check_the_host_name(tls_server: Cluster) -> None:
    assert uses_tls(config(tls_server, "verify-ca", host="127.0.0.1", rootcert=tls_server.ca_pem))


@pytest.mark.parametrize("sslmode", ["require", "verify-ca", "verify-full"])
def test_tls_modes_fail_against_a_server_without_tls(plain_server: Cluster, tls_server: Cluster, sslmode: str) -> None:
    message = connect_error(config(plain_server, sslmode, rootcert=tls_server.ca_pem))
    assert f"the server at localhost:{plain_server.port} does not support TLS" in message
    assert repr(sslmode) in message


@pytest.mark.parametrize("sslmode", ["disable", "allow", "prefer"])
def test_lenient_modes_connect_to_a_server_without_tls(plain_server: Cluster, sslmode: str) -> None:
    assert not uses_tls(config(plain_server, sslmode))


def test_a_server_that_refuses_plain_connections_asks_for_tls(tls_server: Cluster) -> None:
    message = connect_error(config(tls_server, "disable", user=TLS_ONLY_ROLE))
    assert message == (
        f"the server at localhost:{tls_server.port} requires TLS: set advanced.sslmode to require (or verify-full)"
    )


@pytest.mark.parametrize("sslmode", ["prefer", "require"])
def test_a_server_that_refuses_plain_connections_accepts_tls(tls_server: Cluster, sslmode: str) -> None:
    assert uses_tls(config(tls_server, sslmode, user=TLS_ONLY_ROLE))


@pytest.mark.parametrize("sslmode", ["disable", "verify-full"])
def test_password_role_connects_with_its_password(tls_server: Cluster, sslmode: str) -> None:
    cfg = config(tls_server, sslmode, rootcert=tls_server.ca_pem, user=PASSWORD_ROLE, password=PASSWORD)
    assert uses_tls(cfg) is (sslmode != "disable")


@pytest.mark.parametrize("sslmode", ["disable", "require"])
def test_wrong_password_is_reported_and_never_echoed(tls_server: Cluster, sslmode: str) -> None:
    wrong = "Wr0ng-" + PASSWORD
    with pytest.raises(ConnectError) as info:
        uses_tls(config(tls_server, sslmode, user=PASSWORD_ROLE, password=wrong))
    err = info.value
    assert str(err) == f"incorrect username or password for user {PASSWORD_ROLE!r} at localhost:{tls_server.port}"
    assert err.__cause__ is None
    for text in (str(err), repr(err), str(err.__context__), repr(err.__context__)):
        assert wrong not in text
        assert PASSWORD not in text


def test_a_tls_failure_wins_over_a_refused_address_tried_before_it() -> None:
    """libpq tries every address of a name (::1, then 127.0.0.1) and reports each attempt."""
    err = psycopg.OperationalError(
        'connection failed: connection to server at "::1", port 5432 failed: Connection refused\n'
        "\tIs the server running on that host and accepting TCP/IP connections?\n"
        'connection to server at "127.0.0.1", port 5432 failed: SSL error: certificate verify failed'
    )
    cfg = parse_endpoint({"address": "localhost", "user": "flow", "credentials": {"password": "pw-123"}})
    assert explain(err, cfg) == (
        "the TLS certificate of localhost is not trusted by the system trust store (SSL error: certificate verify "
        "failed): set advanced.sslrootcert to the PEM of the CA that signed it, or use sslmode require"
    )
