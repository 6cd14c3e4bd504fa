"""Per-transaction metrics, logged so that a Flow user sees throughput in the task logs.

Every committed transaction logs one info line with documents and bytes loaded and stored per
binding and the time spent in its load, store and commit phases; every minute a summary line
gives the totals and rates since the connector started.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field

log = logging.getLogger("materialize_postgres.metrics")
SUMMARY_EVERY_S = 60.0


@dataclass
class Transaction:
    bindings: int
    loads: list[int] = field(default_factory=list)
    loaded: int = 0
    stores: list[int] = field(default_factory=list)
    stored_bytes: list[int] = field(default_factory=list)
    started: float = field(default_factory=time.monotonic)
    flushed_at: float = 0.0
    commit_started: float = 0.0

    def __post_init__(self) -> None:
        self.loads = [0] * self.bindings
        self.stores = [0] * self.bindings
        self.stored_bytes = [0] * self.bindings


class Metrics:
    def __init__(self, bindings: list[str]) -> None:
        self.names = bindings
        self.txn = Transaction(len(bindings))
        self.total_docs = self.total_bytes = self.total_txns = 0
        self.since = self.last_summary = time.monotonic()

    def begin(self) -> None:
        self.txn = Transaction(len(self.names))

    def load(self, binding: int) -> None:
        if 0 <= binding < len(self.names):
            self.txn.loads[binding] += 1

    def flushed(self, loaded: int) -> None:
        self.txn.loaded = loaded
        self.txn.flushed_at = time.monotonic()

    def store(self, binding: int, size: int) -> None:
        if 0 <= binding < len(self.names):
            self.txn.stores[binding] += 1
            self.txn.stored_bytes[binding] += size

    def commit_started(self) -> None:
        self.txn.commit_started = time.monotonic()

    def committed(self) -> None:
        t, now = self.txn, time.monotonic()
        per_binding = {
            self.names[i]: {"loads": t.loads[i], "stores": t.stores[i], "storedBytes": t.stored_bytes[i]}
            for i in range(len(self.names))
            if t.loads[i] or t.stores[i]
        }
        flushed = t.flushed_at or t.started
        log.info(
            "transaction committed",
            extra={
                "fields": {
                    "loaded": t.loaded,
                    "stores": sum(t.stores),
                    "storedBytes": sum(t.stored_bytes),
                    "loadSeconds": round(flushed - t.started, 3),
                    "storeSeconds": round((t.commit_started or now) - flushed, 3),
                    "commitSeconds": round(now - (t.commit_started or now), 3),
                    "bindings": per_binding,
                }
            },
        )
        self.total_docs += sum(t.stores)
        self.total_bytes += sum(t.stored_bytes)
        self.total_txns += 1
        if now - self.last_summary >= SUMMARY_EVERY_S:
            self.summary(now)

    def summary(self, now: float | None = None) -> None:
        now = now or time.monotonic()
        elapsed = max(now - self.since, 1e-9)
        self.last_summary = now
        log.info(
            "throughput",
            extra={
                "fields": {
                    "transactions": self.total_txns,
                    "documents": self.total_docs,
                    "bytes": self.total_bytes,
                    "docsPerSecond": round(self.total_docs / elapsed, 1),
                    "MBPerSecond": round(self.total_bytes / elapsed / 1e6, 2),
                    "seconds": round(elapsed, 1),
                }
            },
        )
