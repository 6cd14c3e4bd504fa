"""Where Estuary's recorded Go-connector outputs live, when they are beside this checkout.

They are reference data kept outside the project (never copied into it). A user's clone without
them skips only the compatibility tests that compare against them, and says why.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

SHARED = Path(__file__).resolve().parents[2] / "shared"
ESTUARY = SHARED / "estuary-tests"


def estuary(relative: str) -> Path:
    path = ESTUARY / relative
    if not path.exists():
        pytest.skip(f"Estuary's recorded outputs are not beside this checkout ({path} is absent)")
    return path


def estuary_json(relative: str) -> Any:
    return json.loads(estuary(relative).read_text())
