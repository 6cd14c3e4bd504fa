"""The benchmark: `bench/run [options]` (or `python -m bench`). Not part of the test suite.

Every workload runs through the connector and through the hand-made baselines in the same run,
on the same rows and the same table (created by the connector's own Apply), then through the peer
loaders (dlt, target-postgres: bench/peers.py) on the same documents, each into its own schema; the
report gives the connector's throughput as ratios of theirs. See bench/README.md.

Options add: the CPU split between the connector and the server per phase (`--cpu`, on by default),
loads and a merge against a big table (`--big-table N`, bench/bigtable.py) and the runner's shard
scale-out (`--shards 1,2,4`, bench/shards.py).
"""

from __future__ import annotations

import argparse
import contextlib
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

from bench import bigtable, driver, peers, shards, workloads
from bench.target import Target, catalog_spec, checkpoint, column_types, ensure_database, reset
from bench.workloads import Workload

HERE = Path(__file__).parent
SCENARIOS = Path(os.environ.get("BENCH_SCENARIOS", HERE.parent.parent / "shared" / "bench" / "scenarios"))


@dataclass
class Result:
    workload: str
    phase: str
    kind: str
    docs: int
    doc_bytes: int
    runs: dict[str, list[driver.Phase]] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)  # method -> why it has no (valid) figure

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
    # Installed up front (once, untimed); a peer that cannot be installed is reported, not fatal.
    peer_errors = peers.install(args.peers)
    results: list[Result] = []
    extras = Extras()
    work = (
        contextlib.nullcontext(tempfile.mkdtemp(prefix="mp-bench-", dir=args.tmp))
        if args.keep
        else tempfile.TemporaryDirectory(prefix="mp-bench-", dir=args.tmp)
    )
    with work as tmp:
        if args.keep:
            print(f"inputs and connector logs are kept in {tmp}", flush=True)
        for n, wl in enumerate(chosen):
            print(f"== {wl.name}", flush=True)
            results += run_workload(wl, f"bench_{n}", target, Path(tmp), args.repeat, args.peers, peer_errors, args.cpu)
        memory = [memory_run(name, target, Path(tmp)) for name in args.memory]
        run_extras(extras, target, Path(tmp), args)
    write_report(results, memory, target, args, extras)


@dataclass
class Extras:
    """The optional runs' figures, for the report."""

    big: bigtable.BigResult | None = None
    shards: list[shards.ShardRun] = field(default_factory=list)


def run_extras(extras: Extras, target: Target, tmp: Path, args: argparse.Namespace) -> None:
    if args.big_table:
        extras.big = bigtable.run(args.big_table, args.big_keys, target, tmp, args.repeat, args.drop_big_table)
    elif args.drop_big_table:
        bigtable.drop(target)
    if args.shards:
        docs = args.shards_docs or int(1_000_000 * args.scale)
        extras.shards = shards.run(args.shards, docs, args.shards_txn_size, target, tmp)


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/run", description=__doc__)
    p.add_argument("--workloads", type=_names, default=["small", "medium", "large"], help="of small,medium,large")
    p.add_argument("--scale", type=float, default=1.0, help="scale the generated workloads' document counts")
    p.add_argument("--scenarios", type=_names, default=["all"], help="scenario file stems, 'all' or 'none'")
    p.add_argument("--scenario-mb", type=float, default=128, help="scale scenarios so a transaction is at most this")
    p.add_argument("--memory", type=_names, default=[], help="of rows-10m,gb-5: connector-only RSS runs")
    p.add_argument("--repeat", type=int, default=1, help="runs per method; the best is reported")
    p.add_argument(
        "--cpu",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="CPU seconds per GB of the connector and of the server, per phase (reads /proc; on by default)",
    )
    p.add_argument("--big-table", type=int, default=0, metavar="ROWS", help="loads and a merge against ROWS rows")
    p.add_argument("--big-keys", type=int, default=100_000, help="keys per --big-table load or merge transaction")
    p.add_argument("--drop-big-table", action="store_true", help="drop the --big-table table at the end")
    p.add_argument("--shards", type=_counts, default=[], help="runner shard counts to compare, e.g. 1,2,4")
    p.add_argument("--shards-docs", type=int, default=0, help="documents for --shards (default 1M x --scale)")
    p.add_argument("--shards-txn-size", type=int, default=100_000, help="--txn-size of the --shards runs")
    p.add_argument("--peers", type=_names, default=list(peers.PEERS), help=f"of {','.join(peers.PEERS)}, or 'none'")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5432)
    p.add_argument("--user", default="postgres")
    p.add_argument("--database", default="bench")
    p.add_argument("--tmp", default=None, help="where generated input files go")
    p.add_argument("--keep", action="store_true", help="keep the --tmp files (inputs, connector logs)")
    p.add_argument("--out", type=Path, default=HERE / "RESULTS.md")
    args = p.parse_args()
    if args.scenarios == ["none"]:
        args.scenarios = []
    if args.peers == ["none"]:
        args.peers = []
    unknown = set(args.peers) - set(peers.PEERS)
    if unknown:
        p.error(f"unknown peers: {', '.join(sorted(unknown))} (known: {', '.join(peers.PEERS)})")
    return args


