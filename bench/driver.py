"""Runs one workload through one store method and times each transaction.

The connector runs as Flow runs it: a `materialize-postgres connector` process fed protocol
lines on stdin. The driver plays the runtime: it loads only keys at or below the largest key
stored so far (the runtime's max-key optimisation), waits for `flushed`, streams the stores,
and times each transaction from its first request to `startedCommit`.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import msgspec

from bench import cpu
from materialize_postgres.protocol.messages import MaterializationSpec
from materialize_postgres.runner.runtime import ProcessConnector, Runtime

BASELINES = {"copy", "stage", "rows"}


@dataclass
class Phase:
    seconds: float
    peak_rss_kb: int
    loaded: int = 0
    # CPU seconds over the phase (bench/cpu.py): the measured process's own, the whole local
    # cluster's, and the backends serving the process's connections; None when not measured.
    cpu_s: float | None = None
    server_cpu_s: float | None = None
    backend_cpu_s: float | None = None
    load_seconds: float | None = None  # from the first load to `flushed` (connector phases)
    plan: str | None = None  # the join the planner chose (the `load` baseline)
    wal_mb: float | None = None  # WAL written over the phase (the big-table merges)


@dataclass
class TxnFiles:
    stores: Path | None  # protocol `store` lines; None for generated-on-the-fly memory runs
    loads: Path
    kind: str  # "insert" (new keys only) or "merge"
    lines: Iterable[bytes] | None = None


def connector_command() -> list[str]:
    return [sys.executable, "-m", "materialize_postgres", "connector"]


def apply(spec: MaterializationSpec) -> None:
    rt = Runtime(ProcessConnector(connector_command()), spec)
    try:
        rt.validate_and_apply()
    finally:
        rt.close()


def peak_rss_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def run_connector(
    spec: MaterializationSpec,
    txns: list[TxnFiles],
    log: Path,
    dsn: str | None = None,
    opened: Callable[[int], None] | None = None,
) -> list[Phase]:
    """Runs the transactions through one connector session; with `dsn`, also measures each phase's
    CPU split between the connector and the server (bench/cpu.py). `opened` is called with the
    connector's pid once its session is open (to attach a profiler)."""
    connector = ProcessConnector(connector_command())
    rt = Runtime(connector, spec)
    rt.open()
    connector.acknowledge()
    proc = connector.proc
    assert proc is not None and proc.stdin is not None and proc.stdout is not None
    if opened:
        opened(proc.pid)
    split: cpu.Split | None = None
    phases = []
    try:
        if dsn:
            split = cpu.Split(proc.pid, dsn, cpu.Server.of(dsn), "materialize-postgres ")
        for n, t in enumerate(txns):
            before = split.start() if split else None
            start = time.perf_counter()
            loaded = _loads(proc, t.loads)
            load_seconds = time.perf_counter() - start
            _stores(proc, t)
            checkpoint = b'{"sources":{"bench/pivot=00":{"readThrough":"%d"}}}' % (n + 1)
            proc.stdin.write(b'{"startCommit":{"runtimeCheckpoint":%s}}\n' % checkpoint)
            proc.stdin.flush()
            _expect(connector, "startedCommit")
            seconds = time.perf_counter() - start
            phase = Phase(seconds, peak_rss_kb(proc.pid), loaded, load_seconds=load_seconds)
            connector.acknowledge()
            # Sampled after the acknowledgement, so that work the connector defers past its commit
            # counts too; outside the timed section, which reading /proc would otherwise lengthen.
            if split and before is not None:
                phase.cpu_s, phase.server_cpu_s, phase.backend_cpu_s = split.since(before)
            phases.append(phase)
    except (BrokenPipeError, RuntimeError) as e:
        raise RuntimeError(f"connector failed: {e}: {connector.stderr_tail()}") from e
    finally:
        if split:
            split.close()
        log.write_text("".join(x.decode(errors="replace") for x in connector.stderr_lines))
        connector.close()
    return phases


def _loads(proc: subprocess.Popen[bytes], loads: Path) -> int:
    """Stream the loads and the flush; count `loaded` until `flushed`."""
    assert proc.stdin is not None and proc.stdout is not None
    stdin = proc.stdin

    def feed() -> None:
        _send_file(stdin, loads)
        stdin.write(b'{"flush":{}}\n')
        stdin.flush()

    writer = threading.Thread(target=feed, daemon=True)
    writer.start()
    loaded = 0
    for line in proc.stdout:
        if line.startswith(b'{"loaded"'):
            loaded += 1
        elif line.startswith(b'{"flushed"'):
            break
        else:
            raise RuntimeError(f"unexpected response during loads: {line[:200]!r}")
    writer.join()
    return loaded


def _stores(proc: subprocess.Popen[bytes], t: TxnFiles) -> None:
    assert proc.stdin is not None
    if t.stores is not None:
        _send_file(proc.stdin, t.stores)
    else:
        assert t.lines is not None
        batch: list[bytes] = []
        for line in t.lines:
            batch.append(line)
            if len(batch) >= 512:
                proc.stdin.write(b"\n".join(batch) + b"\n")
                batch.clear()
        if batch:
            proc.stdin.write(b"\n".join(batch) + b"\n")


def _send_file(pipe: Any, path: Path) -> None:
    """The kernel copies the file into the pipe: the stand-in runtime spends next to no CPU."""
    pipe.flush()
    with path.open("rb") as f:
        size, offset = os.fstat(f.fileno()).st_size, 0
        while offset < size:
            offset += os.sendfile(pipe.fileno(), f.fileno(), offset, size - offset)


def _expect(connector: ProcessConnector, kind: str) -> Any:
    msg = connector.recv()
    if kind not in msg:
        raise RuntimeError(f"expected {kind}, got {msgspec.json.encode(msg)[:300]!r}")
    return msg[kind]


def run_baseline(method: str, dsn: str, table: str, columns: list[dict[str, Any]], stores: Path) -> Phase:
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.baselines",
            method,
            dsn,
            table,
            msgspec.json.encode(columns).decode(),
            str(stores),
        ],
        capture_output=True,
        cwd=Path(__file__).parent.parent,
    )
    if out.returncode != 0:
        raise RuntimeError(f"baseline {method} failed: {out.stderr.decode(errors='replace')[-3000:]}")
    report = msgspec.json.decode(out.stdout.splitlines()[-1])
    return Phase(
        report["seconds"],
        report["peak_rss_kb"],
        report.get("loaded", 0),
        report.get("cpu_s"),
        report.get("server_cpu_s"),
        report.get("backend_cpu_s"),
        plan=report.get("plan"),
    )
