"""`materialize-postgres check CONFIG` connects with an endpoint config and reports each check as
PASS or FAIL, exiting non-zero when something the connector needs does not work."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any


def check(config: dict[str, Any], tmp_path: Path) -> subprocess.CompletedProcess[str]:
    path = tmp_path / "config.json"
    path.write_text(json.dumps(config))
    return subprocess.run(
        [sys.executable, "-m", "materialize_postgres", "check", str(path)],
        capture_output=True,
        text=True,
        timeout=120,
        env={"COLUMNS": "200", "PATH": "/usr/bin:/bin"},
    )


def test_a_working_config_passes_every_check(pg_database: Any, tmp_path: Path) -> None:
    out = check(pg_database.endpoint_config(), tmp_path)
    assert out.returncode == 0, out.stdout + out.stderr
    for line in ("PASS config is valid", "PASS connected to", "PASS can create a table", "PASS can create temporary"):
        assert line in out.stdout, out.stdout
    assert "FAIL" not in out.stdout


def test_an_unknown_database_fails_with_what_to_fix(pg_database: Any, tmp_path: Path) -> None:
    out = check(pg_database.endpoint_config(database="no_such_db_[x]"), tmp_path)
    assert out.returncode == 1
    assert "FAIL connect:" in out.stdout
    assert "no_such_db_[x]" in out.stdout, "bracketed text is printed as text, not swallowed as markup"


def test_an_invalid_config_fails_naming_the_field(tmp_path: Path) -> None:
    out = check({"address": "localhost:5432", "user": 5, "database": "d"}, tmp_path)
    assert out.returncode == 1
    assert "FAIL config:" in out.stdout and "user" in out.stdout
