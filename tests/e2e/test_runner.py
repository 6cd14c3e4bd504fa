"""`materialize-postgres run`: a Flow catalog and documents in, tables out, exactly once."""

from __future__ import annotations

import gc
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import psycopg
import pytest
import yaml

from materialize_postgres import Materialization

ROOT = Path(__file__).resolve().parents[2]
QUICKSTART = ROOT / "examples" / "quickstart"


def catalog(tmp_path: Path, endpoint: dict[str, Any], **collection_overrides: Any) -> Path:
    doc = yaml.safe_load((QUICKSTART / "flow.yaml").read_text())
    doc["materializations"]["acme/orders-to-postgres"]["endpoint"]["connector"]["config"] = {
        **endpoint,
        "hardDelete": True,
    }
    doc["collections"]["acme/orders"].update(collection_overrides)
    path = tmp_path / "flow.yaml"
    path.write_text(yaml.safe_dump(doc))
    return path


def run(*args: str, stdin: bytes | None = None, cwd: Path | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "materialize_postgres", "run", *args],
        input=stdin,
        capture_output=True,
        cwd=cwd,
        timeout=300,
    )


def rows(dsn: str, sql: str = "SELECT id, status, items FROM orders ORDER BY id") -> list[tuple]:
    with psycopg.connect(dsn) as conn:
        return conn.execute(sql).fetchall()


def order(i: int, status: str = "placed", **extra: Any) -> dict[str, Any]:
    return {
        "id": i,
        "customer": {"name": f"c{i}"},
        "status": status,
        "items": 1,
        "placed_at": "2026-11-01T09:30:00Z",
        **extra,
    }


def test_quickstart_fixture(pg_database: Any, tmp_path: Path) -> None:
    cat = catalog(tmp_path, pg_database.endpoint_config())
    done = run(str(cat), "--fixture", str(QUICKSTART / "fixture.jsonl"), "--show", "5")
    assert done.returncode == 0, done.stderr.decode()
    # Order 1 merged (items summed, notes appended), order 2 deleted, 3 delivered, 4 placed.
    assert rows(pg_database.dsn) == [(1, "shipped", 3), (3, "delivered", 5), (4, "placed", 1)]
    (notes,) = rows(pg_database.dsn, "SELECT notes FROM orders WHERE id = 1")[0]
    assert notes == ["gift wrap", "left the warehouse"]
    assert b"public.orders" in done.stdout

    again = run(str(cat), "--fixture", str(QUICKSTART / "fixture.jsonl"))
    assert again.returncode == 0, again.stderr.decode()
    assert b"materialized 0 documents in 0 transactions" in again.stderr
    assert rows(pg_database.dsn) == [(1, "shipped", 3), (3, "delivered", 5), (4, "placed", 1)]


def test_an_invalid_document_fails_its_transaction_and_a_rerun_resumes(pg_database: Any, tmp_path: Path) -> None:
    cat = catalog(tmp_path, pg_database.endpoint_config())
    fixture = tmp_path / "fixture.jsonl"
    lines = [
        json.dumps(["acme/orders", order(1)]),
        '{"commit": true}',
        json.dumps(["acme/orders", order(2)]),
        '{"commit": true}',
        json.dumps(["acme/orders", order(3)]),
        json.dumps(["acme/orders", order(4, status="lost")]),
        '{"commit": true}',
    ]
    fixture.write_text("\n".join(lines) + "\n")
    failed = run(str(cat), "--fixture", str(fixture))
    assert failed.returncode != 0
    message = json.loads(failed.stderr.decode().strip().splitlines()[-1])["msg"]
    assert "line 6" in message and "key [4]" in message and "/status" in message
    assert [r[0] for r in rows(pg_database.dsn)] == [1, 2]

    lines[5] = json.dumps(["acme/orders", order(4, status="shipped")])
    fixture.write_text("\n".join(lines) + "\n")
    fixed = run(str(cat), "--fixture", str(fixture))
    assert fixed.returncode == 0, fixed.stderr.decode()
    assert b"materialized 2 documents in 1 transactions" in fixed.stderr
    assert [r[0] for r in rows(pg_database.dsn)] == [1, 2, 3, 4]


