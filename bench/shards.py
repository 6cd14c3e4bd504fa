"""Shard scale-out of the standalone runner (`bench/run --shards 1,2,4`).

`materialize-postgres run --shards N` applies the catalog once, then runs N processes, each
fenced on its own key range (its own row in flow_checkpoints_v1), each reading the whole input and
keeping its own keys: on one machine, what Flow does with N shards on N machines. The same input,
a JSONL file of plain `small` documents (170 B), goes through each N into a fresh table; the time
is the command's wall clock, start to exit (Apply and the processes' start included), and the
table's row count is checked afterwards.

The CPU figures are the runner's (the command's process and its shard processes, from wait4) and
the whole local server's over the run (bench/cpu.py).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import psycopg

from bench import cpu, workloads
from bench.target import Target, checkpoint, drop, write_catalog
from bench.workloads import ITEMS_SCHEMA, Workload
from materialize_postgres.runner.runtime import encode_doc

DOC_SIZE = 170


@dataclass
class ShardRun:
    shards: int
    docs: int
    seconds: float
    rows: int
    cpu_s: float
    server_cpu_s: float | None

    @property
    def rate(self) -> float:
        return self.docs / self.seconds


def run(counts: list[int], docs: int, txn_size: int, target: Target, tmp: Path) -> list[ShardRun]:
    print(f"== shards: {docs:,} documents, --txn-size {txn_size:,}, N = {', '.join(map(str, counts))}", flush=True)
    wl = Workload("shards", "bench/items", ITEMS_SCHEMA, [], [])
    data = write_input(wl, docs, tmp / "shards.jsonl")
    try:
        return [run_one(wl, n, data, docs, txn_size, target, tmp) for n in counts]
    finally:
        data.unlink()


def write_input(wl: Workload, docs: int, path: Path) -> Path:
    """Plain documents, one a line, as a user would hand them to `materialize-postgres run`."""
    with path.open("wb") as f:
        for key in range(docs):
            f.write(encode_doc(workloads.document(wl.schema, key, "c", DOC_SIZE)) + b"\n")
    return path


def run_one(wl: Workload, shards: int, data: Path, docs: int, txn_size: int, target: Target, tmp: Path) -> ShardRun:
    # A table (and materialization) per N, dropped before and after: every N starts from nothing.
    table = f"bench_shards_{shards}"
    catalog = write_catalog(wl, table, target, tmp)
    drop(target, table, f"bench/{table}")
    checkpoint(target)
    server = cpu.Server.of(target.dsn)
    command = [sys.executable, "-m", "materialize_postgres", "run", str(catalog), "--input", str(data)]
    command += ["--collection", wl.collection, "--txn-size", str(txn_size), "--shards", str(shards)]
    command += ["--no-validate", "--quiet"]
    log = tmp / f"{table}.log"
    server_start = server.total() if server else 0.0
    start = time.perf_counter()
    with log.open("wb") as out:
        proc = subprocess.Popen(command, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, cwd=tmp)
        # wait4's usage includes the shard processes: the command waits for each of them.
        _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - start
    server_cpu = server.total() - server_start if server else None
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen it is done
    if proc.returncode != 0:
        raise RuntimeError(f"--shards {shards} failed (exit {proc.returncode}): {log.read_text()[-2000:]}")
    rows = count_rows(target, table)
    drop(target, table, f"bench/{table}")
    result = ShardRun(shards, docs, seconds, rows, usage.ru_utime + usage.ru_stime, server_cpu)
    check = "ok" if rows == docs else f"MISMATCH: {rows:,} rows"
    print(f"   --shards {shards}: {result.rate:>9,.0f} docs/s ({seconds:.1f} s), rows {check}", flush=True)
    return result


def count_rows(target: Target, table: str) -> int:
    with psycopg.connect(target.dsn) as conn:
        (count,) = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone() or (0,)
    return count


def section(runs: list[ShardRun], txn_size: int) -> list[str]:
    base = next((r for r in runs if r.shards == 1), runs[0])
    lines = [
        "## Shard scale-out: `materialize-postgres run --shards N`",
        "",
        f"`materialize-postgres run CATALOG --input FILE --collection bench/items --txn-size {txn_size} --shards N",
        "--no-validate` on one JSONL file of plain `small` documents (170 B), into a fresh table per N. Seconds are",
        "the command's wall clock (Apply and process start included); runner CPU is the command's and its shard",
        "processes' (wait4), server CPU the whole local cluster's over the run. Each shard reads and parses the",
        "whole input and keeps its own keys, and the server runs on the same machine: with "
        f"{os.cpu_count()} CPUs here,",
        "shards compete with each other and with PostgreSQL for the same cores, so the speed-up is limited by",
        "this machine, not by the shards' design (under Flow each shard is its own connector process, usually",
        "on its own machine, reading only its own documents).",
        "",
        "| shards | docs | seconds | docs/s | speed-up vs 1 | runner CPU s | server CPU s | rows |",
        "|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in runs:
        server = "" if r.server_cpu_s is None else f"{r.server_cpu_s:.1f}"
        check = "ok" if r.rows == r.docs else f"MISMATCH ({r.rows:,})"
        lines.append(
            f"| {r.shards} | {r.docs:,} | {r.seconds:.1f} | {r.rate:,.0f} | {r.rate / base.rate:.2f}x "
            f"| {r.cpu_s:.1f} | {server} | {check} |"
        )
    return [*lines, ""]
