"""Hand-made ways to store one transaction's rows, each the best a careful user could write.

    python -m bench.baselines METHOD DSN TABLE COLUMNS_JSON STORE_FILE

Run as its own process so its time and peak memory are its own. It reads the same `store`
lines the connector is fed (documents kept as raw JSON, as the connector keeps them), writes
the rows into the table, commits, and prints a JSON line with its peak RSS.

- `copy`: a streamed binary COPY straight into the table (the ceiling for inserts).
- `stage`: binary COPY into a temporary table, then one INSERT ... ON CONFLICT DO UPDATE and
  one DELETE ... USING (the ceiling for merges of small documents).
- `rows`: pipelined per-row INSERT / UPDATE / DELETE statements, the Go connector's strategy.
- `load`: STORE_FILE holds protocol `load` lines instead: binary COPY of their keys into a
  temporary table, one join against the table returning the document column, every row fetched
  (the ceiling for loads, bench/bigtable.py), the join as the planner picks it;
- `load-index`: the same with hash and merge joins disabled, so that each key is looked up in the
  primary key's index: on a large table the planner's costs (random_page_cost 4) prefer a hash
  join over a full scan even when the table sits in memory, and a careful user would try both.

Besides its time, it reports the CPU seconds of its timed section: its own, the local server's and
its backend's (bench/cpu.py), read outside the timed section.
"""

from __future__ import annotations

import base64
import datetime as dt
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import fdb.tuple
import msgspec
import psycopg
from psycopg import sql
from psycopg.adapt import Dumper, Loader
from psycopg.pq import Format

from bench import cpu


class Meta(msgspec.Struct):
    uuid: str
    op: str | None = None


class Doc(msgspec.Struct, rename={"meta": "_meta"}):
    """The bench collections' documents, typed by hand: decoding picks out just these fields."""

    id: int
    meta: Meta
    val: int | None = None
    payload: str | None = None


class Store(msgspec.Struct):
    doc: msgspec.Raw
    exists: bool = False
    delete: bool = False


class Request(msgspec.Struct):
    store: Store


class LoadKey(msgspec.Struct, rename="camel"):
    key_packed: str


class LoadRequest(msgspec.Struct):
    load: LoadKey


UNIX = dt.datetime(1970, 1, 1, tzinfo=dt.UTC)


def published_at(u: str) -> dt.datetime:
    ticks = int(u[15:18] + u[9:13] + u[0:8], 16) - 0x01B21DD213814000
    micros, rest = divmod(ticks, 10)
    return UNIX + dt.timedelta(microseconds=micros + (rest > 5 or (rest == 5 and micros & 1)))


GETTERS: dict[str, Any] = {
    "id": lambda d: d.id,
    "val": lambda d: d.val,
    "payload": lambda d: d.payload,
    "_meta/op": lambda d: d.meta.op,
    "flow_published_at": lambda d: published_at(d.meta.uuid),
}


class RawJson(bytes):
    """A document's JSON text, sent as is."""


class RawJsonDumper(Dumper):
    format = Format.BINARY  # the binary form of json is its text
    oid = psycopg.adapters.types["json"].oid  # also what COPY's set_types(["json"]) picks

    def dump(self, obj: Any) -> bytes:
        return bytes(obj)


class RawJsonLoader(Loader):
    """Documents fetched as their bytes, undecoded, as the connector hands them on."""

    format = Format.BINARY  # the binary form of json is its text

    def load(self, data: Any) -> bytes:
        return bytes(data)


def rows(path: Path, names: list[str]) -> Iterator[tuple[bool, bool, tuple[Any, ...]]]:
    decode_line = msgspec.json.Decoder(Request).decode
    decode_doc = msgspec.json.Decoder(Doc).decode
    getters = [GETTERS[n] for n in names[:-1]]  # the last column is the document
    with path.open("rb") as f:
        for line in f:
            s = decode_line(line).store
            raw = bytes(s.doc)
            doc = decode_doc(raw)
            yield s.exists, s.delete, (*[g(doc) for g in getters], RawJson(raw))


