"""The standalone runner: a Flow catalog and a stream of documents in, PostgreSQL tables out.

It plays Flow's runtime in-process (runner/runtime.py) around the very same driver the connector
process uses: Validate and Apply, a fenced Open that returns the last committed checkpoint, then
one transaction at a time with loads, reductions, stores and the checkpoint. The checkpoint is the
position in the input, so running the same command again resumes where the last commit left it.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg

from ..driver import settle_heap
from ..embedded import EmbeddedPostgres, default_data_dir
from ..protocol.messages import MaterializationSpec, RangeSpec, parse_raw, raw
from .catalog import Catalog, load_catalog
from .reduce import Reducer, validator
from .runtime import FULL_RANGE, InProcessConnector, Runtime, new_uuid
from .sources import Input, SourceError, Transaction, fixture_transactions, jsonl_transactions

log = logging.getLogger(__name__)
EMBEDDED_DATABASE = "materialize"


class RunError(RuntimeError):
    pass


@dataclass
class Summary:
    documents: int = 0
    transactions: int = 0
    bytes: int = 0
    skipped_transactions: int = 0
    seconds: float = 0.0
    tables: list[str] = field(default_factory=list)
    connect_hint: str = ""
    data_dir: str = ""


class Materialization:
    """A materialization opened from a catalog: feed it transactions, then close it.

    >>> with Materialization.open("flow.yaml") as m:            # doctest: +SKIP
    ...     m.transaction([("acme/orders", {"id": 1, "total": 9.5})])

    Exactly-once across restarts: pass `position` (a number: an offset, a batch id) with each
    transaction; after opening, `committed_position` tells where the last commit left off.
    """

    def __init__(
        self,
        catalog: Catalog,
        spec: MaterializationSpec,
        *,
        validate_documents: bool = True,
        server: EmbeddedPostgres | None = None,
        key_range: RangeSpec = FULL_RANGE,
        apply: bool = True,
    ) -> None:
        self.catalog, self.spec, self.server = catalog, spec, server
        reducers: dict[str, Any] = {}
        self.validators: dict[str, Any] = {}
        for b in spec.bindings:
            coll = catalog.collections[b.collection.name]
            r = Reducer(coll.schema, coll.name)
            reducers[coll.name] = (r.reduce, r.is_delete)
            if validate_documents:
                self.validators[coll.name] = validator(coll.schema)
        self.runtime = Runtime(InProcessConnector(), spec, reducers=reducers, key_range=key_range)
        self.key_range = key_range
        # The runner keeps no history of applied specs: it takes the catalog as the spec that was
        # applied before, so that its own tables are recognised on every run after the first.
        self.actions = self.runtime.validate_and_apply(last=spec) if apply else ""
        self._refuse_a_merged_layout()
        self.checkpoint: dict[str, Any] = self.runtime.open() or {}

    def _refuse_a_merged_layout(self) -> None:
        """Shards may split (each part starts from the narrowest committed range that covers it)
        but never merge back or re-cut across earlier parts: a range that only partly overlaps a
        committed one would inherit an older checkpoint than what that part committed, and apply
        its documents twice."""
        from ..connect import connect, endpoint
        from ..driver import endpoint_config
        from ..identifiers import quote_path
        from ..tables import checkpoints_path

        cfg = endpoint_config(self.spec.config)
        r = self.key_range
        with endpoint(cfg) as target, connect(cfg, target, application="runner", autocommit=True) as conn:
            table = quote_path(checkpoints_path(cfg))
            try:
                # Rows that overlap this range without covering it (parts of it, or straddling it).
                found = conn.execute(
                    f"SELECT count(*) FROM {table} WHERE materialization = %s AND key_begin <= %s AND key_end >= %s "
                    "AND NOT (key_begin <= %s AND key_end >= %s)",
                    [self.spec.name, r.key_end, r.key_begin, r.key_begin, r.key_end],
                ).fetchone()
            except psycopg.errors.UndefinedTable:
                return
        if found and found[0]:
            raise RunError(
                f"materialization {self.spec.name!r} was run split into other key ranges (--shards), and "
                f"{found[0]} of them overlap this run's range {r.key_begin:08x}-{r.key_end:08x} without covering it; "
                "run it with the same --shards as before, or a multiple of it: "
                "other layouts could apply documents twice"
            )

    @classmethod
    def open(
        cls,
        catalog: Path | str,
        materialization: str | None = None,
        *,
        config: dict[str, Any] | None = None,
        embedded: bool | None = None,
        data_dir: Path | None = None,
        validate_documents: bool = True,
        key_range: RangeSpec = FULL_RANGE,
        apply: bool = True,
    ) -> Materialization:
        cat = load_catalog(catalog)
        spec = cat.to_spec(materialization)
        endpoint = dict(config if config is not None else parse_raw(spec.config, {}))
        server = None
        if embedded or (embedded is None and not endpoint.get("address")):
            server, endpoint = start_embedded(endpoint, data_dir or default_data_dir())
        spec.config = raw(endpoint)
        try:
            return cls(
                cat, spec, validate_documents=validate_documents, server=server, key_range=key_range, apply=apply
            )
        except BaseException:
            if server is not None and server.started_here:
                server.stop()
            raise

    @property
    def committed_position(self) -> int | None:
        return self.sources().get("runner")

    def sources(self) -> dict[str, int]:
        """Committed input offsets by source name."""
        return {name: int(s.get("readThrough", "0")) for name, s in (self.checkpoint.get("sources") or {}).items()}

    def transaction(
        self,
        docs: Iterable[tuple[str, Any]],
        *,
        position: int | None = None,
        sources: dict[str, int] | None = None,
        lines: list[int] | None = None,
    ) -> int:
        """Materialize one transaction atomically; returns how many documents it held."""
        batch = self._check(list(docs), lines)
        checkpoint = {"sources": {name: {"readThrough": str(offset)} for name, offset in self.sources().items()}}
        for name, offset in (sources or {}).items():
            checkpoint["sources"][name] = {"readThrough": str(offset)}
        if position is not None:
            checkpoint["sources"]["runner"] = {"readThrough": str(int(position))}
        self.runtime.transaction(batch, checkpoint)
        self.checkpoint = checkpoint
        return len(batch)

    def _check(self, batch: list[tuple[str, Any]], lines: list[int] | None) -> list[tuple[str, Any]]:
        """The batch validated, each document stamped with a `_meta/uuid` (on a copy: the caller's
        documents are left as they were)."""
        out: list[tuple[str, Any]] = []
        for i, (collection, doc) in enumerate(batch):
            if collection not in self.catalog.collections:
                raise RunError(f"{_at(lines, i)}: unknown collection {collection!r}")
            check = self.validators.get(collection)
            problem = check(doc) if check else None
            if problem:
                coll = self.catalog.collections[collection]
                key = [_pointer(doc, ptr) for ptr in coll.key]
                raise RunError(
                    f"{_at(lines, i)}: document with key {key} does not match the schema of "
                    f"{collection!r} {problem}; nothing of this transaction was committed"
                )
            meta = doc.get("_meta", {}) if isinstance(doc, dict) else None
            if isinstance(meta, dict) and "uuid" not in meta:
                doc = {**doc, "_meta": {**meta, "uuid": new_uuid()}}
            out.append((collection, doc))
        return out

    def close(self) -> None:
        try:
            self.runtime.close()
        finally:
            # A server that was already running (`embedded start`) is left running.
            if self.server is not None and self.server.started_here:
                self.server.stop()
            self.server = None

    def __enter__(self) -> Materialization:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _pointer(doc: Any, ptr: str) -> Any:
    from .runtime import MISSING, pointer_get

    v = pointer_get(doc, ptr)
    return None if v is MISSING else v


def _at(lines: list[int] | None, i: int) -> str:
    return f"line {lines[i]}" if lines and i < len(lines) else f"document {i + 1} of the transaction"


# --------------------------------------------------------------------------------------------
# Embedded PostgreSQL.


def start_embedded(endpoint: dict[str, Any], data_dir: Path) -> tuple[EmbeddedPostgres, dict[str, Any]]:
    server = EmbeddedPostgres(data_dir)
    server.start()
    database = endpoint.get("database") or EMBEDDED_DATABASE
    with psycopg.connect(server.dsn("postgres"), autocommit=True) as conn:
        if conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", [database]).fetchone() is None:
            conn.execute(f'CREATE DATABASE "{database}"')
    endpoint = {**endpoint, "address": f"{server.host}:{server.port}", "user": server.user, "database": database}
    endpoint.pop("credentials", None)
    endpoint["password"] = "embedded-trust-auth"  # the embedded server trusts loopback connections
    return server, endpoint


# --------------------------------------------------------------------------------------------
# The `run` command's loop.


@dataclass
class RunOptions:
    catalog: Path
    materialization: str | None = None
    fixture: str | None = None
    inputs: list[str] = field(default_factory=list)
    collection: str | None = None
    txn_size: int = 10_000
    embedded: bool | None = None
    data_dir: Path | None = None
    validate_documents: bool = True
    key_range: RangeSpec = field(default_factory=lambda: FULL_RANGE)
    apply: bool = True


def transactions(opts: RunOptions, m: Materialization) -> Iterator[Transaction]:
    committed = m.sources()
    if opts.fixture:
        inp = Input.open(opts.fixture)
        with contextlib.closing(inp):
            yield from fixture_transactions(inp, committed.get(inp.name, 0))
        return
    if not opts.inputs:
        raise RunError("nothing to read: give --fixture FILE, or --input FILE (or - for stdin) with --collection")
    collection = opts.collection or _only_collection(m)
    for path in opts.inputs:
        inp = Input.open(path)
        with contextlib.closing(inp):
            yield from jsonl_transactions(inp, collection, opts.txn_size, committed.get(inp.name, 0))


def _only_collection(m: Materialization) -> str:
    names = sorted({b.collection.name for b in m.spec.bindings})
    if len(names) != 1:
        raise RunError(
            f"the materialization reads {len(names)} collections; say which with --collection ({', '.join(names)})"
        )
    return names[0]


def apply_catalog(opts: RunOptions) -> EmbeddedPostgres | None:
    """Validate and apply once, before shards start; returns the embedded server if one was started."""
    cat = load_catalog(opts.catalog)
    spec = cat.to_spec(opts.materialization)
    endpoint = dict(parse_raw(spec.config, {}))
    server = None
    if opts.embedded or (opts.embedded is None and not endpoint.get("address")):
        server, endpoint = start_embedded(endpoint, opts.data_dir or default_data_dir())
    spec.config = raw(endpoint)
    runtime = Runtime(InProcessConnector(), spec)
    try:
        runtime.validate_and_apply(last=spec)
    except BaseException:
        if server is not None and server.started_here:
            server.stop()
        raise
    return server


def run(opts: RunOptions, progress: Any = None, after: Any = None) -> Summary:
    """Run to the end of the input; `after(conn, tables)` sees the tables before the server stops."""
    started = time.monotonic()
    summary = Summary()
    with Materialization.open(
        opts.catalog,
        opts.materialization,
        embedded=opts.embedded,
        data_dir=opts.data_dir,
        validate_documents=opts.validate_documents,
        key_range=opts.key_range,
        apply=opts.apply,
    ) as m:
        summary.tables = [".".join(b.resource_path) for b in m.spec.bindings]
        if m.server is not None:
            summary.data_dir = str(m.server.data_dir)
            summary.connect_hint = "materialize-postgres embedded start"
        offsets = m.sources()
        settle_heap()  # this process runs one session
        try:
            for txn in transactions(opts, m):
                summary.documents += m.transaction(txn.docs, sources={txn.source: txn.offset}, lines=txn.lines)
                summary.bytes += txn.offset - offsets.get(txn.source, 0)
                offsets[txn.source] = txn.offset
                summary.transactions += 1
                if progress is not None:
                    progress(summary, time.monotonic() - started)
        except SourceError as err:
            raise RunError(str(err)) from None
        if after is not None:
            from ..connect import connect, endpoint
            from ..driver import endpoint_config

            cfg = endpoint_config(m.spec.config)
            with endpoint(cfg) as target, connect(cfg, target, application="show", autocommit=True) as conn:
                after(conn, summary.tables)
    summary.seconds = time.monotonic() - started
    return summary
