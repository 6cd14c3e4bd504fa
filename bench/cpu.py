"""CPU seconds of a client process and of the local PostgreSQL server, read from /proc.

The benchmark runs on the server's machine (as root, or as the server's user), so the server's
processes are readable. The server's CPU is the whole cluster's: the postmaster, every live child
(backends, parallel workers, WAL writer, checkpointer, autovacuum) and, through the postmaster's
cutime/cstime, every child that exited and was reaped since. A backend that ends within a phase
is thus still counted, and so is the background work a phase causes (WAL flushes, checkpoints);
so is unrelated background work such as an autovacuum of an earlier phase's table, which is why
the backends serving the measured client are also summed on their own.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

TICK = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> list[str]:
    """/proc/<pid>/stat's fields from the state on (field 3): the command name may hold spaces."""
    text = Path(f"/proc/{pid}/stat").read_text()
    return text[text.rindex(")") + 2 :].split()


def process_cpu(pid: int, children: bool = False) -> float:
    """User + system seconds of one process (all its threads); with `children`, plus its reaped children's."""
    try:
        f = _stat(pid)
    except (FileNotFoundError, ProcessLookupError):
        return 0.0
    # Fields 14-17 (utime, stime, cutime, cstime) are at 11-14 counting from field 3.
    ticks = int(f[11]) + int(f[12]) + (int(f[13]) + int(f[14]) if children else 0)
    return ticks / TICK


def _children(ppid: int) -> list[int]:
    found = []
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            try:
                if int(_stat(int(entry.name))[1]) == ppid:
                    found.append(int(entry.name))
            except (FileNotFoundError, ProcessLookupError, IndexError):
                continue  # ended while we looked
    return found


@dataclass
class Server:
    """The local cluster, found through a backend's parent: the postmaster."""

    postmaster: int

    @classmethod
    def of(cls, dsn: str) -> Server | None:
        """None when the server is not on this machine or /proc is not readable."""
        try:
            with psycopg.connect(dsn, autocommit=True) as conn:
                row = conn.execute("SELECT pg_backend_pid()").fetchone()
            assert row is not None
            server = cls(int(_stat(row[0])[1]))
            server.total()
            return server
        except (OSError, psycopg.Error, IndexError, ValueError):
            return None

    def total(self) -> float:
        """The cluster's CPU seconds so far: the postmaster, its reaped children, its live ones."""
        return process_cpu(self.postmaster, children=True) + sum(process_cpu(p) for p in _children(self.postmaster))


def backends(conn: psycopg.Connection[Any], application_prefix: str) -> list[int]:
    """The backends serving connections whose application_name starts with the prefix."""
    rows = conn.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name LIKE %s AND pid <> pg_backend_pid()",
        [application_prefix.replace("%", r"\%").replace("_", r"\_") + "%"],
    ).fetchall()
    return [r[0] for r in rows]


@dataclass
class Sample:
    client: float
    server: float
    backends: float


class Split:
    """Samples a client process, the cluster and the client's backends before and after a phase.

    The client's backends are looked up in pg_stat_activity at each phase's start (the connector
    opens its load and store connections in Open, before its first transaction, and keeps them),
    through one monitoring connection kept open: a connection per look-up would start and end a
    backend, whose CPU the cluster's total would count."""

    def __init__(self, pid: int, dsn: str, server: Server | None, application_prefix: str) -> None:
        self.pid = pid
        self.server = server
        self.prefix = application_prefix
        self.conn = psycopg.connect(dsn, autocommit=True) if server else None
        self.backend_pids: list[int] = []

    def sample(self) -> Sample:
        return Sample(
            process_cpu(self.pid),
            self.server.total() if self.server else 0.0,
            sum(process_cpu(p) for p in self.backend_pids),
        )

    def start(self) -> Sample:
        if self.conn is not None:
            self.backend_pids = backends(self.conn, self.prefix)
        return self.sample()

    def since(self, start: Sample) -> tuple[float, float | None, float | None]:
        """Client, server and backend CPU seconds since `start`; None for what could not be read."""
        end = self.sample()
        if self.server is None:
            return end.client - start.client, None, None
        return end.client - start.client, end.server - start.server, end.backends - start.backends

    def close(self) -> None:
        if self.conn is not None:
            self.conn.close()
