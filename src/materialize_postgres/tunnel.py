"""SSH tunnel to a database behind a bastion host, with paramiko, for `connect.endpoint()`.

`open_tunnel()` logs in to the bastion named by `networkTunnel.sshForwarding.sshEndpoint` with
the configured private key, listens on a free loopback port, and forwards every connection made
to that port through a `direct-tcpip` channel to the database's host and port. Connection
options (TLS, credentials) stay with `connect.py`; this module only moves bytes.

Host keys are not verified. Flow's endpoint config has no field for a known host key (the Go
connector's tunnel accepts any key too), so there is nothing to check the bastion against. The
risk: someone who can intercept the route to the bastion could impersonate it and see the
database traffic, which is why `verify-full` TLS to the database is still worth turning on. The
bastion's key fingerprint is logged at info level, so a change of key can be noticed.

The private key is a secret: it is never part of an error message or a log line.
"""

from __future__ import annotations

import contextlib
import io
import logging
import select
import socket
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import paramiko
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import serialization

from .config import SSHForwarding
from .connect import ConnectError

log = logging.getLogger(__name__)

# Same budget as a direct database connection (connect.CONNECT_TIMEOUT_S).
SSH_TIMEOUT_S = 20
DEFAULT_SSH_PORT = 22
# How often idle threads look at the stop flag; bounds how long closing the tunnel takes.
POLL_S = 0.2
CHUNK_BYTES = 64 * 1024
# SSH keepalives keep idle tunnels through NAT and firewalls alive.
KEEPALIVE_S = 30
# RFC 4254 §5.1 reason codes for a refused channel.
CHANNEL_FAILURES = {
    1: "the bastion does not allow TCP forwarding (set AllowTcpForwarding yes in its sshd_config)",
    2: "the bastion could not connect to it (is the address right as seen from the bastion, and is "
    "PostgreSQL listening there?)",
}
KEY_CLASSES: tuple[type[paramiko.PKey], ...] = (paramiko.Ed25519Key, paramiko.ECDSAKey, paramiko.RSAKey)


class TunnelError(ConnectError):
    """The SSH tunnel could not be set up; the message names the failing step and never the key."""


@dataclass(frozen=True)
class SSHEndpoint:
    user: str
    host: str
    port: int

    def address(self) -> str:
        return f"{self.host}:{self.port}"


def parse_ssh_endpoint(url: str) -> SSHEndpoint:
    """`ssh://user@host[:port]`; the port defaults to 22."""
    parts = urlsplit(url.strip())
    try:
        port = parts.port or DEFAULT_SSH_PORT
    except ValueError:
        port = 0
    if parts.scheme != "ssh" or not parts.username or not parts.hostname or not port:
        raise TunnelError(f"invalid 'sshEndpoint' {url!r}: expected ssh://user@hostname[:port]")
    return SSHEndpoint(unquote(parts.username), parts.hostname, port)


def load_private_key(text: str) -> paramiko.PKey:
    """An unencrypted RSA, ed25519 or ECDSA key in PEM (PKCS#1, SEC1, PKCS#8) or OpenSSH format."""
    pem = text.strip().replace("\r\n", "\n") + "\n"
    key = _paramiko_key(pem) or _paramiko_key(_pkcs8_to_openssh(pem))
    if key is None:
        raise TunnelError(
            "reading the SSH private key failed: it is not an unencrypted RSA, ed25519 or ECDSA private key "
            "in PEM or OpenSSH format (it should begin with '-----BEGIN ... PRIVATE KEY-----')"
        )
    return key


def _paramiko_key(pem: str) -> paramiko.PKey | None:
    for cls in KEY_CLASSES:
        try:
            return cls.from_private_key(io.StringIO(pem))
        except paramiko.PasswordRequiredException:
            raise TunnelError(
                "reading the SSH private key failed: it is encrypted with a passphrase; "
                "remove it with `ssh-keygen -p -N '' -f <key file>`"
            ) from None
        except (paramiko.SSHException, ValueError, IndexError, TypeError):
            continue
    return None


def _pkcs8_to_openssh(pem: str) -> str:
    """Paramiko reads no PKCS#8 ('BEGIN PRIVATE KEY'); re-encode such a key as OpenSSH."""
    if "-----BEGIN PRIVATE KEY-----" not in pem:
        return ""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
        return key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH, serialization.NoEncryption()
        ).decode()
    except (ValueError, TypeError, UnsupportedAlgorithm):
        return ""


def _login(ssh: SSHEndpoint, key: paramiko.PKey) -> paramiko.Transport:
    transport = _handshake(ssh)
    try:
        transport.auth_publickey(ssh.user, key)
    except paramiko.AuthenticationException:
        _close(transport)
        raise TunnelError(
            f"SSH authentication as {ssh.user} failed: the bastion did not accept the private key "
            f"(is its public key in ~{ssh.user}/.ssh/authorized_keys on the bastion?)"
        ) from None
    except (paramiko.SSHException, OSError, EOFError) as err:
        _close(transport)
        raise TunnelError(f"SSH authentication as {ssh.user} failed: {_reason(err)}") from None
    transport.set_keepalive(KEEPALIVE_S)
    return transport


