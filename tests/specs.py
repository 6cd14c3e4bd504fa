"""Small materialization specs for tests, shaped like what Flow's control plane builds."""

from __future__ import annotations

import json
from typing import Any

import msgspec

from materialize_postgres.protocol.messages import MaterializationSpec


def projection(
    field: str, ptr: str, types: list[str], *, must: bool = True, key: bool = False, fmt: str = "", **inference: Any
) -> dict[str, Any]:
    inf: dict[str, Any] = {"types": types, "exists": "MUST" if must else "MAY", **inference}
    if fmt:
        inf["string"] = {"format": fmt}
    p: dict[str, Any] = {"ptr": ptr, "field": field, "inference": inf}
    if key:
        p["isPrimaryKey"] = True
    return p


def simple_collection(name: str = "acme/things") -> dict[str, Any]:
    """`{id: integer, name: string, score?: number, tags?: object, _meta: {op, uuid}}`, key /id."""
    return {
        "name": name,
        "key": ["/id"],
        "uuidPtr": "/_meta/uuid",
        "projections": sorted(
            [
                projection("id", "/id", ["integer"], key=True),
                projection("name", "/name", ["string"]),
                projection("score", "/score", ["number", "null"], must=False),
                projection("tags", "/tags", ["object"], must=False),
                projection("_meta/op", "/_meta/op", ["string"], must=False),
                projection("flow_published_at", "/_meta/uuid", ["string"], fmt="date-time"),
                projection("flow_document", "", ["object"]),
            ],
            key=lambda p: p["field"],
        ),
    }


def binding(
    table: str,
    collection: dict[str, Any],
    *,
    delta: bool = False,
    schema: str | None = None,
    document: bool = True,
    values: list[str] | None = None,
    **resource: Any,
) -> dict[str, Any]:
    res: dict[str, Any] = {"table": table, **resource}
    if delta:
        res["delta_updates"] = True
    if schema:
        res["schema"] = schema
    keys = [p["field"] for p in collection["projections"] if p.get("isPrimaryKey")]
    if values is None:
        values = sorted(p["field"] for p in collection["projections"] if p["ptr"] != "" and not p.get("isPrimaryKey"))
    sel: dict[str, Any] = {"keys": keys, "values": values}
    if document:
        sel["document"] = "flow_document"
    b: dict[str, Any] = {"resourceConfig": res, "collection": collection, "fieldSelection": sel}
    if delta:
        b["deltaUpdates"] = True
    return b


def materialization(endpoint: dict[str, Any], *bindings: dict[str, Any], name: str = "acme/mat") -> MaterializationSpec:
    resolved = []
    for b in bindings:
        res = b["resourceConfig"]
        resolved.append({**b, "resourcePath": [res.get("schema") or endpoint.get("schema", "public"), res["table"]]})
    spec = {"name": name, "connectorType": "IMAGE", "config": endpoint, "bindings": resolved}
    return msgspec.json.decode(json.dumps(spec), type=MaterializationSpec)
