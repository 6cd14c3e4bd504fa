"""The connector image and the Python package are built the way Flow and pip expect.

No Docker engine runs here, so the Dockerfile is checked by reading it; the wheel and sdist are
really built and installed into a clean virtualenv (tests/e2e/test_package.py)."""

from __future__ import annotations

import re
import shlex
import tomllib
from pathlib import Path

from materialize_postgres import __version__

ROOT = Path(__file__).resolve().parents[2]


def instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    out = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            word, _, rest = line.partition(" ")
            out.append((word.upper(), rest.strip()))
    return out


def final_stage() -> list[tuple[str, str]]:
    steps = instructions()
    last_from = max(i for i, (word, _) in enumerate(steps) if word == "FROM")
    return steps[last_from:]


def test_flow_labels_and_entrypoint() -> None:
    stage = final_stage()
    labels = dict(shlex.split(rest)[0].split("=", 1) for word, rest in stage if word == "LABEL" and "FLOW_" in rest)
    assert labels == {"FLOW_RUNTIME_PROTOCOL": "materialize", "FLOW_RUNTIME_CODEC": "json"}
    (entrypoint,) = [rest for word, rest in stage if word == "ENTRYPOINT"]
    assert entrypoint == '["materialize-postgres", "connector"]'


def test_slim_non_root_image_without_build_tools() -> None:
    stage = final_stage()
    assert stage[0][1].startswith("python:3.11-slim")
    users = [rest for word, rest in stage if word == "USER"]
    assert users and users[-1] not in ("root", "0")
    runs = " ".join(rest for word, rest in stage if word == "RUN")
    assert not re.search(r"\b(gcc|build-essential|make)\b", runs)
    assert "ca-certificates" in runs  # verify-full against public CAs needs the system trust store


def test_version_is_one_truth() -> None:
    meta = tomllib.loads((ROOT / "pyproject.toml").read_text())
    assert meta["project"]["version"] == __version__
    assert meta["project"]["scripts"]["materialize-postgres"] == "materialize_postgres.cli:main"
    assert f"## {__version__}" in (ROOT / "CHANGELOG.md").read_text()
