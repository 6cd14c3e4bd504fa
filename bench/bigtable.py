"""Loads and a merge against a big table (`bench/run --big-table N`).

A table of N rows, made by the connector's Apply and filled server-side with documents shaped like
the generated `small` workload's (170 B), holds the even ids 0, 2, ..., 2(N-1): an odd id is a key
inside the stored range that is absent, so the runtime would still load it (it skips only keys
above the largest stored one). Then:

- loads: transactions of K load keys (100k by default), spread evenly over the table and shuffled,
  of which 0%, 50% and 100% are present; through the connector (loads, flush, count `loaded` until
  `flushed`; then a commit with no stores) and through the `load` and `load-index` baselines of
  bench/baselines.py (binary COPY of the keys into a temporary table, one join, every document
  fetched; the join the planner's choice, or an index nested loop);
- a merge: K documents, half updates of stored keys spread over the table and half new (odd) keys,
  with their loads, into the big table and into a table holding only the rows the merge updates;
  the ratio of their times shows what the table's size costs a merge.

The big table is kept between runs when its rows are as filled (the fill of 10M rows takes minutes);
the merge's new rows are deleted again after it. `--drop-big-table` drops it at the end.
"""

from __future__ import annotations

import os
import random
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
from psycopg import sql

from bench import driver, workloads
from bench.target import Target, catalog_spec, checkpoint, column_types, reset
from bench.workloads import ITEMS_SCHEMA, Txn, Workload
from materialize_postgres.protocol.messages import MaterializationSpec

TABLE = "bench_big"
REF = "bench_big_ref"  # the merge's small table
DOC_SIZE = 170
CASES = (0.0, 0.5, 1.0)  # fractions of the load keys present
BASELINES = ("load", "load-index")  # the planner's join, an index nested loop
# Flow's UUID clock of key 0's document (bench/workloads.flow_uuid), in 100 ns ticks since 1582.
UUID_T0 = 0x01B21DD213814000 + 1_761_955_200 * 10_000_000

# One row per id, as bench/workloads.document() makes it for op "c": the document's JSON text
# built piece by piece, keys sorted as Flow serializes them, its payload padded to `size` bytes.
FILL = """
INSERT INTO {table} (id, "_meta/op", flow_published_at, payload, val, flow_document)
SELECT id, 'c', to_timestamp(1761955200) + id * interval '1 microsecond', payload, val,
       (head || payload || tail)::json
FROM (SELECT 2 * %(stride)s::int8 * i AS id FROM generate_series(%(first)s::int8, %(last)s::int8) AS i) AS k,
LATERAL (SELECT id * 7 %% 1000 AS val, %(t0)s::int8 + id * 10 AS t) AS v,
LATERAL (SELECT '{{"_meta":{{"op":"c","uuid":"'
                || lpad(to_hex(t & 4294967295), 8, '0') || '-' || lpad(to_hex((t >> 32) & 65535), 4, '0') || '-'
                || lpad(to_hex(((t >> 48) & 4095) | 4096), 4, '0') || '-8001-000000000005"}},"id":' || id
                || ',"payload":"' AS head,
                '","val":' || val || '}}' AS tail) AS h,
LATERAL (SELECT left(id || ':c:' || repeat('x', %(size)s), greatest(%(size)s - length(head) - length(tail), 0))
         AS payload) AS p
"""


@dataclass
class LoadCase:
    present: float
    keys: int
    found: int
    runs: dict[str, list[driver.Phase]] = field(default_factory=dict)  # connector, load, load-index

    def best(self, method: str) -> driver.Phase:
        return min(self.runs[method], key=lambda p: p.load_seconds or p.seconds)

    def rate(self, method: str) -> float:
        """Keys per second: the connector's from its first load to `flushed`, a baseline's from its
        first key to its commit, all documents fetched; the best run of each."""
        p = self.best(method)
        return self.keys / (p.load_seconds or p.seconds)

    def baseline_rate(self) -> float:
        """The better baseline: the ceiling a careful user reaches by trying both joins."""
        return max(self.rate(m) for m in BASELINES)


@dataclass
class BigResult:
    target: Target
    rows: int
    keys: int
    size_mb: float
    fill_seconds: float | None  # None: the table of an earlier run was kept
    loads: list[LoadCase]
    ref_rows: int = 0
    merge_big: list[driver.Phase] = field(default_factory=list)
    merge_ref: list[driver.Phase] = field(default_factory=list)


def workload() -> Workload:
    return Workload("big table", "bench/items", ITEMS_SCHEMA, [], [])