def main(method: str, dsn: str, table: str, columns_json: str, store_file: str) -> None:
    columns: list[dict[str, Any]] = json.loads(columns_json)
    names = [c["name"] for c in columns]
    types = [c["type"] for c in columns]
    keys = [c["name"] for c in columns if c["key"]]
    target = sql.Identifier(table)
    cols = sql.SQL(", ").join(map(sql.Identifier, names))
    server = cpu.Server.of(dsn)
    loaded, plan = 0, None
    with psycopg.connect(dsn) as conn:
        conn.adapters.register_dumper(RawJson, RawJsonDumper)
        backend = conn.info.backend_pid
        cpu_start, server_start, backend_start = _cpu(server, backend)
        # Timed like the connector's transactions: connected, from the first row to the commit.
        start = time.perf_counter()
        if method in ("load", "load-index"):
            loaded, plan = load(conn, target, columns, Path(store_file), index_join=method == "load-index")
        else:
            data = rows(Path(store_file), names)
            if method == "copy":
                copy_into(conn, sql.SQL("COPY {} ({}) FROM STDIN (FORMAT BINARY)").format(target, cols), types, data)
            elif method == "stage":
                stage(conn, target, names, types, keys, data)
            elif method == "rows":
                per_row(conn, target, names, keys, data)
            else:
                raise SystemExit(f"unknown method {method!r}")
        conn.commit()
        seconds = time.perf_counter() - start
        cpu_end, server_end, backend_end = _cpu(server, backend)
    report: dict[str, Any] = {"seconds": seconds, "peak_rss_kb": peak_rss_kb(), "loaded": loaded, "plan": plan}
    report["cpu_s"] = cpu_end - cpu_start
    if server is not None:
        report["server_cpu_s"] = server_end - server_start
        report["backend_cpu_s"] = backend_end - backend_start
    print(json.dumps(report))


def _cpu(server: cpu.Server | None, backend: int) -> tuple[float, float, float]:
    """This process's, the cluster's and our backend's CPU seconds so far."""
    if server is None:
        return time.process_time(), 0.0, 0.0
    return time.process_time(), server.total(), cpu.process_cpu(backend)


def load(
    conn: psycopg.Connection[Any], target: sql.Identifier, columns: list[dict[str, Any]], path: Path, index_join: bool
) -> tuple[int, str]:
    """The keys of the load lines into a temporary table by binary COPY, then one join returning
    the documents, fetched as raw bytes. Returns how many were found, and the join the planner
    chose (for the report; planning it again costs well under a millisecond).

    The planner gets statistics on the keys (an ANALYZE of 100k keys takes milliseconds); with
    `index_join` it may only pick a nested loop over the primary key's index."""
    key_cols = [c for c in columns if c["key"]]
    doc = sql.Identifier(columns[-1]["name"])
    names = sql.SQL(", ").join(sql.Identifier(c["name"]) for c in key_cols)
    conn.execute(
        sql.SQL("CREATE TEMP TABLE load_keys ON COMMIT DROP AS SELECT {} FROM {} WITH NO DATA").format(names, target)
    )
    decode = msgspec.json.Decoder(LoadRequest).decode
    with conn.cursor().copy(sql.SQL("COPY load_keys ({}) FROM STDIN (FORMAT BINARY)").format(names)) as copy:
        copy.set_types([c["type"] for c in key_cols])
        with path.open("rb") as f:
            for line in f:
                copy.write_row(fdb.tuple.unpack(base64.b64decode(decode(line).load.key_packed)))
    conn.execute("ANALYZE load_keys")
    if index_join:
        conn.execute("SET LOCAL enable_hashjoin = off")
        conn.execute("SET LOCAL enable_mergejoin = off")
    on = sql.SQL(" AND ").join(sql.SQL("r.{0} = l.{0}").format(sql.Identifier(c["name"])) for c in key_cols)
    cur = conn.cursor(binary=True)
    cur.adapters.register_loader("json", RawJsonLoader)
    query = sql.SQL("SELECT r.{} FROM load_keys AS l JOIN {} AS r ON {}").format(doc, target, on)
    cur.execute(query)
    found = len(cur.fetchall())
    plan = conn.execute(sql.SQL("EXPLAIN (FORMAT JSON) {}").format(query)).fetchone()
    return found, plan[0][0]["Plan"]["Node Type"] if plan else "?"


