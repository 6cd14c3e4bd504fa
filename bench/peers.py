"""Popular loaders run on the benchmark's workloads, for comparison: dlt and MeltanoLabs' target-postgres.

Each peer lives in its own virtualenv under bench/.venvs/<name>/, created and filled from PyPI on
first use, so neither it nor its dependencies (psycopg2, SQLAlchemy, singer-sdk ...) ever enter the
project's environment. A peer is fed the documents of the same `store` lines the connector and the
baselines read, converted beforehand (outside the timed section) into what the peer reads natively:

- `dlt`: a JSONL file of the documents, loaded by bench/peer_dlt.py with `write_disposition="merge"`,
  `primary_key="id"` and csv load files; tombstones carry `_deleted: true`, a column hinted
  `hard_delete`, and every document `_seq`, hinted `dedup_sort`;
- `target-postgres`: a file of Singer SCHEMA / RECORD / STATE messages on the target's stdin, with
  `key_properties: ["id"]`, `load_method: upsert` and `use_copy`; tombstones carry `_sdc_deleted_at`,
  which the target stores (a soft delete: Singer targets hard-delete only on ACTIVATE_VERSION).

Both peers use their documented fast path to PostgreSQL (COPY), so the comparison is with each at its best.

Each peer writes into its own schema, dropped before every workload. Its time is its own
measurement of the load, from after its imports to the end of its run (see the two scripts); its
peak RSS is the subprocess's, from wait4.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import msgspec
import psycopg
from psycopg import sql

from bench import driver
from bench.baselines import Request, published_at
from bench.workloads import Txn

HERE = Path(__file__).parent
VENVS = HERE / ".venvs"
KEY = "id"  # every bench collection is keyed on /id


class PeerError(RuntimeError):
    """A peer could not be installed or failed its run: reported, never fatal to the benchmark."""


class TargetLike(Protocol):
    host: str
    port: int
    user: str
    database: str

    @property
    def dsn(self) -> str: ...


@dataclass(frozen=True)
class Peer:
    name: str
    requirements: tuple[str, ...]
    schema: str  # the PostgreSQL schema the peer writes into
    script: str  # run by the peer venv's python


PEERS = {
    "dlt": Peer("dlt", ("dlt[postgres]",), "peer_dlt", "peer_dlt.py"),
    "target-postgres": Peer(
        "target-postgres", ("meltanolabs-target-postgres",), "peer_target_postgres", "peer_target_postgres.py"
    ),
}
PLOT_REQUIREMENTS = ("matplotlib",)


def password() -> str:
    return os.environ.get("PGPASSWORD", "postgres")  # the local server trusts loopback


# ---------------------------------------------------------------------------------------------
# Virtualenvs.


def ensure_venv(name: str, requirements: tuple[str, ...]) -> Path:
    """The python of bench/.venvs/<name>, created and installed on first use.

    A stamp written after a successful install marks it done, so an interrupted install is redone."""
    root = VENVS / name
    python = root / "bin" / "python"
    stamp = root / ".bench-installed"
    wanted = "\n".join(requirements)
    if stamp.is_file() and stamp.read_text() == wanted and python.exists():
        return python
    print(f"   installing {' '.join(requirements)} into {root}", flush=True)
    if not python.exists():
        shutil.rmtree(root, ignore_errors=True)
        _check([shutil.which("python3") or sys.executable, "-m", "venv", str(root)], f"venv for {name}")
    _check(
        [str(python), "-m", "pip", "install", "--disable-pip-version-check", "-q", *requirements],
        f"pip install {' '.join(requirements)}",
    )
    stamp.write_text(wanted)
    return python


def _check(command: list[str], what: str) -> None:
    out = subprocess.run(command, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise PeerError(f"{what} failed (exit {out.returncode}): {_tail(out.stderr or out.stdout)}")


def _tail(text: str, lines: int = 15) -> str:
    """The end of a failed command's output, on one line; pip's warnings about configured local
    indexes that are missing ("... is ignored") would otherwise crowd out the actual error."""
    kept = [ln for ln in text.splitlines() if ln.strip() and "is ignored" not in ln]
    return " / ".join(kept[-lines:])[-2000:]


def install(names: list[str]) -> dict[str, str]:
    """Installs the named peers; returns the error text of those that could not be installed."""
    errors: dict[str, str] = {}
    for name in names:
        try:
            ensure_venv(name, PEERS[name].requirements)
        except (PeerError, OSError) as e:
            errors[name] = f"install failed: {e}"
            print(f"   {name}: {errors[name]}", flush=True)
    return errors


def versions(names: list[str]) -> list[str]:
    """The peers' own packages as installed, for the report's machine section."""
    wanted = ("dlt=", "psycopg2", "meltanolabs-target-postgres=", "singer-sdk=", "sqlalchemy=", "psycopg=")
    found: list[str] = []
    for name in names:
        python = VENVS / name / "bin" / "python"
        if not python.exists():
            continue
        out = subprocess.run(
            [str(python), "-m", "pip", "list", "--format=freeze", "--disable-pip-version-check"],
            capture_output=True,
            text=True,
        ).stdout.splitlines()
        found.append(f"{name}: " + ", ".join(p for p in out if p.lower().startswith(wanted)))
    return found


# ---------------------------------------------------------------------------------------------
# Inputs: the store lines' documents, in each peer's own format. Not timed.


def write_dlt_input(stores: Path, out: Path) -> None:
    """One document per line, with `_seq`, its position in the transaction, and `_deleted: true` on
    tombstones. `_seq` is hinted `dedup_sort` so that, of two documents with one key in a transaction
    (the scenario files' overlaps can update and delete a key together), the later one wins, as it
    does for the connector and the baselines; dlt otherwise keeps an arbitrary one."""
    decode = msgspec.json.Decoder(Request).decode
    with stores.open("rb") as src, out.open("wb") as dst:
        for seq, line in enumerate(src):
            s = decode(line).store
            extra = b',"_seq":%d%s}' % (seq, b',"_deleted":true' if s.delete else b"")
            dst.write(bytes(s.doc)[:-1] + extra + b"\n")  # a document is a JSON object: drop its `}`


def singer_schema(collection_schema: dict[str, Any]) -> dict[str, Any]:
    """The collection's JSON schema as a Singer stream schema: Flow's annotations dropped, values
    nullable, `_meta` as the documents carry it, and the soft-delete column Singer taps send."""
    props: dict[str, Any] = {}
    for name, prop in collection_schema.get("properties", {}).items():
        if name == "_meta":
            continue
        kind = prop.get("type", "string")
        props[name] = {"type": kind if name == KEY else [kind, "null"]}
    props["_meta"] = {"type": "object", "properties": {"op": {"type": "string"}, "uuid": {"type": "string"}}}
    props["_sdc_deleted_at"] = {"type": ["string", "null"], "format": "date-time"}
    return {"type": "object", "properties": props, "required": [KEY]}


def write_singer_input(stores: Path, out: Path, stream: str, schema: dict[str, Any], phase_index: int) -> None:
    """SCHEMA, one RECORD per document, and a closing STATE, as a tap would emit them."""
    decode = msgspec.json.Decoder(Request).decode
    head = b'{"type":"RECORD","stream":%s,"record":' % msgspec.json.encode(stream)
    with stores.open("rb") as src, out.open("wb") as dst:
        message = {"type": "SCHEMA", "stream": stream, "schema": schema, "key_properties": [KEY]}
        dst.write(msgspec.json.encode(message) + b"\n")
        for line in src:
            s = decode(line).store
            doc = bytes(s.doc)
            if s.delete:
                record = msgspec.json.decode(doc)
                record["_sdc_deleted_at"] = published_at(record["_meta"]["uuid"]).isoformat()
                doc = msgspec.json.encode(record)
            dst.write(head + doc + b"}\n")
        state = {"type": "STATE", "value": {"bookmarks": {stream: {"txn": phase_index}}}}
        dst.write(msgspec.json.encode(state) + b"\n")


# ---------------------------------------------------------------------------------------------
# Runs.


def reset(name: str, target: TargetLike, work: Path) -> None:
    """Drops what the peer stored (and dlt's local pipeline state), so a workload starts empty."""
    peer = PEERS[name]
    with psycopg.connect(target.dsn, autocommit=True) as conn:
        for schema in (peer.schema, f"{peer.schema}_staging"):  # dlt stages merges in <dataset>_staging
            conn.execute(sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(sql.Identifier(schema)))
    shutil.rmtree(work / f"peer-{name}", ignore_errors=True)


def run_peer(
    name: str,
    target: TargetLike,
    table: str,
    stores: Path,
    phase_index: int,
    collection_schema: dict[str, Any],
    work: Path,
) -> driver.Phase:
    """Loads one transaction's documents into `<peer schema>.<table>` with the peer."""
    peer = PEERS[name]
    python = ensure_venv(name, peer.requirements)
    home = work / f"peer-{name}"  # the peer's working directory: its config, logs, dlt's pipeline state
    home.mkdir(parents=True, exist_ok=True)
    data = home / f"{table}.{phase_index}.input"
    result = home / f"{table}.{phase_index}.result.json"
    result.unlink(missing_ok=True)  # only this run's own figure may be read below
    if name == "dlt":
        write_dlt_input(stores, data)
        credentials = f"postgresql://{target.user}:{password()}@{target.host}:{target.port}/{target.database}"
        args = [str(data), credentials, peer.schema, table, str(home / "pipelines"), str(result)]
        stdin: Path | None = None
    else:
        write_singer_input(stores, data, table, singer_schema(collection_schema), phase_index)
        config = home / "config.json"
        config.write_text(json.dumps(target_postgres_config(target, peer.schema)))
        args, stdin = [str(config), str(result)], data
    try:
        rss = _run_script(python, HERE / peer.script, args, stdin, home, home / f"{table}.{phase_index}.log")
        seconds = float(json.loads(result.read_text())["seconds"])
    finally:
        data.unlink(missing_ok=True)
    return driver.Phase(seconds, rss)


def target_postgres_config(target: TargetLike, schema: str) -> dict[str, Any]:
    return {
        "host": target.host,
        "port": target.port,
        "user": target.user,
        "password": password(),
        "database": target.database,
        "default_target_schema": schema,
        "load_method": "upsert",
        # Its documented faster path ("usually faster than INSERT statements"); the peer at its best.
        "use_copy": True,
    }


def _run_script(python: Path, script: Path, args: list[str], stdin: Path | None, cwd: Path, log: Path) -> int:
    """Runs the script to its end; returns its peak RSS in KiB, from wait4 (the child alone)."""
    env = {**os.environ, "RUNTIME__DLTHUB_TELEMETRY": "false"}  # no network calls during a timed run
    # -I: no PYTHONPATH, user site or script directory on sys.path (bench/ holds a driver.py).
    command = [str(python), "-I", str(script), *args]
    with log.open("wb") as out, stdin.open("rb") if stdin else open(os.devnull, "rb") as feed:
        proc = subprocess.Popen(command, stdin=feed, stdout=out, stderr=subprocess.STDOUT, cwd=cwd, env=env)
        _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)  # reaped here: tell Popen it is done
    if proc.returncode != 0:
        raise PeerError(f"exit {proc.returncode}: {_tail(log.read_text(errors='replace'))}")
    return usage.ru_maxrss  # KiB on Linux


# ---------------------------------------------------------------------------------------------
# Checks.


def expected_rows(txns: list[Txn]) -> tuple[int, int]:
    """Keys live after these transactions, and keys ever stored (soft deletes keep their rows)."""
    live: set[int] = set()
    ever: set[int] = set()
    for txn in txns:
        for key, op in txn.ops:
            if op == "d":
                live.discard(key)
            else:
                live.add(key)
                ever.add(key)
    return len(live), len(ever)


def check_rows(name: str, target: TargetLike, table: str, txns: list[Txn]) -> tuple[bool, str]:
    """Whether the peer's table holds what the transactions so far should leave, and a line saying so."""
    live, ever = expected_rows(txns)
    ident = sql.Identifier(PEERS[name].schema, table)
    with psycopg.connect(target.dsn) as conn:
        if name == "target-postgres":
            query = sql.SQL("SELECT count(*) FILTER (WHERE _sdc_deleted_at IS NULL), count(*) FROM {}").format(ident)
        else:
            query = sql.SQL("SELECT count(*), count(*) FROM {}").format(ident)
        got_live, got_all = conn.execute(query).fetchone() or (0, 0)
    want_all = ever if name == "target-postgres" else live
    ok = (got_live, got_all) == (live, want_all)
    text = f"{PEERS[name].schema}.{table}: {got_live:,} live rows (want {live:,})"
    if name == "target-postgres":
        text += f", {got_all:,} with soft-deleted (want {want_all:,})"
    return ok, text + ("" if ok else " MISMATCH")