def _names(text: str) -> list[str]:
    return [n for n in text.split(",") if n]


def _counts(text: str) -> list[int]:
    return [int(n) for n in _names(text)]


# ---------------------------------------------------------------------------------------------
# One workload.


def run_workload(
    wl: Workload,
    table: str,
    target: Target,
    tmp: Path,
    repeat: int,
    peer_names: list[str],
    peer_errors: dict[str, str],
    cpu: bool,
) -> list[Result]:
    spec = catalog_spec(wl, table, target, tmp)
    sel = spec.bindings[0].field_selection
    files, results = write_inputs(wl, table, sel.values, tmp)
    reset(spec, table, target)
    columns = column_types(target, table, [*sel.keys, *sel.values, sel.document])
    for _ in range(repeat):
        reset(spec, table, target)
        phases = driver.run_connector(spec, files, tmp / f"{table}.log", target.dsn if cpu else None)
        for r, phase in zip(results, phases, strict=True):
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
        for name in peer_names:
            if name in peer_errors:
                for r in results:
                    r.errors[name] = peer_errors[name]
            else:
                run_peer_phases(name, wl, table, files, results, target, tmp)
            report(results, name)
    for t in files:
        for path in (t.stores, t.loads):
            if path:
                path.unlink()
    return results


def run_peer_phases(
    name: str, wl: Workload, table: str, files: list[driver.TxnFiles], results: list[Result], target: Target, tmp: Path
) -> None:
    """The workload's transactions in order through one peer, from an empty schema; each phase's
    row counts checked against the transactions so far. A failure ends the peer's run here and is
    recorded against this phase and the ones after it (they would merge into a wrong table)."""
    for i, (r, t) in enumerate(zip(results, files, strict=True)):
        assert t.stores is not None
        try:
            if i == 0:
                peers.reset(name, target, tmp)
            checkpoint(target)
            phase = peers.run_peer(name, target, table, t.stores, i, wl.schema, tmp)
            ok, text = peers.check_rows(name, target, table, wl.txns[: i + 1])
        except Exception as e:  # whatever a peer does wrong is reported, never fatal to the benchmark
            for later in results[i:]:
                later.errors[name] = f"{type(e).__name__}: {e}"
            return
        r.runs.setdefault(name, []).append(phase)
        print(f"   {r.phase:<7} {name:<10} check: {text}", flush=True)
        if not ok:
            r.errors[name] = f"row check: {text}"


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
        if method in r.errors:
            print(f"   {r.phase:<7} {method:<10} FAILED: {r.errors[method][-500:]}", flush=True)


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
    results: list[Result],
    memory: list[tuple[str, int, int, driver.Phase]],
    target: Target,
    args: Any,
    extras: Extras | None = None,
) -> None:
    data = args.out.with_suffix(".json")
    data.write_bytes(
        msgspec.json.format(
            msgspec.json.encode(
                [{**r.__dict__, "runs": {k: [p.__dict__ for p in v] for k, v in r.runs.items()}} for r in results]
            ),
            indent=2,
        )
    )
    # Named after the report, lower case: bench/RESULTS.md links bench/results.png.
    chart = args.out.with_name(args.out.stem.lower() + ".png")
    chart_error = draw_chart(data, chart)
    names: list[str] = args.peers
    lines = [
        "# Benchmark results",
        "",
        f"Run {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC with `bench/run {' '.join(sys.argv[1:])}`.",
        "",
        *machine(target, names),
        "",
        "Throughput is documents (and document JSON bytes) per second of one transaction, from its first",
        "request to `startedCommit` for the connector (a separate process fed the protocol on stdin), from",
        "the first row to the commit for a baseline (its own process, already connected). Best of",
        f"{args.repeat} run(s) each. Peak RSS is the whole process's high-water mark (VmHWM).",
    ]
    if names:
        lines += [
            f"Peers ({', '.join(names)}; see Peers below) load the same documents into their own schemas, timed",
            "from their start (imports done, not yet connected) to the end of their load; `vs <peer>` is the",
            "connector's docs/s over the peer's.",
        ]
    lines += ["", *results_table(results, names), ""]
    lines += [f"![docs/s per workload phase]({chart.name})" if chart_error is None else f"No chart: {chart_error}", ""]
    if names:
        lines += peers_section(results, names)
    if args.cpu:
        lines += cpu_section(results)
    if memory:
        lines += memory_section(memory)
    if extras and extras.big:
        lines += bigtable.section(extras.big)
    if extras and extras.shards:
        lines += shards.section(extras.shards, args.shards_txn_size)
    args.out.write_text("\n".join(lines) + "\n")
    print(f"wrote {args.out}" + ("" if chart_error else f" and {chart}"))


