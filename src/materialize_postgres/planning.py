"""`materialize-postgres plan`: the SQL Apply would run for a spec, without running it."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import msgspec
import yaml

from .apply import plan
from .connect import connect, endpoint
from .driver import endpoint_config
from .protocol.messages import MaterializationSpec, raw


def load_spec(
    source: Path, materialization: str | None, config: Path | None
) -> tuple[MaterializationSpec, MaterializationSpec | None]:
    """A materialization spec from an apply request (JSON) or a Flow catalog (YAML), and the spec
    applied before it when the request carries one (`lastMaterialization`): backfills and the
    changes Validate allows are judged against it, as Apply judges them."""
    text = source.read_text()
    last = None
    if source.suffix == ".json":
        data = json.loads(text)
        data = data.get("apply", data)
        spec = msgspec.json.decode(json.dumps(data.get("materialization", data)), type=MaterializationSpec)
        if data.get("lastMaterialization"):
            last = msgspec.json.decode(json.dumps(data["lastMaterialization"]), type=MaterializationSpec)
    else:
        from .runner.catalog import load_catalog

        catalog = load_catalog(source)
        names = list(catalog.materializations)
        name = materialization or (names[0] if len(names) == 1 else None)
        if name is None:
            raise ValueError(
                f"{source} has {len(names)} materializations; choose one with --materialization ({', '.join(names)})"
            )
        spec = catalog.to_spec(name)
    if config is not None:
        spec.config = raw(_read(config))
    return spec, last


def _read(path: Path) -> Any:
    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)


def dry_run(source: Path, materialization: str | None, config: Path | None) -> str:
    spec, last = load_spec(source, materialization, config)
    cfg = endpoint_config(spec.config)
    with endpoint(cfg) as target, connect(cfg, target, application="plan") as conn:
        actions = plan(conn, spec, cfg, last)
        conn.rollback()
    if not actions:
        return "-- nothing to do: the database already matches the spec"
    return "\n\n".join(";\n".join(s.rstrip(";") for s in a.statements) + ";" for a in actions)
