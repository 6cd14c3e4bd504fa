"""materialize-postgres: keep PostgreSQL tables exactly in sync with keyed streams of JSON documents."""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"
__all__ = ["Materialization", "__version__"]


def __getattr__(name: str) -> Any:
    # Imported on first use: the connector process never needs the runner's dependencies.
    if name == "Materialization":
        from .runner.engine import Materialization

        return Materialization
    raise AttributeError(name)
