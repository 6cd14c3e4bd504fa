"""Where documents come from: flowctl fixtures, or JSON lines of one collection, from files or stdin.

Every transaction carries its position in the input (the byte offset just after it), which the
runner commits as the runtime checkpoint together with the data. Re-running the same command after
a crash therefore skips exactly what was committed: nothing is lost and nothing is applied twice.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

import msgspec

_decode = msgspec.json.Decoder()


class SourceError(ValueError):
    """Input that cannot be read; the message names the file and line."""


@dataclass
class Transaction:
    docs: list[tuple[str, Any]] = field(default_factory=list)
    source: str = ""
    offset: int = 0  # byte offset just after this transaction
    first_line: int = 0
    lines: list[int] = field(default_factory=list)  # line number of each document


class Input:
    """A named byte stream that can skip what an earlier run committed."""

    def __init__(self, name: str, stream: BinaryIO) -> None:
        self.name, self.stream = name, stream

    @classmethod
    def open(cls, path: str) -> Input:
        if path == "-":
            import sys

            return cls("stdin", sys.stdin.buffer)
        p = Path(path)
        try:
            return cls(f"file:{p.resolve()}", p.open("rb"))
        except OSError as err:
            raise SourceError(f"cannot read {path}: {err.strerror}") from None

    def lines(self, start_after: int) -> Iterator[tuple[int, int, bytes]]:
        """(line number, offset after the line, line) from `start_after` on."""
        offset = 0
        if start_after:
            if self.stream.seekable():
                self.stream.seek(start_after)
                offset = start_after
            else:
                while offset < start_after:
                    chunk = self.stream.readline()
                    if not chunk:
                        break
                    offset += len(chunk)
        for number, line in enumerate(self.stream, start=1):
            offset += len(line)
            yield number, offset, line

    def close(self) -> None:
        if self.name != "stdin":
            self.stream.close()


def fixture_transactions(inp: Input, start_after: int = 0) -> Iterator[Transaction]:
    """flowctl's fixture format: `["collection", {doc}]` lines, `{"commit": true}` ends a transaction."""
    txn = Transaction(source=inp.name)
    for number, offset, line in inp.lines(start_after):
        if not line.strip():
            continue
        item = _parse(inp, number, line)
        if isinstance(item, dict) and item.get("commit") is True:
            txn.offset = offset
            yield txn
            txn = Transaction(source=inp.name)
            continue
        if not (isinstance(item, list) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], dict)):
            raise SourceError(f'{_where(inp, number)}: expected ["collection", {{document}}] or {{"commit": true}}')
        txn.docs.append((item[0], item[1]))
        txn.lines.append(number)
        txn.offset = offset
    if txn.docs:
        yield txn


def jsonl_transactions(inp: Input, collection: str, txn_size: int, start_after: int = 0) -> Iterator[Transaction]:
    """One JSON document per line, all of `collection`, `txn_size` documents per transaction."""
    txn = Transaction(source=inp.name)
    for number, offset, line in inp.lines(start_after):
        if not line.strip():
            continue
        doc = _parse(inp, number, line)
        if not isinstance(doc, dict):
            raise SourceError(f"{_where(inp, number)}: expected a JSON object, got {type(doc).__name__}")
        txn.docs.append((collection, doc))
        txn.lines.append(number)
        txn.offset = offset
        if len(txn.docs) >= txn_size:
            yield txn
            txn = Transaction(source=inp.name)
    if txn.docs:
        yield txn


def _parse(inp: Input, number: int, line: bytes) -> Any:
    try:
        return _decode.decode(line)
    except msgspec.DecodeError as err:
        raise SourceError(f"{_where(inp, number)}: not valid JSON ({err})") from None


def _where(inp: Input, number: int) -> str:
    return f"{inp.name.removeprefix('file:')} line {number}"
