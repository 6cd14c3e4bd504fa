"""The request and tuple decoders survive a bounded coverage-guided fuzzing run (atheris)."""

from __future__ import annotations

import os
import resource
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

FUZZ = Path(__file__).resolve().parents[1] / "fuzz"
SECONDS = int(os.environ.get("FUZZ_SECONDS", "20"))
MEMORY_LIMIT = 3 << 30


def _limit_memory() -> None:
    resource.setrlimit(resource.RLIMIT_AS, (MEMORY_LIMIT, MEMORY_LIMIT))


def test_request_decoder_fuzzing(tmp_path: Path) -> None:
    pytest.importorskip("atheris", reason="atheris (the fuzzer) is not installed for this Python")
    corpus = tmp_path / "corpus"
    shutil.copytree(FUZZ / "corpus", corpus)
    done = subprocess.run(
        [
            sys.executable,
            str(FUZZ / "fuzz_requests.py"),
            f"-max_total_time={SECONDS}",
            # libFuzzer's RSS check reads the peak RSS, which a process inherits from the one that
            # started it (a test process that built a large document would fail it at once): bound
            # the fuzzer's memory with an address-space limit instead, so a blow-up is a MemoryError.
            "-rss_limit_mb=0",
            f"-artifact_prefix={tmp_path}/",
            str(corpus),
        ],
        capture_output=True,
        timeout=SECONDS + 120,
        preexec_fn=_limit_memory,
    )
    tail = done.stderr.decode(errors="replace")[-3000:]
    assert done.returncode == 0, f"the fuzzer found a crash:\n{tail}"
    assert "Done" in tail