def run(rows: int, keys: int, target: Target, tmp: Path, repeat: int, drop_after: bool) -> BigResult:
    keys = min(keys, rows)
    spec = catalog_spec(workload(), TABLE, target, tmp)
    print(f"== big table: {rows:,} rows, {keys:,} keys per transaction", flush=True)
    fill_seconds = ensure_filled(spec, rows, target)
    result = BigResult(target, rows, keys, table_mb(target, TABLE), fill_seconds, [])
    columns = column_types(target, TABLE, ["id", "flow_document"])
    try:
        for present in CASES:
            result.loads.append(run_loads(spec, present, result, columns, tmp, repeat))
        run_merges(spec, result, tmp, repeat)
    finally:
        if drop_after:
            drop(target)
    return result


# ---------------------------------------------------------------------------------------------
# The table.


def filled_rows(target: Target, table: str) -> int | None:
    """The table's row count if it holds only even ids, 0 up to 2(count-1); None otherwise."""
    with psycopg.connect(target.dsn) as conn:
        if conn.execute("SELECT to_regclass(%s)", [table]).fetchone() == (None,):
            return None
        count, odd, top = conn.execute(
            sql.SQL("SELECT count(*), count(*) FILTER (WHERE id % 2 = 1), max(id) FROM {}").format(
                sql.Identifier(table)
            )
        ).fetchone() or (0, 0, None)
    return count if odd == 0 and top == 2 * (count - 1) else None


def ensure_filled(spec: MaterializationSpec, rows: int, target: Target) -> float | None:
    """Fills the table unless it already holds `rows` rows as filled; the seconds the fill took."""
    if filled_rows(target, TABLE) == rows:
        print(f"   {TABLE}: kept from an earlier run ({rows:,} rows)", flush=True)
        # No Apply: the table exists, and Apply refuses to adopt a table for a binding it has never
        # applied (it keeps no record of the earlier run's spec). Open needs none.
        return None
    start = time.perf_counter()
    reset(spec, TABLE, target)
    fill(target, TABLE, rows, stride=1)
    seconds = time.perf_counter() - start
    print(f"   {TABLE}: filled {rows:,} rows in {seconds:.0f} s", flush=True)
    return seconds