def test_killed_mid_run_resumes_without_loss_or_duplicates(pg_database: Any, tmp_path: Path) -> None:
    cat = catalog(tmp_path, pg_database.endpoint_config())
    source = tmp_path / "orders.jsonl"
    with source.open("w") as f:
        for i in range(60_000):
            f.write(json.dumps(order(i % 20_000, items=1)) + "\n")  # every key three times
    args = (str(cat), "--input", str(source), "--collection", "acme/orders", "--txn-size", "2000", "--no-validate")
    proc = subprocess.Popen(
        [sys.executable, "-m", "materialize_postgres", "run", *args],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        time.sleep(0.2)
        try:
            if rows(pg_database.dsn, "SELECT count(*) FROM flow_checkpoints_v1 WHERE checkpoint <> ''")[0][0]:
                break
        except psycopg.Error:
            continue
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    resumed = run(*args)
    assert resumed.returncode == 0, resumed.stderr.decode()
    # items are summed per key across the whole input: exactly 3 for every key means every line
    # was applied once, across the kill.
    assert rows(pg_database.dsn, "SELECT count(*), min(items), max(items) FROM orders") == [(20_000, 3, 3)]


def test_jsonl_from_stdin(pg_database: Any, tmp_path: Path) -> None:
    cat = catalog(tmp_path, pg_database.endpoint_config())
    data = "".join(json.dumps(order(i)) + "\n" for i in range(5)).encode()
    done = run(str(cat), "--input", "-", "--collection", "acme/orders", "--txn-size", "2", stdin=data)
    assert done.returncode == 0, done.stderr.decode()
    assert len(rows(pg_database.dsn)) == 5


def test_unsupported_reduction_is_refused_at_start(pg_database: Any, tmp_path: Path) -> None:
    cat = catalog(tmp_path, pg_database.endpoint_config())
    doc = yaml.safe_load(cat.read_text())
    doc["collections"]["acme/orders"]["schema"]["properties"]["total"]["reduce"] = {"strategy": "set"}
    cat.write_text(yaml.safe_dump(doc))
    done = run(str(cat), "--fixture", str(QUICKSTART / "fixture.jsonl"))
    assert done.returncode != 0
    assert b"reduce strategy 'set' at /total is not supported" in done.stderr


def test_python_api(pg_database: Any, tmp_path: Path) -> None:
    cat = catalog(tmp_path, pg_database.endpoint_config())
    collector = (gc.get_threshold(), gc.get_freeze_count())
    with Materialization.open(cat) as m:
        assert m.committed_position is None
        m.transaction([("acme/orders", order(1)), ("acme/orders", order(2))], position=1)
        shipped = order(1, status="shipped")
        before = json.loads(json.dumps(shipped))
        m.transaction([("acme/orders", shipped)], position=2)
        assert shipped == before, "the caller's documents are not modified"
    with Materialization.open(cat) as m:
        assert m.committed_position == 2
    assert rows(pg_database.dsn) == [(1, "shipped", 2), (2, "placed", 1)]
    # The garbage collector's settings are the calling program's; only our own processes tune them.
    assert (gc.get_threshold(), gc.get_freeze_count()) == collector


@pytest.mark.parametrize("bad", ["collections: [", "collections:\n  a/b:\n    schema: {type: object}\n"])
def test_catalog_errors_are_clear(tmp_path: Path, bad: str) -> None:
    cat = tmp_path / "flow.yaml"
    cat.write_text(bad)
    done = run(str(cat), "--fixture", str(QUICKSTART / "fixture.jsonl"))
    assert done.returncode != 0
    message = done.stderr.decode()
    assert "flow.yaml" in message and ("not valid YAML" in message or "needs a key" in message)


def test_shards_split_the_key_range_and_never_merge_back(pg_database: Any, tmp_path: Path) -> None:
    cat = catalog(tmp_path, pg_database.endpoint_config())
    source = tmp_path / "orders.jsonl"
    source.write_text("".join(json.dumps(order(i % 3000)) + "\n" for i in range(6000)))
    args = (str(cat), "--input", str(source), "--collection", "acme/orders", "--txn-size", "500", "--no-validate")
    first = run(*args)  # one shard reads the first 6000 lines
    assert first.returncode == 0, first.stderr.decode()
    with source.open("a") as f:
        f.write("".join(json.dumps(order(i % 3000)) + "\n" for i in range(3000)))
    split = run(*args, "--shards", "3")  # each part resumes from the parent's position
    assert split.returncode == 0, split.stderr.decode()
    assert rows(pg_database.dsn, "SELECT count(*), min(items), max(items) FROM orders") == [(3000, 3, 3)]
    ranges = rows(pg_database.dsn, "SELECT key_begin, key_end FROM flow_checkpoints_v1 ORDER BY 1, 2")
    assert ranges == [(0, 1431655764), (0, 4294967295), (1431655765, 2863311529), (2863311530, 4294967295)]
    merged = run(*args)
    assert merged.returncode != 0 and b"run it with the same --shards" in merged.stderr
    straddling = run(*args, "--shards", "2")  # [0, 2^31) would inherit the full range's old position
    assert straddling.returncode != 0 and b"run it with the same --shards" in straddling.stderr
    with source.open("a") as f:
        f.write("".join(json.dumps(order(i % 3000)) + "\n" for i in range(3000)))
    finer = run(*args, "--shards", "6")  # each sixth nests in a third and resumes from its position
    assert finer.returncode == 0, finer.stderr.decode()
    assert rows(pg_database.dsn, "SELECT count(*), min(items), max(items) FROM orders") == [(3000, 4, 4)]
