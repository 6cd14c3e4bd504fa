"""py-spy profiles of the connector's hot path, one per generated workload.

    bench/profile                       # small, medium and large, written to bench/profiles/
    bench/profile --workloads small --scale 0.3 --out /tmp/prof

Each workload's insert and merge transactions run through the connector process exactly as in
bench/run (same inputs, same table, same driver), with py-spy attached to the process once its
session is open; py-spy is installed into bench/.venvs/profile (no project dependency). Per workload it writes:

- `<name>.collapsed`: every sampled stack, one line each with its count (py-spy's raw format, which
  flamegraph.pl and https://speedscope.app draw);
- `<name>.txt`: the heaviest functions of the transaction path (the serve loop and below; start-up,
  Spec, Apply and Open left out), by own time and including what they call.

Sampling slows the connector down, so these runs report no throughput; bench/run measures that.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import psycopg

from bench import driver, peers, workloads
from bench.__main__ import write_inputs
from bench.target import Target, catalog_spec, ensure_database, reset

HERE = Path(__file__).resolve().parent
RATE = 250  # samples per second
TOP = 25


def main() -> None:
    args = parse_args()
    target = Target(args.host, args.port, args.user, args.database)
    ensure_database(target)
    py_spy = peers.ensure_venv("profile", ("py-spy",)).parent / "py-spy"
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="mp-profile-") as tmp:
        for name in args.workloads:
            wl = workloads.GENERATED[name](args.scale)
            raw = args.out / f"{name}.collapsed"
            profile(wl, f"profile_{name}", target, Path(tmp), py_spy, raw)
            text = summary(raw, f"{wl.name}: {' + '.join(wl.phases)} through the connector, {RATE} samples/s")
            (args.out / f"{name}.txt").write_text(text)
            print(f"== {wl.name}: {raw} and {name}.txt", flush=True)


def profile(wl: workloads.Workload, table: str, target: Target, tmp: Path, py_spy: Path, raw: Path) -> None:
    spec = catalog_spec(wl, table, target, tmp)
    files, _ = write_inputs(wl, table, spec.bindings[0].field_selection.values, tmp)
    reset(spec, table, target)
    spies: list[subprocess.Popen[bytes]] = []

    def attach(pid: int) -> None:
        # Attached rather than wrapping the command: py-spy writes to stdout, the protocol's channel.
        command = [str(py_spy), "record", "--pid", str(pid), "--rate", str(RATE), "--format", "raw", "--native"]
        spies.append(subprocess.Popen([*command, "-o", str(raw)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE))
        time.sleep(0.5)  # let it attach before the first transaction

    try:
        driver.run_connector(spec, files, tmp / f"{table}.log", opened=attach)
    finally:
        for spy in spies:  # it stops when the connector exits
            _, err = spy.communicate(timeout=60)
            if spy.returncode != 0:
                raise SystemExit(f"py-spy failed (exit {spy.returncode}): {err.decode(errors='replace')[-500:]}")
        for t in files:
            for path in (t.stores, t.loads):
                if path:
                    path.unlink()
        with psycopg.connect(target.dsn, autocommit=True) as conn:
            conn.execute(f'DROP TABLE IF EXISTS "{table}"')


def summary(raw: Path, title: str) -> str:
    """The heaviest frames of the samples taken inside the serve loop."""
    own: Counter[str] = Counter()
    within: Counter[str] = Counter()
    total = 0
    for line in raw.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        frames = stack.split(";")
        serving = [i for i, f in enumerate(frames) if f.startswith("serve (")]
        if not serving or any(f.startswith("_unary (") for f in frames):
            continue
        n = int(count)
        total += n
        own[frames[-1]] += n
        for f in set(frames[serving[0] :]):
            within[f] += n
    out = [title, f"{total} samples in the transaction path", "", "own time:"]
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in own.most_common(TOP)]
    out += ["", "including callees:"]
    out += [f"{100 * n / total:5.1f}%  {f}" for f, n in within.most_common(TOP)]
    return "\n".join(out) + "\n"


def parse_args() -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="bench/profile", description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", type=lambda s: [n for n in s.split(",") if n], default=["small", "medium", "large"])
    p.add_argument("--scale", type=float, default=0.3, help="scale the generated workloads' document counts")
    p.add_argument("--out", type=Path, default=HERE / "profiles")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=5432)
    p.add_argument("--user", default="postgres")
    p.add_argument("--database", default="bench")
    return p.parse_args()


if __name__ == "__main__":
    sys.exit(main())
