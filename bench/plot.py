"""Draws the report's chart; run by bench/.venvs/plot's python (matplotlib is no project dependency).

    python -I bench/plot.py RESULTS_JSON PNG

A grouped bar chart of docs/s for each workload phase, one bar per method: the connector, the
baselines and the peers. The y axis is logarithmic: 1 MiB documents load at tens of docs/s and
170 B ones at a hundred thousand, and both must stay readable.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # no display: write the file only

import matplotlib.pyplot as plt

# copy and stage never run on the same phase (copy inserts, stage merges): one series, one colour.
SERIES = {
    "connector": ("connector",),
    "copy / stage": ("copy", "stage"),
    "rows": ("rows",),
    "dlt": ("dlt",),
    "target-postgres": ("target-postgres",),
}


def best_rate(result: dict[str, Any], methods: tuple[str, ...]) -> float:
    """The best docs/s among the runs of these methods, 0 if none ran (or its figure is invalid)."""
    runs = [
        p["seconds"]
        for m in methods
        if m not in result.get("errors", {})
        for p in result["runs"].get(m, [])
        if p["seconds"] > 0
    ]
    return result["docs"] / min(runs) if runs else 0.0


def draw(results: list[dict[str, Any]], png: Path) -> None:
    series = {name: [best_rate(r, ms) for r in results] for name, ms in SERIES.items()}
    series = {name: rates for name, rates in series.items() if any(rates)}
    width = 0.8 / max(len(series), 1)
    fig, ax = plt.subplots(figsize=(max(8.0, 1.3 * len(results) * max(len(series), 1) * 0.4), 5.5))
    for i, (name, rates) in enumerate(series.items()):
        xs = [x + (i - (len(series) - 1) / 2) * width for x in range(len(results))]
        bars = ax.bar(xs, [r or float("nan") for r in rates], width, label=name)
        ax.bar_label(bars, labels=[f"{r:,.0f}" if r else "" for r in rates], fontsize=6, rotation=90, padding=2)
    ax.set_xticks(range(len(results)), [f"{r['workload']}\n{r['phase']}" for r in results], fontsize=8)
    ax.set_yscale("log")
    ax.set_ylabel("documents / second (log scale)")
    ax.set_title("Throughput per workload phase (best run of each method)")
    ax.legend(fontsize=8, ncols=len(series))
    ax.margins(y=0.15)
    fig.tight_layout()
    fig.savefig(png, dpi=120)


if __name__ == "__main__":
    data, out = sys.argv[1:]
    draw(json.loads(Path(data).read_text()), Path(out))
