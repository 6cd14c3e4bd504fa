"""The `materialize-postgres` command."""

from __future__ import annotations

import json
import logging
import sys
from pathlib import Path
from typing import Annotated, BinaryIO

import typer

from . import __version__

app = typer.Typer(add_completion=False, no_args_is_help=True, help=__doc__, pretty_exceptions_enable=False)
log = logging.getLogger("materialize_postgres")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"materialize-postgres {__version__}")
        raise typer.Exit()


@app.callback()
def main_callback(
    version: Annotated[
        bool, typer.Option("--version", callback=_version, is_eager=True, help="Print the version and exit.")
    ] = False,
) -> None:
    """Keep PostgreSQL tables exactly in sync with keyed streams of JSON documents."""


@app.command()
def connector() -> None:
    """Speak Flow's materialization protocol on stdin/stdout (the Docker entrypoint)."""
    from .logs import setup
    from .protocol.stream import serve

    setup("json")
    try:
        with _stdout() as out:
            serve(_stdin(), out)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None
    except Exception as err:  # the last log line is the error the user reads in Flow
        log.error(_user_message(err), exc_info=err)
        raise typer.Exit(1) from None


def _stdin() -> BinaryIO:
    """stdin with a 1 MiB buffer: the runtime writes stores in bulk, and fewer, larger reads cost
    the hot path fewer system calls. (Widening the pipe itself with F_SETPIPE_SZ is left alone: it
    counts against the user's pipe quota, and past it every new pipe shrinks to one page.)"""
    return open(sys.stdin.fileno(), "rb", buffering=1 << 20, closefd=False)


def _stdout() -> BinaryIO:
    """stdout with a buffer of its own, whatever PYTHONUNBUFFERED says (container images often
    set it, and it makes sys.stdout.buffer unbuffered): thousands of `loaded` lines then go out in
    a few writes instead of one system call each. Responses the runtime waits for are flushed."""
    sys.stdout.flush()
    return open(sys.stdout.fileno(), "wb", buffering=1 << 16, closefd=False)


def _user_message(err: BaseException) -> str:
    from .logs import redact

    text = str(err) or type(err).__name__
    return redact(text)


@app.command()
def spec() -> None:
    """Print the connector's Spec response (endpoint and resource JSON schemas)."""
    from .driver import spec as make_spec
    from .protocol.messages import Response, encode

    sys.stdout.buffer.write(encode(Response(spec=make_spec())) + b"\n")


@app.command()
def plan(
    source: Annotated[
        Path,
        typer.Argument(
            help="A Flow catalog (flow.yaml) or an apply request (JSON, with lastMaterialization to plan a backfill)."
        ),
    ],
    materialization: Annotated[str | None, typer.Option(help="Which materialization of the catalog.")] = None,
    config: Annotated[Path | None, typer.Option(help="Endpoint config (YAML/JSON) overriding the catalog's.")] = None,
) -> None:
    """Print the SQL that Apply would run, changing nothing."""
    from .logs import setup

    setup("text")
    try:
        from .planning import dry_run

        typer.echo(dry_run(source, materialization, config))
    except Exception as err:
        typer.echo(f"error: {_user_message(err)}", err=True)
        raise typer.Exit(1) from None


@app.command()
def check(config: Annotated[Path, typer.Argument(help="Endpoint config file (YAML or JSON).")]) -> None:
    """Connect with an endpoint config and report what works and what does not."""
    from .logs import setup

    setup("text")
    from .checks import run_checks

    ok = run_checks(_read_config(config))
    raise typer.Exit(0 if ok else 1)


def _read_config(path: Path) -> dict:
    import yaml

    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def main() -> None:
    try:
        from .runner.cli import register

        register(app)
    except ImportError:
        pass
    app()


if __name__ == "__main__":
    main()