def copy_into(conn: psycopg.Connection[Any], statement: sql.Composable, types: list[str], data: Any) -> None:
    with conn.cursor().copy(statement) as copy:
        copy.set_types(types)
        for _, _, row in data:
            copy.write_row(row)


def stage(
    conn: psycopg.Connection[Any],
    target: sql.Identifier,
    names: list[str],
    types: list[str],
    keys: list[str],
    data: Iterator[tuple[bool, bool, tuple[Any, ...]]],
) -> None:
    cols = sql.SQL(", ").join(map(sql.Identifier, names))
    conn.execute(sql.SQL("CREATE TEMP TABLE stage AS SELECT {} FROM {} WITH NO DATA").format(cols, target))
    conn.execute(sql.SQL("CREATE TEMP TABLE stage_del AS SELECT {} FROM {} WITH NO DATA").format(cols, target))
    deletes: list[tuple[Any, ...]] = []
    with conn.cursor().copy(sql.SQL("COPY stage ({}) FROM STDIN (FORMAT BINARY)").format(cols)) as copy:
        copy.set_types(types)
        for _, delete, row in data:
            if delete:
                deletes.append(row)
            else:
                copy.write_row(row)
    key_cols = sql.SQL(", ").join(map(sql.Identifier, keys))
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(n)) for n in names if n not in keys
    )
    conn.execute(
        sql.SQL("INSERT INTO {} ({}) SELECT {} FROM stage ON CONFLICT ({}) DO UPDATE SET {}").format(
            target, cols, cols, key_cols, updates
        )
    )
    if deletes:
        with conn.cursor().copy(sql.SQL("COPY stage_del ({}) FROM STDIN (FORMAT BINARY)").format(cols)) as copy:
            copy.set_types(types)
            for row in deletes:
                copy.write_row(row)
        on = sql.SQL(" AND ").join(sql.SQL("t.{0} = d.{0}").format(sql.Identifier(k)) for k in keys)
        conn.execute(sql.SQL("DELETE FROM {} AS t USING stage_del AS d WHERE {}").format(target, on))


def per_row(
    conn: psycopg.Connection[Any],
    target: sql.Identifier,
    names: list[str],
    keys: list[str],
    data: Iterator[tuple[bool, bool, tuple[Any, ...]]],
) -> None:
    nkeys = len(keys)
    cols = sql.SQL(", ").join(map(sql.Identifier, names))
    marks = sql.SQL(", ").join(sql.Placeholder() * len(names))
    insert = sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(target, cols, marks)
    where = sql.SQL(" AND ").join(sql.SQL("{} = %s").format(sql.Identifier(k)) for k in keys)
    sets = sql.SQL(", ").join(sql.SQL("{} = %s").format(sql.Identifier(n)) for n in names[nkeys:])
    update = sql.SQL("UPDATE {} SET {} WHERE {}").format(target, sets, where)
    delete = sql.SQL("DELETE FROM {} WHERE {}").format(target, where)
    batches: list[tuple[sql.Composable, list[tuple[Any, ...]]]] = [(insert, []), (update, []), (delete, [])]
    pending = 0
    with conn.cursor() as cur:
        for exists, is_delete, row in data:
            if is_delete:
                batches[2][1].append(row[:nkeys])
            elif exists:
                batches[1][1].append((*row[nkeys:], *row[:nkeys]))
            else:
                batches[0][1].append(row)
            pending += 1
            if pending == 1000:
                _send(cur, batches)
                pending = 0
        _send(cur, batches)


def _send(cur: psycopg.Cursor[Any], batches: list[tuple[sql.Composable, list[tuple[Any, ...]]]]) -> None:
    """executemany pipelines its statements: one round trip per batch, prepared once."""
    for statement, params in batches:
        if params:
            cur.executemany(statement, params)
            params.clear()


def peak_rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


if __name__ == "__main__":
    main(*sys.argv[1:])