def fill(target: Target, table: str, rows: int, stride: int) -> None:
    """Rows of ids 2 * stride * i for i < rows, then VACUUM ANALYZE, so that the measured loads
    find the visibility map and hint bits set and the planner its statistics. The server does the
    work and one INSERT ... SELECT keeps one core busy: the range is split across one connection
    per CPU, each in its own thread (psycopg waits for the server without holding the GIL)."""
    parts = max(1, min(os.cpu_count() or 1, rows // 100_000))
    bounds = [rows * n // parts for n in range(parts + 1)]
    statement = sql.SQL(FILL).format(table=sql.Identifier(table))

    def insert(first: int, last: int) -> None:
        params = {"stride": stride, "first": first, "last": last, "t0": UUID_T0, "size": DOC_SIZE}
        with psycopg.connect(target.dsn, autocommit=True) as conn:
            conn.execute(statement, params)

    with ThreadPoolExecutor(parts) as pool:
        for done in [pool.submit(insert, bounds[n], bounds[n + 1] - 1) for n in range(parts)]:
            done.result()
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(table)))


def table_mb(target: Target, table: str) -> float:
    with psycopg.connect(target.dsn) as conn:
        (size,) = conn.execute("SELECT pg_total_relation_size(%s)", [table]).fetchone() or (0,)
    return size / 1e6


# ---------------------------------------------------------------------------------------------
# Loads.


def load_keys(rows: int, keys: int, present: float) -> list[int]:
    """`keys` ids spread evenly over the table, the fraction `present` of them stored ones (even),
    the rest the absent odd id next to a stored one; shuffled, as a transaction's keys arrive in
    no particular order (the same order for every run)."""
    step = max(1, rows // keys)
    # Key i is present when the running count of present keys steps up there: 50% alternates.
    ids = [2 * step * i + (0 if int((i + 1) * present) > int(i * present) else 1) for i in range(keys)]
    random.Random(keys).shuffle(ids)
    return ids


def write_loads(path: Path, ids: list[int]) -> Path:
    with path.open("wb") as f:
        for key in ids:
            f.write(b'{"load":{"keyPacked":"%s"}}\n' % workloads.packed([key]).encode())
    return path


def run_loads(
    spec: MaterializationSpec, present: float, result: BigResult, columns: list[dict[str, Any]], tmp: Path, repeat: int
) -> LoadCase:
    target = result.target
    ids = load_keys(result.rows, result.keys, present)
    case = LoadCase(present, len(ids), sum(1 for k in ids if k % 2 == 0))
    loads = write_loads(tmp / f"{TABLE}.{present:.2f}.loads", ids)
    for _ in range(repeat):
        # A loads-only transaction: its time to `flushed` is the load's (Phase.load_seconds); the
        # commit that follows has no stores.
        txn = driver.TxnFiles(None, loads, "load", lines=[])
        [phase] = driver.run_connector(spec, [txn], tmp / f"{TABLE}.log", target.dsn)
        case.runs.setdefault("connector", []).append(_checked(phase, case.found, "connector loads"))
        for method in BASELINES:
            base = driver.run_baseline(method, target.dsn, TABLE, columns, loads)
            case.runs.setdefault(method, []).append(_checked(base, case.found, f"{method} baseline"))
    loads.unlink()
    print(
        f"   loads {present:>4.0%} present: connector {case.rate('connector'):>9,.0f} keys/s, "
        f"baselines {case.rate('load'):>9,.0f} ({case.best('load').plan}) and {case.rate('load-index'):>9,.0f} keys/s",
        flush=True,
    )
    return case


def _checked(phase: driver.Phase, want: int, what: str) -> driver.Phase:
    if phase.loaded != want:
        raise RuntimeError(f"{what}: {phase.loaded:,} documents loaded, {want:,} expected")
    return phase


# ---------------------------------------------------------------------------------------------
# Merges.


def merge_txn(rows: int, docs: int) -> Txn:
    """The `small` workload's merge: half updates of stored keys spread over the table, half new
    keys (odd ids between stored ones, so the runtime loads them too)."""
    half = docs // 2
    step = max(1, rows // half)
    ops = [(2 * step * i, "u") for i in range(half)] + [(2 * step * i + 1, "c") for i in range(docs - half)]
    return Txn(ops, DOC_SIZE)


def write_merge(spec: MaterializationSpec, txn: Txn, tmp: Path) -> driver.TxnFiles:
    values = spec.bindings[0].field_selection.values
    stores, loads = tmp / f"{TABLE}.merge.stores", tmp / f"{TABLE}.merge.loads"
    with stores.open("wb") as f:
        for line in workloads.store_lines(workload(), txn, values, hard_delete=True):
            f.write(line + b"\n")
    top = max(k for k, _ in txn.ops)
    loads.write_bytes(b"".join(line + b"\n" for line in workloads.load_lines(txn, top)))
    return driver.TxnFiles(stores, loads, "merge")


def run_merges(spec: MaterializationSpec, result: BigResult, tmp: Path, repeat: int) -> None:
    """The same merge into the big table and into one holding only the rows it updates."""
    target = result.target
    txn = merge_txn(result.rows, result.keys)
    files = write_merge(spec, txn, tmp)
    updates = sum(1 for _, op in txn.ops if op == "u")
    ref = catalog_spec(workload(), REF, target, tmp)
    result.ref_rows = updates
    try:
        for _ in range(repeat):
            checkpoint(target)
            result.merge_big.append(_merge(spec, files, updates, result, tmp))
            restore(target)
            reset(ref, REF, target)
            fill(target, REF, updates, stride=max(1, result.rows // updates))
            checkpoint(target)
            result.merge_ref.append(_merge(ref, files, updates, result, tmp))
    finally:
        with psycopg.connect(target.dsn, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{REF}"')
        for path in (files.stores, files.loads):
            if path:
                path.unlink()
    big, small = best(result.merge_big), best(result.merge_ref)
    print(
        f"   merge {txn.docs:,} docs: {big.seconds:.2f} s into {result.rows:,} rows, "
        f"{small.seconds:.2f} s into {updates:,} rows ({big.seconds / small.seconds:.2f}x)",
        flush=True,
    )


def _merge(
    spec: MaterializationSpec, files: driver.TxnFiles, updates: int, result: BigResult, tmp: Path
) -> driver.Phase:
    """One merge session, with the WAL it wrote: after the CHECKPOINT before it, the
    first change to each page writes the whole page (full_page_writes), which is what updates spread
    over a table far larger than shared_buffers cost, and what a small table hardly pays."""
    before = wal_lsn(result.target)
    log = tmp / f"{spec.bindings[0].resource_path[-1]}.merge.log"  # one per table, for --keep
    [phase] = driver.run_connector(spec, [files], log, result.target.dsn)
    phase.wal_mb = (wal_lsn(result.target) - before) / 1e6
    return _checked(phase, updates, "merge loads")


def wal_lsn(target: Target) -> int:
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        (lsn,) = conn.execute("SELECT pg_current_wal_lsn() - '0/0'::pg_lsn").fetchone() or (0,)
    return int(lsn)


def restore(target: Target) -> None:
    """The merge's new (odd) rows deleted and vacuumed away: the big table is as filled again but
    for the updated documents, and is kept for the next run."""
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute(sql.SQL("DELETE FROM {} WHERE id % 2 = 1").format(sql.Identifier(TABLE)))
        conn.execute(sql.SQL("VACUUM ANALYZE {}").format(sql.Identifier(TABLE)))


def best(phases: list[driver.Phase]) -> driver.Phase:
    return min(phases, key=lambda p: p.seconds)


# ---------------------------------------------------------------------------------------------
# The report.


def section(r: BigResult) -> list[str]:
    filled = f"filled in {r.fill_seconds:.0f} s" if r.fill_seconds is not None else "kept from an earlier run"
    lines = [
        f"## Loads and a merge against a table of {r.rows:,} rows",
        "",
        f"`--big-table {r.rows}`: the connector's table of the `small` workload, {r.rows:,} rows of 170 B documents",
        f"({r.size_mb:,.0f} MB with its index; {filled}, then VACUUM ANALYZE), stored ids even, absent ids odd.",
        f"Each load transaction asks for {r.keys:,} keys spread evenly over the table, shuffled. The connector's",
        "time runs from its first `load` to `flushed` (every `loaded` line read; a commit with no stores follows,",
        "untimed); a baseline's (bench/baselines.py) from its first key to its commit: binary COPY of the keys",
        "into a temporary table, ANALYZE, one join against the table returning `flow_document`, every row fetched",
        "as bytes; `load` leaves the join to the planner (its choice shown), `load-index` disables hash and merge",
        "joins (an index nested loop, as the connector does). Best of the runs. Target: connector >= 0.8x the",
        "better baseline. CPU: the connector's process and the whole server over the transaction.",
        "",
        "| present | keys | found | connector keys/s | load keys/s | its join | load-index keys/s | vs better "
        "| connector CPU s | server CPU s | target |",
        "|---:|---:|---:|---:|---:|---|---:|---:|---:|---:|---|",
    ]
    for c in r.loads:
        ratio = c.rate("connector") / c.baseline_rate()
        p = c.best("connector")
        verdict = "met" if ratio >= 0.8 else "MISSED"
        lines.append(
            f"| {c.present:.0%} | {c.keys:,} | {c.found:,} | {c.rate('connector'):,.0f} | {c.rate('load'):,.0f} "
            f"| {c.best('load').plan or ''} | {c.rate('load-index'):,.0f} | {ratio:.2f}x | {_secs(p.cpu_s)} "
            f"| {_secs(p.server_cpu_s)} | {verdict} |"
        )
    return [*lines, "", *merge_lines(r), ""]


def merge_lines(r: BigResult) -> list[str]:
    if not r.merge_big or not r.merge_ref:
        return []
    big, ref = best(r.merge_big), best(r.merge_ref)
    docs = r.keys
    ratio = big.seconds / ref.seconds
    lines = [
        f"Merge: the `small` workload's merge shape, {docs:,} documents (half updates of stored keys spread over",
        "the table, half new keys between them) with their loads, from its first request to `startedCommit`, into",
        f"the big table and into a table holding only the {r.ref_rows:,} rows it updates. Target: the big table's",
        "time within 2x the small one's.",
        "",
        "| into | rows | docs | seconds | docs/s | loaded | connector CPU s | server CPU s | WAL MB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, rows, p in (("big table", r.rows, big), ("small table", r.ref_rows, ref)):
        lines.append(
            f"| {name} | {rows:,} | {docs:,} | {p.seconds:.2f} | {docs / p.seconds:,.0f} | {p.loaded:,} "
            f"| {_secs(p.cpu_s)} | {_secs(p.server_cpu_s)} | {p.wal_mb or 0:,.0f} |"
        )
    return [*lines, "", f"Big over small: {ratio:.2f}x ({'met' if ratio <= 2 else 'MISSED'})."]


def _secs(value: float | None) -> str:
    return "" if value is None else f"{value:.2f}"


def drop(target: Target) -> None:
    """`--drop-big-table` without `--big-table`: the kept table removed."""
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        conn.execute(f'DROP TABLE IF EXISTS "{TABLE}"')
