"""A coverage-guided fuzz target (atheris) for the request decoder and the packed-tuple decoder.

Run: `.venv/bin/python tests/fuzz/fuzz_requests.py -max_total_time=60` (CI runs it bounded).
Any exception other than the decoder's own, documented errors is a bug.
"""

from __future__ import annotations

import contextlib
import sys

import atheris

with atheris.instrument_imports():
    import msgspec

    from materialize_postgres.protocol.messages import decode_request, encode
    from materialize_postgres.protocol.tuples import TupleError, unpack


def test_one_input(data: bytes) -> None:
    try:
        req = decode_request(data)
    except msgspec.DecodeError:
        pass
    else:
        req.kind()
        encode(req)
        for msg in (req.load, req.store):
            if msg is not None:
                with contextlib.suppress(TupleError):
                    unpack(msg.key_packed)
    with contextlib.suppress(TupleError):
        unpack(data)


def main() -> None:
    atheris.Setup(sys.argv, test_one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()
