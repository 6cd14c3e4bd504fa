"""Flow catalogs (flow.yaml): collections, their projections, and materializations as specs.

Projections are inferred from each collection's JSON schema the way Flow's build does: one per
statically known location (`/a/b` is field `a/b`), plus the document itself (`flow_document`),
the publication time (`flow_published_at`, from `/_meta/uuid`) and `_meta/flow_truncated`. The
default field selection is what the connector recommends, as Flow computes it.
"""

from __future__ import annotations

import json
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgspec
import yaml

from ..protocol.messages import CollectionSpec, FieldSelection, MaterializationBinding, MaterializationSpec, raw

TYPE_ORDER = ["array", "boolean", "integer", "null", "number", "object", "string"]
ALL_TYPES = ["array", "boolean", "integer", "null", "number", "object", "string"]
META_UUID = "/_meta/uuid"


class CatalogError(ValueError):
    """The catalog cannot be used; the message names the file and the part that is wrong."""


@dataclass
class Collection:
    name: str
    schema: dict[str, Any]
    key: list[str]
    spec: CollectionSpec


@dataclass
class BindingDef:
    collection: str
    resource: dict[str, Any]
    fields: dict[str, Any]
    backfill: int = 0
    disable: bool = False


@dataclass
class MaterializationDef:
    name: str
    config: dict[str, Any]
    bindings: list[BindingDef] = field(default_factory=list)


@dataclass
class Catalog:
    path: Path
    collections: dict[str, Collection] = field(default_factory=dict)
    materializations: dict[str, MaterializationDef] = field(default_factory=dict)

    def materialization(self, name: str | None) -> MaterializationDef:
        if name is None:
            if len(self.materializations) != 1:
                raise CatalogError(
                    f"{self.path}: has {len(self.materializations)} materializations; name one of: "
                    + ", ".join(self.materializations)
                )
            return next(iter(self.materializations.values()))
        if name not in self.materializations:
            raise CatalogError(f"{self.path}: no materialization named {name!r}")
        return self.materializations[name]

    def to_spec(self, name: str | None = None) -> MaterializationSpec:
        m = self.materialization(name)
        bindings = []
        for b in m.bindings:
            if b.disable:
                continue
            coll = self.collections.get(b.collection)
            if coll is None:
                raise CatalogError(f"{self.path}: materialization {m.name!r} binds unknown collection {b.collection!r}")
            bindings.append(_binding_spec(m, b, coll, m.config))
        return MaterializationSpec(name=m.name, connector_type="IMAGE", config=raw(m.config), bindings=bindings)


# --------------------------------------------------------------------------------------------
# Loading.


def _read(path: Path) -> Any:
    try:
        text = path.read_text()
    except OSError as err:
        raise CatalogError(f"cannot read {path}: {err.strerror}") from None
    try:
        return json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
    except (yaml.YAMLError, ValueError) as err:
        raise CatalogError(f"{path} is not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {err}") from None


def load_catalog(path: Path | str) -> Catalog:
    path = Path(path)
    catalog = Catalog(path)
    _load_into(catalog, path, set())
    return catalog


def _load_into(catalog: Catalog, path: Path, seen: set[Path]) -> None:
    path = path.resolve()
    if path in seen:
        return
    seen.add(path)
    doc = _read(path) or {}
    if not isinstance(doc, dict):
        raise CatalogError(f"{path}: a catalog is a mapping with collections and materializations")
    for imp in doc.get("import", []) or []:
        _load_into(catalog, path.parent / imp, seen)
    for name, spec in (doc.get("collections") or {}).items():
        catalog.collections[name] = _collection(path, name, spec or {})
    for name, spec in (doc.get("materializations") or {}).items():
        catalog.materializations[name] = _materialization(path, name, spec or {})


def _schema(path: Path, value: Any, where: str) -> dict[str, Any]:
    if isinstance(value, str):
        value = _read(path.parent / value)
    if not isinstance(value, dict):
        raise CatalogError(f"{path}: {where} must be a JSON schema object or a relative file name")
    return value


