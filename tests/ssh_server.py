"""A throwaway OpenSSH server on a free loopback port, to test the SSH tunnel against a real sshd.

`running_sshd()` generates a host key and client key pairs (RSA in OpenSSH and PEM form, ed25519,
ECDSA) for this run only, authorizes all but one "wrong" key, and runs `/usr/sbin/sshd -D` with a
config in a temporary directory. It logs in as the current user (root in CI: PermitRootLogin
prohibit-password). When sshd is missing it runs scripts/start-sshd.sh to install it; if that fails
the `sshd` fixture fails the test loudly: a tunnel test that silently skips proves nothing.

Use it as a plugin (`pytest_plugins = ("tests.ssh_server",)`) for the session-scoped `sshd`
fixture, or wrap `running_sshd()` in a fixture of your own.
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization as ser
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, rsa

SSHD = Path("/usr/sbin/sshd")
INSTALL_SCRIPT = Path(__file__).resolve().parent.parent / "scripts" / "start-sshd.sh"
# Generous: the first start after an install can be slow on a busy CI machine.
START_TIMEOUT_S = 15.0

PrivateKey = rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey | ec.EllipticCurvePrivateKey


@dataclass
class SSHServer:
    host: str
    port: int
    user: str
    log_file: Path
    # Name -> private key text; all of these are in authorized_keys.
    keys: dict[str, str] = field(default_factory=dict, repr=False)
    # A valid key that is not authorized.
    wrong_key: str = field(default="", repr=False)

    def endpoint(self) -> str:
        return f"ssh://{self.user}@{self.host}:{self.port}"

    def log(self) -> str:
        return self.log_file.read_text(errors="replace") if self.log_file.exists() else ""


def ensure_sshd() -> None:
    """Install sshd with scripts/start-sshd.sh if it is missing; raise if it is still missing."""
    if SSHD.exists():
        return
    proc = subprocess.run(["sh", str(INSTALL_SCRIPT)], capture_output=True, text=True, timeout=600, check=False)
    if proc.returncode != 0 or not SSHD.exists():
        raise RuntimeError(
            f"{SSHD} is missing and {INSTALL_SCRIPT} could not install it (exit {proc.returncode}):\n"
            f"{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}"
        )


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def private_text(key: PrivateKey, fmt: ser.PrivateFormat = ser.PrivateFormat.OpenSSH) -> str:
    return key.private_bytes(ser.Encoding.PEM, fmt, ser.NoEncryption()).decode()


def public_line(key: PrivateKey) -> str:
    return key.public_key().public_bytes(ser.Encoding.OpenSSH, ser.PublicFormat.OpenSSH).decode()


def client_keys() -> tuple[dict[str, str], list[str], str]:
    """(name -> private key text, authorized public key lines, an unauthorized private key)."""
    rsa_openssh = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    rsa_pem = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    ed = ed25519.Ed25519PrivateKey.generate()
    ecdsa = ec.generate_private_key(ec.SECP256R1())
    keys = {
        "rsa": private_text(rsa_openssh),
        "rsa-pem": private_text(rsa_pem, ser.PrivateFormat.TraditionalOpenSSL),
        "ed25519": private_text(ed),
        "ecdsa": private_text(ecdsa, ser.PrivateFormat.TraditionalOpenSSL),
    }
    authorized = [public_line(k) for k in (rsa_openssh, rsa_pem, ed, ecdsa)]
    return keys, authorized, private_text(ed25519.Ed25519PrivateKey.generate())


def write_config(tmp: Path, port: int, authorized: list[str]) -> Path:
    host_key = tmp / "ssh_host_ed25519_key"
    host_key.write_text(private_text(ed25519.Ed25519PrivateKey.generate()))
    host_key.chmod(0o600)
    (tmp / "authorized_keys").write_text("\n".join(authorized) + "\n")
    config = tmp / "sshd_config"
    config.write_text(
        f"""Port {port}
ListenAddress 127.0.0.1
HostKey {host_key}
PidFile {tmp / "sshd.pid"}
AuthorizedKeysFile {tmp / "authorized_keys"}
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
AllowTcpForwarding yes
PermitTTY no
X11Forwarding no
UsePAM no
StrictModes no
LogLevel VERBOSE
"""
    )
    return config


def wait_for_banner(proc: subprocess.Popen[bytes], port: int, log_file: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited with {proc.returncode}:\n{log_file.read_text(errors='replace')}")
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=1) as s:
            if s.recv(4).startswith(b"SSH-"):
                return
        time.sleep(0.1)
    raise RuntimeError(f"sshd did not answer on port {port}:\n{log_file.read_text(errors='replace')}")


@contextlib.contextmanager
def running_sshd() -> Iterator[SSHServer]:
    ensure_sshd()
    # sshd's privilege separation directory; Debian creates it only when the service starts.
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="mp-sshd-"))
    keys, authorized, wrong = client_keys()
    port = free_port()
    config = write_config(tmp, port, authorized)
    log_file = tmp / "sshd.log"
    with log_file.open("wb") as log:
        proc = subprocess.Popen([str(SSHD), "-D", "-e", "-f", str(config)], stdout=log, stderr=subprocess.STDOUT)
    try:
        wait_for_banner(proc, port, log_file)
        yield SSHServer("127.0.0.1", port, getpass.getuser(), log_file, keys, wrong)
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="session")
def sshd() -> Iterator[SSHServer]:
    try:
        with running_sshd() as server:
            yield server
    except RuntimeError as err:
        pytest.fail(f"cannot run the test sshd: {err}")
