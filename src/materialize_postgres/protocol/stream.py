"""The request loop on stdin/stdout: one compact JSON message per line in each direction.

The runtime sends `spec` first on every stream, then `validate`, `apply` or `open`. After `open`
each transaction is `acknowledge`, `load`*, `flush`, `store`*, `startCommit`, strictly in that
order. Anything else is a protocol error: it is reported with its line number and the process
exits non-zero, which rolls back whatever the transaction had written.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import BinaryIO

import msgspec
import psycopg

from .. import driver
from ..metrics import Metrics
from ..transactor import ConnectionLost
from .messages import (
    Acknowledged,
    Flushed,
    Response,
    StartedCommit,
    Validated,
    decode_request,
    encode,
)

log = logging.getLogger(__name__)

# _READY: acknowledged, and nothing of the next transaction read yet. Like _ACK it is a
# transaction boundary: the runtime shuts a session down by closing stdin after an acknowledge.
_ACK, _READY, _LOAD, _STORE = "acknowledge", "ready", "load", "store"
_EXPECTED = {
    _ACK: "acknowledge",
    _READY: "load or flush",
    _LOAD: "load or flush",
    _STORE: "store or startCommit",
}


class ProtocolError(RuntimeError):
    pass


class Output:
    def __init__(self, out: BinaryIO):
        self.out = out

    def send(self, resp: Response, flush: bool = True) -> None:
        self.out.write(encode(resp) + b"\n")
        if flush:
            self.out.flush()

    def loaded(self, binding: int, doc: bytes) -> None:
        # The hot path of loads: write the line directly rather than building a Struct. A JSON
        # column keeps the text it was given; one with line breaks is re-encoded to stay one line.
        if doc.find(b"\n") != -1:  # not `in`: that first tries the needle as an int, raising per call
            doc = msgspec.json.encode(msgspec.json.decode(doc))
        if binding:
            self.out.write(b'{"loaded":{"binding":%d,"doc":%s}}\n' % (binding, doc))
        else:
            self.out.write(b'{"loaded":{"doc":%s}}\n' % doc)


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    output = Output(out)
    session: driver.Session | None = None
    state = _ACK
    line_no = 0
    txn_stats: Metrics | None = None
    store_line: Callable[[bytes], tuple[int, int] | None] = _no_fast_path
    load_line: Callable[[bytes], int | None] = _no_fast_path
    try:
        for line in inp:
            line_no += 1
            if state == _STORE and line.startswith(b'{"store":'):
                assert txn_stats is not None
                try:
                    stored = store_line(line)  # the hot path; None falls through to the general one
                except (psycopg.OperationalError, ConnectionLost) as err:
                    raise _lost("store", line_no, err) from None
                if stored is not None:
                    txn_stats.store(*stored)
                    continue
            elif state == _LOAD and line.startswith(b'{"load":'):
                assert txn_stats is not None
                try:
                    binding = load_line(line)  # keys stream to PostgreSQL as they come
                except (psycopg.OperationalError, ConnectionLost) as err:
                    raise _lost("load", line_no, err) from None
                if binding is not None:
                    txn_stats.load(binding)
                    continue
            if not line.strip():
                continue
            try:
                req = decode_request(line)
            except msgspec.DecodeError as err:
                raise ProtocolError(f"line {line_no}: malformed request: {err}") from None
            kind = req.kind()
            if not kind:
                raise ProtocolError(f"line {line_no}: the request carries no known message")
            if session is None:
                session = _unary(kind, req, output, line_no)
                if session is not None:
                    driver.settle_heap()
                    txn_stats = Metrics([".".join(b.table.path) for b in session.transactor.bindings])
                    store_line = session.transactor.store_line
                    load_line = session.transactor.load_line
                continue
            assert txn_stats is not None
            try:
                state = _transaction_step(session, state, kind, req, output, line_no, txn_stats)
            except (psycopg.OperationalError, ConnectionLost) as err:
                raise _lost(kind, line_no, err) from None
        if session is not None and state not in (_ACK, _READY):
            raise ProtocolError(
                f"input ended after line {line_no} in the middle of a transaction (waiting for "
                f"{_EXPECTED[state]}); nothing of that transaction was committed"
            )
    finally:
        if session is not None:
            session.close()
        if txn_stats is not None and txn_stats.total_txns:
            txn_stats.summary()


def _lost(kind: str, line_no: int, err: Exception) -> ProtocolError:
    return ProtocolError(
        f"lost the connection to PostgreSQL while handling {kind!r} (line {line_no}): "
        f"{' '.join(str(err).split())}. Nothing of the open transaction was committed; on restart the "
        "connector resumes from the last committed checkpoint"
    )


def _no_fast_path(line: bytes) -> None:
    return None


def _unary(kind: str, req, output: Output, line_no: int) -> driver.Session | None:
    if kind == "spec":
        output.send(Response(spec=driver.spec()))
    elif kind == "validate":
        validated: Validated = driver.do_validate(req.validate)
        output.send(Response(validated=validated))
    elif kind == "apply":
        output.send(Response(applied=driver.do_apply(req.apply)))
    elif kind == "open":
        session = driver.Session(req.open)
        output.send(Response(opened=session.opened))
        return session
    else:
        raise ProtocolError(
            f"line {line_no}: unexpected {kind!r} before 'open' (expected spec, validate, apply or open)"
        )
    return None


def _transaction_step(
    session: driver.Session, state: str, kind: str, req, output: Output, line_no: int, stats: Metrics
) -> str:
    t = session.transactor
    if state == _ACK and kind == "acknowledge":
        output.send(Response(acknowledged=Acknowledged()))
        stats.begin()
        return _READY
    if state in (_READY, _LOAD) and kind == "load":
        t.load(req.load)
        stats.load(req.load.binding)
        return _LOAD
    if state in (_READY, _LOAD) and kind == "flush":
        stats.flushed(t.flush(output.loaded))
        output.send(Response(flushed=Flushed()))
        return _STORE
    if state == _STORE and kind == "store":
        store = req.store
        t.store(store)
        stats.store(store.binding, len(store.doc) or len(store.values_packed))
        return _STORE
    if state == _STORE and kind == "startCommit":
        stats.commit_started()
        t.start_commit(bytes(req.start_commit.runtime_checkpoint) or None)
        output.send(Response(started_commit=StartedCommit()))
        stats.committed()
        return _ACK
    raise ProtocolError(f"line {line_no}: unexpected {kind!r} message (expected {_EXPECTED[state]})")
