"""Runs MeltanoLabs' target-postgres on Singer messages from stdin; run by bench/.venvs/target-postgres.

    python -I bench/peer_target_postgres.py CONFIG_JSON RESULT_JSON < MESSAGES

It calls the same command the `target-postgres` executable calls (`TargetPostgres.cli`, a click command, with
`--config CONFIG_JSON`), in this process, so that the time written to RESULT_JSON can start after
the interpreter has started and imported the target: from there to the end of its run (config
validated, connected, every message read and loaded, the last batch drained), as the connector is
timed from its first request and not from its start.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

from target_postgres.target import TargetPostgres


def main(config: str, result: str) -> None:
    command = TargetPostgres.cli  # building the command also sets up the target's console logging
    start = time.perf_counter()
    # standalone_mode=False: return (or raise) instead of exiting, so the time can be written.
    command.main(args=["--config", config], prog_name="target-postgres", standalone_mode=False)
    seconds = time.perf_counter() - start
    Path(result).write_text(json.dumps({"seconds": seconds}))


if __name__ == "__main__":
    main(*sys.argv[1:])
