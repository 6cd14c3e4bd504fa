"""The benchmark: `bench/run [options]` (or `python -m bench`). Not part of the test suite.

Every workload runs through the connector and through the hand-made baselines in the same run,
on the same rows and the same table (created by the connector's own Apply), and the report gives
the connector's throughput as ratios of theirs. See bench/README.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import platform
import subprocess
import sys
import tempfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import psycopg
import yaml

from bench import driver, workloads
from bench.workloads import Workload
from materialize_postgres.protocol.messages import MaterializationSpec
from materialize_postgres.runner.catalog import load_catalog

HERE = Path(__file__).parent
SCENARIOS = Path(os.environ.get("BENCH_SCENARIOS", HERE.parent.parent / "shared" / "bench" / "scenarios"))
PG_TYPES = {"int8": "bigint", "text": "text", "timestamptz": "timestamptz", "json": "json", "jsonb": "jsonb"}


@dataclass
class Target:
    host: str
    port: int
    user: str
    database: str

    @property
    def dsn(self) -> str:
        return f"host={self.host} port={self.port} user={self.user} dbname={self.database}"


@dataclass
class Result:
    workload: str
    phase: str
    kind: str
    docs: int
    doc_bytes: int
    runs: dict[str, list[driver.Phase]] = field(default_factory=dict)

    def best(self, method: str) -> driver.Phase | None:
        runs = self.runs.get(method)
        return min(runs, key=lambda p: p.seconds) if runs else None

    def rate(self, method: str) -> float:
        p = self.best(method)
        return self.docs / p.seconds if p else 0.0


def main() -> None:
    args = parse_args()
    target = Target(args.host, args.port, args.user, args.database)
    ensure_database(target)
    chosen: list[Workload] = [workloads.GENERATED[name](args.scale) for name in args.workloads]
    if args.scenarios:
        for path in sorted(SCENARIOS.glob("*.yaml")):
            if args.scenarios == ["all"] or path.stem in args.scenarios:
                chosen.append(workloads.scenario(path, int(args.scenario_mb * (1 << 20))))
    results: list[Result] = []
    with tempfile.TemporaryDirectory(prefix="mp-bench-", dir=args.tmp) as tmp:
        for n, wl in enumerate(chosen):
            print(f"== {wl.name}", flush=True)
            results += run_workload(wl, f"bench_{n}", target, Path(tmp), args.repeat)
        memory = [memory_run(name, target, Path(tmp)) for name in args.memory]
    write_report(results, memory, target, args)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument("--workloads", type=_names, default=["small", "medium", "large"], help="of small,medium,large")
    p.add_argument("--scale", type=float, default=1.0, help="scale the generated workloads' document counts")
    p.add_argument("--scenarios", type=_names, default=["all"], help="scenario file stems, 'all' or 'none'")
    p.add_argument("--scenario-mb", type=float, default=128, help="scale scenarios so a transaction is at most this")
    p.add_argument("--memory", type=_names, default=[], help="of rows-10m,gb-5: connector-only RSS runs")
    p.add_argument("--repeat", type=int, default=1, help="runs per method; the best is reported")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5432)
    p.add_argument("--user", default="postgres")
    p.add_argument("--database", default="bench")
    p.add_argument("--tmp", default=None, help="where generated input files go")
    p.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = p.parse_args()
    if args.scenarios == ["none"]:
        args.scenarios = []
    return args


def _names(text: str) -> list[str]:
    return [n for n in text.split(",") if n]


def ensure_database(target: Target) -> None:
    admin = Target(target.host, target.port, target.user, "postgres")
    with psycopg.connect(admin.dsn, autocommit=True) as conn:
        if not conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [target.database]).fetchone():
            conn.execute(f'CREATE DATABASE "{target.database}"')


# ---------------------------------------------------------------------------------------------
# One workload.


def catalog_spec(wl: Workload, table: str, target: Target, tmp: Path) -> MaterializationSpec:
    config = {
        "address": f"{target.host}:{target.port}",
        "user": target.user,
        "password": os.environ.get("PGPASSWORD", "postgres"),  # the local server trusts loopback
        "database": target.database,
        "hardDelete": True,
    }
    catalog = {
        "collections": {wl.collection: {"schema": wl.schema, "key": ["/id"]}},
        "materializations": {
            f"bench/{table}": {
                "endpoint": {"connector": {"image": "materialize-postgres", "config": config}},
                "bindings": [{"source": wl.collection, "resource": {"table": table}}],
            }
        },
    }
    path = tmp / f"{table}.flow.yaml"
    path.write_text(yaml.safe_dump(catalog))
    return load_catalog(path).to_spec()


def run_workload(wl: Workload, table: str, target: Target, tmp: Path, repeat: int) -> list[Result]:
    spec = catalog_spec(wl, table, target, tmp)
    sel = spec.bindings[0].field_selection
    files, results = write_inputs(wl, table, sel.values, tmp)
    reset(spec, table, target)
    columns = column_types(target, table, [*sel.keys, *sel.values, sel.document])
    for _ in range(repeat):
        reset(spec, table, target)
        for r, phase in zip(results, driver.run_connector(spec, files, tmp / f"{table}.log"), strict=True):
            r.runs.setdefault("connector", []).append(phase)
        report(results, "connector")
        for method in ("best-batch", "rows"):
            reset(spec, table, target)
            for r, t in zip(results, files, strict=True):
                name = method if method == "rows" else ("copy" if t.kind == "insert" else "stage")
                assert t.stores is not None
                checkpoint(target)
                r.runs.setdefault(name, []).append(driver.run_baseline(name, target.dsn, table, columns, t.stores))
            report(results, method)
    for t in files:
        for path in (t.stores, t.loads):
            if path:
                path.unlink()
    return results


def write_inputs(wl: Workload, table: str, values: list[str], tmp: Path) -> tuple[list[driver.TxnFiles], list[Result]]:
    files: list[driver.TxnFiles] = []
    results: list[Result] = []
    max_key = -1
    for i, txn in enumerate(wl.txns):
        stores, loads = tmp / f"{table}.{i}.stores", tmp / f"{table}.{i}.loads"
        with stores.open("wb") as f:
            for line in workloads.store_lines(wl, txn, values, hard_delete=True):
                f.write(line + b"\n")
        loads.write_bytes(b"".join(line + b"\n" for line in workloads.load_lines(txn, max_key)))
        kind = "insert" if all(op == "c" for _, op in txn.ops) else "merge"
        files.append(driver.TxnFiles(stores, loads, kind))
        doc_bytes = sum(len(msgspec.json.encode(workloads.document(wl.schema, 0, "c", txn.doc_size))) for _ in [0])
        results.append(Result(wl.name, wl.phase(i), kind, txn.docs, doc_bytes * txn.docs))
        max_key = max([max_key, *(k for k, _ in txn.ops)])
    return files, results


def reset(spec: MaterializationSpec, table: str, target: Target) -> None:
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{table}"')
        if conn.execute("SELECT to_regclass('flow_checkpoints_v1')").fetchone() != (None,):
            conn.execute("DELETE FROM flow_checkpoints_v1 WHERE materialization = %s", [spec.name])
    driver.apply(spec)
    checkpoint(target)


def checkpoint(target: Target) -> None:
    """Start each measured phase with no dirty buffers left over from the one before."""
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute("CHECKPOINT")


def column_types(target: Target, table: str, fields: list[str]) -> list[dict[str, Any]]:
    with psycopg.connect(target.dsn) as conn:
        rows = dict(
            conn.execute(
                "SELECT column_name, udt_name FROM information_schema.columns WHERE table_name = %s", [table]
            ).fetchall()
        )
    return [{"name": f, "type": PG_TYPES[rows[f]], "key": i == 0} for i, f in enumerate(fields)]


def report(results: list[Result], method: str) -> None:
    for r in results:
        names = [n for n in r.runs if n == method or (method == "best-batch" and n in ("copy", "stage"))]
        for name in names:
            p = r.runs[name][-1]
            print(
                f"   {r.phase:<7} {name:<10} {r.docs / p.seconds:>10,.0f} docs/s "
                f"{r.doc_bytes / p.seconds / 1e6:>7.1f} MB/s  peak RSS {p.peak_rss_kb / 1024:.0f} MiB",
                flush=True,
            )


# ---------------------------------------------------------------------------------------------
# Memory: one huge transaction, generated as it is sent, through the connector only.

MEMORY = {"rows-10m": (10_000_000, 170), "gb-5": (5000, 1 << 20)}


def memory_run(name: str, target: Target, tmp: Path) -> tuple[str, int, int, driver.Phase]:
    docs, size = MEMORY[name]
    wl = workloads.generated(f"memory {name}", docs, size)
    wl.txns = wl.txns[:1]
    table = f"bench_mem_{name.replace('-', '_')}"
    spec = catalog_spec(wl, table, target, tmp)
    reset(spec, table, target)
    empty = tmp / "no-loads"
    empty.write_bytes(b"")
    lines = workloads.store_lines(wl, wl.txns[0], spec.bindings[0].field_selection.values, hard_delete=True)
    print(f"== memory: {name}", flush=True)
    [phase] = driver.run_connector(spec, [driver.TxnFiles(None, empty, "insert", lines)], tmp / f"{table}.log")
    print(f"   {docs:,} docs x {size} B in {phase.seconds:.0f} s, peak RSS {phase.peak_rss_kb / 1024:.0f} MiB")
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        (count,) = conn.execute(f'SELECT count(*) FROM "{table}"').fetchone() or (0,)
        conn.execute(f'DROP TABLE "{table}"')
    assert count == docs, f"{name}: {count} rows stored of {docs}"
    return name, docs, size, phase


# ---------------------------------------------------------------------------------------------
# The report.


def write_report(
    results: list[Result], memory: list[tuple[str, int, int, driver.Phase]], target: Target, args: Any
) -> None:
    lines = [
        "# Benchmark results",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with `bench/run {' '.join(sys.argv[1:])}`.",
        "",
        *machine(target),
        "",
        "Throughput is documents (and document JSON bytes) per second of one transaction, from its first",
        "request to `startedCommit` for the connector (a separate process fed the protocol on stdin), from",
        "the first row to the commit for a baseline (its own process, already connected). Best of",
        f"{args.repeat} run(s) each. Peak RSS is the whole process's high-water mark (VmHWM).",
        "",
        "| workload | txn | kind | docs | MB | connector docs/s | MB/s | RSS MiB | copy | stage | rows "
        "| vs best | vs rows | target |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for r in results:
        lines.append(row(r))
    lines += [""]
    if memory:
        lines += ["## Memory: one large transaction through the connector", ""]
        lines += [
            "| run | docs | doc size | seconds | docs/s | MB/s | peak RSS MiB |",
            "|---|---:|---:|---:|---:|---:|---:|",
        ]
        for name, docs, size, p in memory:
            lines.append(
                f"| {name} | {docs:,} | {size:,} | {p.seconds:.0f} | {docs / p.seconds:,.0f} "
                f"| {docs * size / p.seconds / 1e6:.1f} | {p.peak_rss_kb / 1024:.0f} |"
            )
        lines += [""]
    args.out.write_text("\n".join(lines) + "\n")
    (args.out.with_suffix(".json")).write_bytes(
        msgspec.json.format(
            msgspec.json.encode(
                [{**r.__dict__, "runs": {k: [p.__dict__ for p in v] for k, v in r.runs.items()}} for r in results]
            ),
            indent=2,
        )
    )
    print(f"wrote {args.out}")


def row(r: Result) -> str:
    conn = r.best("connector")
    assert conn is not None
    batch = "copy" if r.kind == "insert" else "stage"
    best = max(r.rate(batch), r.rate("rows"))
    vs_best = r.rate("connector") / best if best else 0.0
    vs_rows = r.rate("connector") / r.rate("rows") if r.rate("rows") else 0.0
    need = 0.8 if r.kind == "insert" else 0.9
    small = r.doc_bytes / r.docs < 4096
    ok = vs_best >= need and (not small or vs_rows >= 3) and conn.peak_rss_kb < 250 * 1024
    cells = [f"{r.rate(m):,.0f}" if r.best(m) else "" for m in ("copy", "stage", "rows")]
    return (
        f"| {r.workload} | {r.phase} | {r.kind} | {r.docs:,} | {r.doc_bytes / 1e6:,.0f} "
        f"| {r.rate('connector'):,.0f} | {r.doc_bytes / conn.seconds / 1e6:.1f} | {conn.peak_rss_kb / 1024:.0f} "
        f"| {' | '.join(cells)} | {vs_best:.2f}x | {vs_rows:.2f}x | {'met' if ok else 'MISSED'} |"
    )


def machine(target: Target) -> list[str]:
    cpu = next(
        (ln.split(":", 1)[1].strip() for ln in Path("/proc/cpuinfo").read_text().splitlines() if "model name" in ln),
        platform.processor(),
    )
    mem = Path("/proc/meminfo").read_text().splitlines()[0].split()[1]
    with psycopg.connect(target.dsn) as conn:
        (version,) = conn.execute("SHOW server_version").fetchone() or ("?",)
    pkgs = subprocess.run(
        [sys.executable, "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
        capture_output=True,
        text=True,
    ).stdout.splitlines()
    wanted = ("psycopg=", "psycopg-binary", "msgspec", "orjson", "materialize-postgres")
    return [
        f"- Machine: {cpu}, {os.cpu_count()} CPUs, {int(mem) / 1048576:.0f} GiB RAM; {platform.platform()}",
        f"- PostgreSQL {version} at {target.host}:{target.port} (same machine, loopback, default settings)",
        f"- Python {platform.python_version()}; " + ", ".join(p for p in pkgs if p.lower().startswith(wanted)),
        "- Targets: inserts >= 0.8x the better of copy and rows; merges >= 0.9x the better of stage and rows;",
        "  documents under 4 KiB >= 3x rows; connector peak RSS < 250 MiB.",
    ]


if __name__ == "__main__":
    main()