def _handshake(ssh: SSHEndpoint) -> paramiko.Transport:
    """TCP connection and SSH key exchange with the bastion; logs its host key fingerprint."""
    failed = f"SSH connect to bastion {ssh.address()} failed"
    try:
        sock = socket.create_connection((ssh.host, ssh.port), timeout=SSH_TIMEOUT_S)
    except OSError as err:
        raise TunnelError(f"{failed}: {_reason(err)}") from None
    transport = paramiko.Transport(sock)
    try:
        transport.start_client(timeout=SSH_TIMEOUT_S)
    except (paramiko.SSHException, OSError, EOFError) as err:
        _close(transport)
        raise TunnelError(f"{failed}: {_reason(err)} (is it an SSH server?)") from None
    host_key = transport.get_remote_server_key()
    fingerprint = f"{host_key.get_name()} {host_key.fingerprint}"
    log.info(
        f"SSH bastion {ssh.address()} host key is {fingerprint} (accepted without verification)",
        extra={"fields": {"bastion": ssh.address(), "host_key": fingerprint}},
    )
    return transport


def _close(transport: paramiko.Transport) -> None:
    """Close, and wait for paramiko's reader thread: its close() only waits while the socket is open."""
    transport.close()
    if transport.is_alive():
        transport.join(timeout=5)


def _open_channel(transport: paramiko.Transport, host: str, port: int, origin: tuple[str, int]) -> paramiko.Channel:
    try:
        return transport.open_channel("direct-tcpip", (host, port), origin, timeout=SSH_TIMEOUT_S)
    except (paramiko.SSHException, OSError, EOFError) as err:
        failed = f"forwarding to the database at {host}:{port} through the bastion failed"
        raise TunnelError(f"{failed}: {_reason(err)}") from None


def _reason(err: BaseException) -> str:
    if isinstance(err, paramiko.ChannelException):
        # Paramiko keeps the reason code, not the server's text (e.g. "Connection refused").
        return CHANNEL_FAILURES.get(err.code, err.text or f"the bastion refused the channel (code {err.code})")
    if isinstance(err, TimeoutError):
        return "timed out"
    return str(err) or type(err).__name__


class _Forwarder:
    """Accepts local connections and pumps each through its own SSH channel, one thread apiece."""

    def __init__(self, transport: paramiko.Transport, host: str, port: int) -> None:
        self.transport, self.host, self.port = transport, host, port
        self.stop = threading.Event()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.listener.settimeout(POLL_S)
        self.threads: list[threading.Thread] = []
        self._spawn(self._accept_loop, "ssh-tunnel-accept")

    @property
    def address(self) -> tuple[str, int]:
        host, port = self.listener.getsockname()[:2]
        return host, port

    def _spawn(self, target: Callable[..., None], name: str, *args: object) -> None:
        thread = threading.Thread(target=target, args=args, name=name, daemon=True)
        self.threads = [t for t in self.threads if t.is_alive()]
        self.threads.append(thread)
        thread.start()

    def _accept_loop(self) -> None:
        while not self.stop.is_set():
            try:
                conn, peer = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._spawn(self._serve, f"ssh-tunnel-{peer[1]}", conn, peer)

    def _serve(self, conn: socket.socket, peer: tuple[str, int]) -> None:
        with contextlib.closing(conn):
            try:
                chan = _open_channel(self.transport, self.host, self.port, peer[:2])
            except TunnelError as err:
                log.error(str(err))
                return
            with contextlib.closing(chan):
                self._pump(conn, chan)

    def _pump(self, conn: socket.socket, chan: paramiko.Channel) -> None:
        conn.setblocking(True)
        while not self.stop.is_set():
            ready, _, _ = select.select([conn, chan], [], [], POLL_S)
            if conn in ready and not _copy(conn.recv, chan.sendall):
                return
            if chan in ready and not _copy(chan.recv, conn.sendall):
                return

    def close(self) -> None:
        self.stop.set()
        self.listener.close()
        for thread in self.threads:
            thread.join(timeout=5)


def _copy(recv: Callable[[int], bytes], send: Callable[[bytes], object]) -> bool:
    try:
        data = recv(CHUNK_BYTES)
        if not data:
            return False
        send(data)
    except OSError:
        return False
    return True


@contextlib.contextmanager
def open_tunnel(ssh: SSHForwarding, host: str, port: int) -> Iterator[tuple[str, int]]:
    """Yield a loopback (host, port) that reaches `host:port` through the bastion; close all on exit."""
    bastion = parse_ssh_endpoint(ssh.sshEndpoint)
    key = load_private_key(ssh.privateKey.get_secret_value())
    transport = _login(bastion, key)
    forwarder: _Forwarder | None = None
    try:
        # Open one channel up front, so an unreachable database is reported here, by step.
        _open_channel(transport, host, port, ("127.0.0.1", 0)).close()
        forwarder = _Forwarder(transport, host, port)
        log.info(
            "SSH tunnel open",
            extra={"fields": {"bastion": bastion.address(), "database": f"{host}:{port}", "local": forwarder.address}},
        )
        yield forwarder.address
    finally:
        if forwarder is not None:
            forwarder.close()
        _close(transport)
