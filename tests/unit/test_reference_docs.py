"""docs/configuration.md is exactly what the Spec's schemas generate."""

from __future__ import annotations

from pathlib import Path

from materialize_postgres.reference_docs import render

DOC = Path(__file__).resolve().parents[2] / "docs" / "configuration.md"


def test_configuration_reference_is_current() -> None:
    assert DOC.read_text() == render(), (
        "docs/configuration.md is stale: run `python -m materialize_postgres.reference_docs > docs/configuration.md`"
    )