def _collection(path: Path, name: str, spec: dict[str, Any]) -> Collection:
    where = f"collection {name!r}"
    if "schema" in spec:
        schema = _schema(path, spec["schema"], f"{where} schema")
    elif "writeSchema" in spec:
        schema = _schema(path, spec.get("readSchema", spec["writeSchema"]), f"{where} readSchema")
    else:
        raise CatalogError(f"{path}: {where} has no schema")
    key = spec.get("key")
    if not isinstance(key, list) or not key or not all(isinstance(k, str) and k.startswith("/") for k in key):
        raise CatalogError(f"{path}: {where} needs a key: a list of JSON pointers such as [/id]")
    projections = infer_projections(schema, key, spec.get("projections") or {})
    for ptr in key:
        if not any(p["ptr"] == ptr for p in projections):
            raise CatalogError(f"{path}: {where} key {ptr} is not a location its schema declares")
    projections.sort(key=lambda p: p["field"])
    cspec = msgspec.json.decode(
        json.dumps({"name": name, "writeSchema": schema, "key": key, "uuidPtr": META_UUID, "projections": projections}),
        type=CollectionSpec,
    )
    return Collection(name, schema, key, cspec)


def _materialization(path: Path, name: str, spec: dict[str, Any]) -> MaterializationDef:
    endpoint = spec.get("endpoint") or {}
    conn = endpoint.get("connector") or endpoint.get("local") or {}
    config = conn.get("config", {})
    if isinstance(config, str):
        config = _read(path.parent / config)
    bindings = []
    for i, b in enumerate(spec.get("bindings") or []):
        source = b.get("source")
        source = source.get("name") if isinstance(source, dict) else source
        if not isinstance(source, str) or not isinstance(b.get("resource"), dict):
            raise CatalogError(f"{path}: materialization {name!r} binding {i} needs a source and a resource")
        bindings.append(
            BindingDef(
                source, b["resource"], b.get("fields") or {}, int(b.get("backfill", 0)), bool(b.get("disable", False))
            )
        )
    return MaterializationDef(name, config or {}, bindings)


# --------------------------------------------------------------------------------------------
# Projection inference.


class _Resolver:
    def __init__(self, root: dict[str, Any]) -> None:
        self.root = root

    def resolve(self, node: Any) -> dict[str, Any]:
        depth = 0
        while isinstance(node, dict) and "$ref" in node and depth < 32:
            ref = node["$ref"]
            if not ref.startswith("#"):
                raise CatalogError(f"schema $ref {ref!r}: only references within the same schema are supported")
            target: Any = self.root
            for part in filter(None, ref[1:].split("/")):
                part = urllib.parse.unquote(part).replace("~1", "/").replace("~0", "~")
                target = target.get(part) if isinstance(target, dict) else None
            if target is None:
                raise CatalogError(f"schema $ref {ref!r} points nowhere")
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
            depth += 1
        return node if isinstance(node, dict) else {}


@dataclass
class _Shape:
    types: set[str]
    node: dict[str, Any]
    branches: list[dict[str, Any]]


def _types_of(node: dict[str, Any], r: _Resolver) -> set[str]:
    """JSON types a schema node admits (integer counts as number's subset, as in Flow)."""
    if node is True or node == {}:
        return set(ALL_TYPES)
    if "const" in node:
        return {_json_type(node["const"])}
    if "enum" in node:
        return {_json_type(v) for v in node["enum"]}
    types: set[str] | None = None
    if "type" in node:
        t = node["type"]
        types = set(t if isinstance(t, list) else [t])
    for key in ("anyOf", "oneOf"):
        if key in node:
            union: set[str] = set()
            for sub in node[key]:
                union |= _types_of(r.resolve(sub), r)
            types = union if types is None else types & (union | ({"integer"} if "number" in union else set()))
    for sub in node.get("allOf", []):
        sub_types = _types_of(r.resolve(sub), r)
        if sub_types != set(ALL_TYPES):
            types = sub_types if types is None else types & sub_types
    return types if types is not None else set(ALL_TYPES)