def results_table(results: list[Result], names: list[str]) -> list[str]:
    head = "| workload | txn | kind | docs | MB | connector docs/s | MB/s | RSS MiB | copy | stage | rows "
    head += "| vs best | vs rows "
    head += "".join(f"| {n} | vs {n} " for n in names)
    align = "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:" + "|---:|---:" * len(names)
    return [head + "| target |", align + "|---|", *(row(r, names) for r in results)]


def row(r: Result, names: list[str]) -> str:
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
    cells += [f"{vs_best:.2f}x", f"{vs_rows:.2f}x", *(c for n in names for c in peer_cells(r, n))]
    return (
        f"| {r.workload} | {r.phase} | {r.kind} | {r.docs:,} | {r.doc_bytes / 1e6:,.0f} "
        f"| {r.rate('connector'):,.0f} | {r.doc_bytes / conn.seconds / 1e6:.1f} | {conn.peak_rss_kb / 1024:.0f} "
        f"| {' | '.join(cells)} | {'met' if ok else 'MISSED'} |"
    )


def peer_cells(r: Result, name: str) -> tuple[str, str]:
    """The peer's docs/s and the connector's ratio to it; a failed run or row check shows as such."""
    if name in r.errors:
        return ("failed", "")
    if not r.best(name):
        return ("", "")
    return (f"{r.rate(name):,.0f}", f"{r.rate('connector') / r.rate(name):.2f}x")


def peers_section(results: list[Result], names: list[str]) -> list[str]:
    lines = [
        "## Peers",
        "",
        "Each peer runs from its own virtualenv (bench/.venvs/<name>), on the documents of the same store lines,",
        "into its own schema, dropped before each workload (bench/README.md has the details):",
        "",
        '- dlt: postgres destination, `write_disposition="merge"`, `primary_key="id"` (its default delete-insert',
        '  merge through a staging schema), `loader_file_format="csv"`, `_meta` flattened by dlt; tombstones',
        "  hard-deleted (`hard_delete` column hint); `_seq`, a document's position in its transaction, hinted",
        "  `dedup_sort` so the last document of a key wins.",
        "- target-postgres: Singer SCHEMA/RECORD messages on stdin, `key_properties: [id]`, `load_method: upsert`,",
        "  `use_copy: true`; tombstones soft-deleted (`_sdc_deleted_at` set), as Singer targets do.",
        "",
        "| workload | txn | connector RSS MiB | " + " | ".join(f"{n} RSS MiB" for n in names) + " |",
        "|---|---|---:|" + "---:|" * len(names),
    ]
    for r in results:
        rss = [f"{p.peak_rss_kb / 1024:.0f}" if (p := r.best(n)) else "" for n in ["connector", *names]]
        lines.append(f"| {r.workload} | {r.phase} | {' | '.join(rss)} |")
    errors = [f"- {r.workload}, {r.phase}, {n}: {r.errors[n][-1000:]}" for r in results for n in names if n in r.errors]
    errors = [e.replace("\n", " / ") for e in errors]  # one list item each, whatever the error text holds
    if errors:
        lines += ["", "Peer failures:", "", *errors]
    return [*lines, ""]


