"""`materialize-postgres run`: the standalone runner's command line."""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Annotated, Any

import typer

log = logging.getLogger("materialize_postgres.runner")


def register(app: typer.Typer) -> None:
    app.command(name="run")(run_command)
    app.add_typer(embedded_app, name="embedded")


def run_command(
    catalog: Annotated[Path, typer.Argument(help="A Flow catalog (flow.yaml) with collections and a materialization.")],
    fixture: Annotated[
        str | None,
        typer.Option(
            help='flowctl fixture: ["collection", {doc}] lines, {"commit": true} ends a transaction (- for stdin).'
        ),
    ] = None,
    input_: Annotated[
        list[str] | None, typer.Option("--input", "-i", help="JSON lines of one collection (repeatable; - for stdin).")
    ] = None,
    collection: Annotated[str | None, typer.Option(help="Collection of --input documents.")] = None,
    txn_size: Annotated[int, typer.Option(help="Documents per transaction for --input.")] = 10_000,
    materialization: Annotated[str | None, typer.Option(help="Which materialization of the catalog.")] = None,
    embedded: Annotated[
        bool | None,
        typer.Option(
            "--embedded/--no-embedded",
            help="Use an embedded PostgreSQL (the default when the endpoint config has no address).",
        ),
    ] = None,
    data_dir: Annotated[
        Path | None, typer.Option(help="Embedded PostgreSQL data directory (default ./.materialize-postgres/pgdata).")
    ] = None,
    show: Annotated[int, typer.Option(help="After the run, print up to N rows of each table.")] = 0,
    validate: Annotated[
        bool, typer.Option("--validate/--no-validate", help="Check documents against their collection schema.")
    ] = True,
    quiet: Annotated[bool, typer.Option("--quiet", "-q", help="No progress display; JSON logs only.")] = False,
    shards: Annotated[
        int,
        typer.Option(
            min=1, max=256, help="Split the key range into N shards, each its own process fenced on its own range."
        ),
    ] = 1,
    shard_index: Annotated[int | None, typer.Option(hidden=True)] = None,
) -> None:
    """Materialize a Flow catalog's documents into PostgreSQL, exactly once, without Flow."""
    from ..logs import setup
    from .engine import RunError, RunOptions, run

    interactive = sys.stderr.isatty() and not quiet and shard_index is None
    setup("text" if interactive else "json")
    if shards > 1 and shard_index is None:
        raise typer.Exit(_run_shards(shards, catalog, materialization, embedded, data_dir, fixture, input_))
    opts = RunOptions(
        catalog=catalog,
        materialization=materialization,
        fixture=fixture,
        inputs=input_ or [],
        collection=collection,
        txn_size=txn_size,
        embedded=embedded,
        data_dir=data_dir,
        validate_documents=validate,
    )
    if shard_index is not None:
        from .runtime import shard_ranges

        opts.key_range = shard_ranges(shards)[shard_index]
        opts.apply = False  # the parent process applied once for all shards
    try:
        with _progress(interactive) as progress:
            summary = run(opts, progress=progress, after=_shower(show) if show else None)
    except (RunError, ValueError, OSError) as err:
        log.error(str(err))
        raise typer.Exit(1) from None
    except Exception as err:
        from ..logs import redact

        log.error(redact(str(err) or type(err).__name__))
        raise typer.Exit(1) from None
    rate = summary.bytes / summary.seconds / 1e6 if summary.seconds else 0.0
    line = (
        f"materialized {summary.documents} documents in {summary.transactions} transactions "
        f"({summary.seconds:.1f} s) into {', '.join(summary.tables)}"
    )
    log.info(
        line,
        extra={
            "fields": {
                "documents": summary.documents,
                "transactions": summary.transactions,
                "seconds": round(summary.seconds, 3),
                "MBps": round(rate, 2),
            }
        },
    )
    if interactive:
        typer.echo(line, err=True)
    if summary.connect_hint:
        typer.echo(
            f"The embedded PostgreSQL keeps its data in {summary.data_dir}. To look at the tables: "
            "`materialize-postgres embedded start` prints a psql command; `... embedded stop` ends it.",
            err=True,
        )


