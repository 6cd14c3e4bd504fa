"""`materialize-postgres check`: connect with an endpoint config and test what the connector needs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import psycopg
from rich.console import Console
from rich.markup import escape

from .config import ConfigError
from .connect import ConnectError, connect, endpoint
from .driver import endpoint_config
from .identifiers import quote


def run_checks(config: Any) -> bool:
    console = Console(stderr=False)
    try:
        cfg = endpoint_config(config)
    except ConfigError as err:
        _say(console, "FAIL", f"config: {err}")
        return False
    _say(console, "PASS", "config is valid")
    try:
        with endpoint(cfg) as target, connect(cfg, target, application="check", autocommit=True) as conn:
            version = conn.execute("SHOW server_version").fetchone()
            _say(console, "PASS", f"connected to {cfg.address} (PostgreSQL {version[0] if version else '?'})")
            return _privileges(conn, cfg.schema_name, console)
    except (ConnectError, OSError) as err:
        _say(console, "FAIL", f"connect: {err}")
        return False


def _privileges(conn: psycopg.Connection, schema: str, console: Console) -> bool:
    checks: list[tuple[str, Callable[[psycopg.Connection], None]]] = [
        (
            f"create a table in schema {schema!r}",
            lambda c: c.execute(f"CREATE TABLE {quote(schema)}.flow_check_probe (id BIGINT PRIMARY KEY)"),
        ),
        ("create temporary tables", lambda c: c.execute("CREATE TEMPORARY TABLE flow_check_tmp (id BIGINT)")),
        ("create a schema", lambda c: c.execute("CREATE SCHEMA flow_check_probe_schema")),
    ]
    ok = True
    for name, probe in checks:
        try:
            with conn.transaction(force_rollback=True):
                probe(conn)
            _say(console, "PASS", f"can {name}")
        except psycopg.Error as err:
            ok = False if "schema" not in name else ok  # schemas are only needed when missing
            label = "FAIL" if "schema" not in name else "WARN"
            _say(console, label, f"cannot {name}: {str(err).strip()}")
    return ok


def _say(console: Console, status: str, text: str) -> None:
    # Server messages and values may hold [brackets]: print them as text, never as markup.
    style = {"PASS": "green", "WARN": "yellow"}.get(status, "red")
    console.print(f"[{style}]{status}[/{style}] {escape(text)}")