def cpu_section(results: list[Result]) -> list[str]:
    lines = [
        "## CPU per GB: connector vs server",
        "",
        "CPU seconds (user + system, from /proc) per GB of document JSON, over each phase of the best run. Client:",
        "the connector process (or the baseline's); server: the whole local PostgreSQL cluster (every backend,",
        "background process and autovacuum worker, exited ones included), so it also counts background work the",
        "phase did not cause; backends: only the ones serving the client's own connections. For the baselines,",
        "`copy` for inserts and `stage` for merges, measured over their timed section. Target: the connector",
        "below one third of the server.",
        "",
        "| workload | txn | GB | connector s/GB | server s/GB | backends s/GB | connector/server | target "
        "| copy/stage s/GB | server s/GB | backends s/GB | baseline/server |",
        "|---|---|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|",
    ]
    for r in results:
        conn = r.best("connector")
        if conn is None or conn.cpu_s is None:
            continue
        gb = r.doc_bytes / 1e9
        base = r.best("copy" if r.kind == "insert" else "stage")
        ratio = conn.cpu_s / conn.server_cpu_s if conn.server_cpu_s else None
        verdict = "" if ratio is None else ("met" if ratio < 1 / 3 else "MISSED")
        lines.append(
            f"| {r.workload} | {r.phase} | {gb:.3f} | {_per(conn.cpu_s, gb)} | {_per(conn.server_cpu_s, gb)} "
            f"| {_per(conn.backend_cpu_s, gb)} | {_ratio(conn.cpu_s, conn.server_cpu_s)} | {verdict} "
            f"| {' | '.join(_baseline_cpu(base, gb))} |"
        )
    return [*lines, ""]


def _baseline_cpu(p: driver.Phase | None, gb: float) -> list[str]:
    if p is None or p.cpu_s is None:
        return ["", "", "", ""]
    return [_per(p.cpu_s, gb), _per(p.server_cpu_s, gb), _per(p.backend_cpu_s, gb), _ratio(p.cpu_s, p.server_cpu_s)]


def _per(seconds: float | None, gb: float) -> str:
    return "" if seconds is None or not gb else f"{seconds / gb:,.1f}"


def _ratio(client: float | None, server: float | None) -> str:
    return "" if client is None or not server else f"{client / server:.2f}"


def memory_section(memory: list[tuple[str, int, int, driver.Phase]]) -> list[str]:
    lines = ["## Memory: one large transaction through the connector", ""]
    lines += [
        "| run | docs | doc size | seconds | docs/s | MB/s | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, docs, size, p in memory:
        lines.append(
            f"| {name} | {docs:,} | {size:,} | {p.seconds:.0f} | {docs / p.seconds:,.0f} "
            f"| {docs * size / p.seconds / 1e6:.1f} | {p.peak_rss_kb / 1024:.0f} |"
        )
    return [*lines, ""]


def draw_chart(data: Path, png: Path) -> str | None:
    """bench/plot.py, with matplotlib from its own virtualenv (never a project dependency); the
    reason on failure, for the report."""
    try:
        python = peers.ensure_venv("plot", peers.PLOT_REQUIREMENTS)
        out = subprocess.run(
            [str(python), "-I", str(HERE / "plot.py"), str(data), str(png)], capture_output=True, text=True
        )
    except (peers.PeerError, OSError) as e:
        return str(e)
    return None if out.returncode == 0 else f"plot.py failed: {out.stderr.strip()[-1000:]}"


def machine(target: Target, peer_names: list[str]) -> list[str]:
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
        *(f"- Peer {line}" for line in peers.versions(peer_names)),
        "- Targets: inserts >= 0.8x the better of copy and rows; merges >= 0.9x the better of stage and rows;",
        "  documents under 4 KiB >= 3x rows; connector peak RSS < 250 MiB.",
    ]


if __name__ == "__main__":
    main()