def _json_type(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "boolean"
    if isinstance(v, int):
        return "integer"
    if isinstance(v, float):
        return "integer" if v.is_integer() else "number"
    if isinstance(v, str):
        return "string"
    return "array" if isinstance(v, list) else "object"


def _merged(node: dict[str, Any], r: _Resolver) -> dict[str, Any]:
    """A node with its allOf branches folded in (properties, required, annotations)."""
    out = dict(node)
    for sub in node.get("allOf", []):
        sub = _merged(r.resolve(sub), r)
        props = {**sub.get("properties", {}), **out.get("properties", {})}
        out = {**sub, **out, "properties": props, "required": [*sub.get("required", []), *out.get("required", [])]}
    return out


def infer_projections(schema: dict[str, Any], key: list[str], explicit: dict[str, Any]) -> list[dict[str, Any]]:
    r = _Resolver(schema)
    found: list[dict[str, Any]] = []
    root = _merged(r.resolve(schema), r)
    found.append(_projection("flow_document", "", root, r, must=True, key=key))
    _walk(root, "", True, r, key, found, depth=0)
    if not any(p["ptr"] == META_UUID for p in found):
        found.append(
            {
                "ptr": META_UUID,
                "field": "flow_published_at",
                "inference": {
                    "types": ["string"],
                    "string": {"format": "date-time", "contentEncoding": "uuid"},
                    "title": "Flow Publication Time",
                    "description": "Flow publication date-time of this document",
                    "exists": "MUST",
                },
            }
        )
    found.append(
        {
            "ptr": "/_meta/flow_truncated",
            "field": "_meta/flow_truncated",
            "inference": {
                "types": ["boolean"],
                "title": "Flow truncation indicator",
                "description": "Indicates whether any of the materialized values for this row have been "
                "truncated to make them fit inside the limitations of the destination system.",
                "exists": "MUST",
            },
        }
    )
    found = [p for p in found if not (p["ptr"] == "/_meta/uuid" and p["field"] == "_meta/uuid")]
    for name, location in explicit.items():
        ptr = location.get("location") if isinstance(location, dict) else location
        base = next((p for p in found if p["ptr"] == ptr), None)
        if base is None:
            raise CatalogError(f"projection {name!r} names location {ptr!r}, which the schema does not declare")
        found.append({**base, "field": name, "explicit": True})
    return found


def _walk(
    node: dict[str, Any], ptr: str, must: bool, r: _Resolver, key: list[str], out: list[dict[str, Any]], depth: int
) -> None:
    if depth > 16:
        return
    required = set(node.get("required", []))
    for raw_name, sub in (node.get("properties") or {}).items():
        name = str(raw_name)  # YAML reads a property such as `123:` as a number
        child_ptr = f"{ptr}/{name.replace('~', '~0').replace('/', '~1')}"
        child = _merged(r.resolve(sub), r)
        child_must = must and name in required
        field_name = child_ptr[1:]
        if child_ptr == META_UUID:
            field_name = "flow_published_at"
        out.append(_projection(field_name, child_ptr, child, r, must=child_must, key=key))
        if "object" in _types_of(child, r) and child.get("properties"):
            _walk(child, child_ptr, child_must, r, key, out, depth + 1)


def _projection(
    field_name: str, ptr: str, node: dict[str, Any], r: _Resolver, *, must: bool, key: list[str]
) -> dict[str, Any]:
    types = _types_of(node, r)
    inf: dict[str, Any] = {"types": [t for t in TYPE_ORDER if t in types], "exists": "MUST" if must else "MAY"}
    for k in ("title", "description"):
        if isinstance(node.get(k), str):
            inf[k] = node[k]
    if "default" in node:
        inf["default"] = node["default"]
    string = {
        k2: node[k1]
        for k1, k2 in (
            ("format", "format"),
            ("contentEncoding", "contentEncoding"),
            ("contentMediaType", "contentType"),
            ("maxLength", "maxLength"),
        )
        if k1 in node
    }
    if string.get("format") in ("uint32", "uint64", "int32", "int64"):
        string["format"] = "integer"  # Flow reports sized integer formats as plain integer strings
    if "string" in types and string:
        inf["string"] = string
    if "contentMediaType" in node:
        inf["contentMediaType"] = node["contentMediaType"]
    if types & {"integer", "number"}:
        numeric: dict[str, Any] = {}
        for bound, has in (("minimum", "hasMinimum"), ("maximum", "hasMaximum")):
            if isinstance(node.get(bound), int | float):
                numeric[has] = True
                numeric[bound] = node[bound]
        inf["numeric"] = numeric
    if "enum" in node and all(isinstance(v, str) for v in node["enum"] if v is not None):
        inf["enum"] = [v for v in node["enum"] if v is not None]
    p: dict[str, Any] = {"ptr": ptr, "field": field_name, "inference": inf}
    if ptr in key:
        p["isPrimaryKey"] = True
    return p


# --------------------------------------------------------------------------------------------
# Field selection.


def _binding_spec(
    m: MaterializationDef, b: BindingDef, coll: Collection, config: dict[str, Any]
) -> MaterializationBinding:
    from ..validate import FORBIDDEN, new_table_constraints

    delta = bool(b.resource.get("delta_updates"))
    no_doc = bool((config.get("advanced") or {}).get("no_flow_document"))
    constraints = new_table_constraints(coll.spec, delta=delta, no_flow_document=no_doc)
    fields = b.fields or {}
    include: dict[str, Any] = fields.get("include") or {}
    exclude: list[str] = list(fields.get("exclude") or [])
    recommended = fields.get("recommended", True)
    by_field = {p.field: p for p in coll.spec.projections}
    for name in [*include, *exclude]:
        if name not in by_field:
            raise CatalogError(
                f"binding of {coll.name!r} in {m.name!r}: field {name!r} is not a projection of the "
                f"collection (known: {', '.join(sorted(by_field))})"
            )
    keys = [next(p.field for p in coll.spec.projections if p.ptr == ptr and not p.explicit) for ptr in coll.key]
    # Standard updates need the document (unless no_flow_document); delta updates only store it
    # when asked to, as Flow's default selection does.
    document = ""
    if "flow_document" in include or ("flow_document" not in exclude and not no_doc and not delta):
        document = "flow_document"
    values = []
    for p in coll.spec.projections:
        if p.field in keys or p.ptr == "" or p.field in exclude:
            continue
        c = constraints[p.field].type
        if p.field in include:
            if c == FORBIDDEN:
                raise CatalogError(
                    f"binding of {coll.name!r}: field {p.field!r} cannot be materialized "
                    f"({constraints[p.field].reason})"
                )
            values.append(p.field)
        elif recommended and _recommended(p.field, p.ptr, c, recommended):
            values.append(p.field)
    sel = FieldSelection(
        keys=keys, values=sorted(values), document=document, field_config={k: raw(v) for k, v in include.items() if v}
    )
    res = dict(b.resource)
    state_key = "/".join(urllib.parse.quote(x, safe="") for x in [res.get("schema") or "", res.get("table", "")] if x)
    if b.backfill:
        state_key += f".v{b.backfill}"
    schema = res.get("schema") or config.get("schema") or "public"
    return MaterializationBinding(
        resource_config=raw(res),
        resource_path=[schema, str(res.get("table", ""))],
        collection=coll.spec,
        field_selection=sel,
        delta_updates=delta,
        backfill=b.backfill,
        state_key=state_key,
        journal_read_suffix=f"materialize/{m.name}/{state_key}",
    )


def _recommended(field_name: str, ptr: str, constraint: str, depth: Any) -> bool:
    from ..validate import FORBIDDEN, RECOMMENDED, REQUIRED_LOCATION

    if constraint == FORBIDDEN:
        return False
    if ptr.startswith("/_meta/") or ptr == "/_meta":
        return constraint in (RECOMMENDED, REQUIRED_LOCATION)
    limit = depth if isinstance(depth, int) and not isinstance(depth, bool) else 1
    return ptr.count("/") <= limit