def _shower(rows: int) -> Any:
    def show(conn: Any, tables: list[str]) -> None:
        from rich.console import Console
        from rich.table import Table

        console = Console(width=200)
        for name in tables:
            schema, table = name.split(".", 1)
            ident = f'"{schema}"."{table}"'
            cols = [
                r[0]
                for r in conn.execute(
                    "SELECT column_name FROM information_schema.columns WHERE table_schema = %s AND table_name = %s "
                    "AND column_name <> 'flow_document' ORDER BY ordinal_position",
                    [schema, table],
                ).fetchall()
            ]
            select = ", ".join('"' + c.replace('"', '""') + '"::text' for c in cols)
            t = Table(title=f"{name} (flow_document not shown)")
            for c in cols:
                t.add_column(c)
            for row in conn.execute(f"SELECT {select} FROM {ident} ORDER BY 1 LIMIT {int(rows)}").fetchall():
                t.add_row(*["" if v is None else v for v in row])
            console.print(t)

    return show


class _progress:
    def __init__(self, interactive: bool) -> None:
        self.interactive = interactive
        self.bar: Any = None

    def __enter__(self) -> Any:
        if not self.interactive:
            return None
        from rich.progress import Progress, TextColumn, TimeElapsedColumn

        self.bar = Progress(TextColumn("{task.description}"), TimeElapsedColumn(), transient=True)
        self.bar.start()
        task = self.bar.add_task("starting")

        def update(summary: Any, elapsed: float) -> None:
            rate = summary.documents / elapsed if elapsed else 0
            self.bar.update(
                task,
                description=f"{summary.documents:,} documents, {summary.transactions:,} "
                f"transactions, {rate:,.0f} docs/s",
            )

        return update

    def __exit__(self, *exc: object) -> None:
        if self.bar is not None:
            self.bar.stop()


embedded_app = typer.Typer(help="Start or stop the embedded PostgreSQL that `run` uses, to look at its tables.")


@embedded_app.command("start")
def embedded_start(
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (default ./.materialize-postgres/pgdata).")
    ] = None,
) -> None:
    """Start the embedded server (it keeps running) and print how to connect to it."""
    from ..embedded import EmbeddedPostgres, default_data_dir
    from .engine import EMBEDDED_DATABASE

    server = EmbeddedPostgres(data_dir or default_data_dir())
    server.start()
    typer.echo(f"psql -h {server.host} -p {server.port} -U postgres {EMBEDDED_DATABASE}")


@embedded_app.command("stop")
def embedded_stop(
    data_dir: Annotated[
        Path | None, typer.Option(help="Data directory (default ./.materialize-postgres/pgdata).")
    ] = None,
) -> None:
    """Stop the embedded server."""
    from ..embedded import EmbeddedPostgres, default_data_dir

    server = EmbeddedPostgres(data_dir or default_data_dir())
    server.start()  # attaches to a running server (or starts one) so that it can be stopped cleanly
    server.stop()
    typer.echo("stopped")


def _run_shards(
    shards: int,
    catalog: Path,
    materialization: str | None,
    embedded: bool | None,
    data_dir: Path | None,
    fixture: str | None,
    inputs: list[str] | None,
) -> int:
    """Apply once, then run one process per key range and wait for all of them."""
    import subprocess

    from .engine import RunError, RunOptions, apply_catalog

    if fixture == "-" or "-" in (inputs or []):
        log.error("--shards needs files to read: every shard reads the whole input (not stdin)")
        return 1
    try:
        server = apply_catalog(
            RunOptions(catalog=catalog, materialization=materialization, embedded=embedded, data_dir=data_dir)
        )
    except (RunError, ValueError, OSError) as err:
        log.error(str(err))
        return 1
    args = [a for a in sys.argv[1:] if not a.startswith("--shard-index")]
    try:
        procs = [
            subprocess.Popen([sys.executable, "-m", "materialize_postgres", *args, "--shard-index", str(i), "--quiet"])
            for i in range(shards)
        ]
        codes = [p.wait() for p in procs]
    finally:
        if server is not None and server.started_here:
            server.stop()
    failed = [i for i, c in enumerate(codes) if c != 0]
    if failed:
        log.error(f"shard(s) {', '.join(map(str, failed))} of {shards} failed; re-run the same command to resume")
        return 1
    log.info(f"all {shards} shards finished")
    return 0
