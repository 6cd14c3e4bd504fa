"""The table model of a binding: which columns, in what order, of what types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import EndpointConfig, ResourceConfig, parse_resource
from .identifiers import quote, quote_path, truncate
from .protocol.messages import CollectionSpec, MaterializationBinding, Projection, parse_raw
from .typemap import ColumnType, map_projection

CHECKPOINTS_TABLE = "flow_checkpoints_v1"


class BindingError(ValueError):
    """A binding that cannot be materialized as specified; the message names it."""


@dataclass(frozen=True)
class Column:
    field: str
    ident: str  # quoted as needed
    projection: Projection
    type: ColumnType
    is_key: bool
    not_null: bool

    @property
    def ddl(self) -> str:
        return self.type.ddl + (" NOT NULL" if self.not_null else "")

    @property
    def nullable_ddl(self) -> str:
        return self.type.ddl

    def comment(self) -> str:
        inf = self.projection.inference
        source = "user-provided" if self.projection.explicit else "auto-generated"
        parts = [p for p in (inf.title, inf.description) if p]
        parts.append(
            f"{source} projection of JSON at: {self.projection.ptr} with inferred types: [{' '.join(inf.types)}]"
        )
        return "\n".join(parts)


@dataclass(frozen=True)
class Table:
    binding: int
    path: list[str]
    ident: str
    collection: str
    materialization: str
    keys: list[Column]
    values: list[Column]
    document: Column | None
    delta_updates: bool
    resource: ResourceConfig
    backfill: int

    @property
    def columns(self) -> list[Column]:
        return [*self.keys, *self.values, *([self.document] if self.document else [])]

    @property
    def name(self) -> str:
        return self.path[-1]

    @property
    def schema(self) -> str:
        return self.path[0] if len(self.path) > 1 else "public"

    def comment(self) -> str:
        return f"Generated for materialization {self.materialization} of collection {self.collection}"


def resource_path(resource: ResourceConfig, endpoint: EndpointConfig) -> list[str]:
    return resource.path(endpoint.schema_name)


def checkpoints_path(endpoint: EndpointConfig) -> list[str]:
    return [endpoint.schema_name, CHECKPOINTS_TABLE] if endpoint.schema_name else [CHECKPOINTS_TABLE]


def field_configs(raw_map: dict[str, Any]) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for name, value in raw_map.items():
        parsed = parse_raw(value, {})
        out[name] = parsed if isinstance(parsed, dict) else {}
    return out


def build_column(
    collection: CollectionSpec,
    field: str,
    *,
    is_key: bool,
    cfg: dict[str, Any] | None,
    flags: dict[str, bool],
    path: list[str],
    delta: bool,
) -> Column:
    p = collection.projection(field)
    if p is None:
        raise BindingError(f"collection {collection.name!r} has no projection named {field!r}")
    ctype = map_projection(p, is_key=is_key, field_config=cfg, flags=flags, table_path=path)
    not_null = p.inference.must_exist or (is_key and not delta)
    return Column(field, quote(field), p, ctype, is_key, not_null)


def build_table(index: int, binding: MaterializationBinding, endpoint: EndpointConfig, materialization: str) -> Table:
    resource = parse_resource(parse_raw(binding.resource_config, {}))
    path = list(binding.resource_path) or resource_path(resource, endpoint)
    flags = endpoint.feature_flags()
    sel = binding.field_selection
    cfgs = field_configs(sel.field_config)
    delta = binding.delta_updates or resource.delta_updates

    def col(field: str, is_key: bool) -> Column:
        return build_column(
            binding.collection, field, is_key=is_key, cfg=cfgs.get(field), flags=flags, path=path, delta=delta
        )

    keys = [col(f, True) for f in sel.keys]
    values = [col(f, False) for f in sel.values]
    document = col(sel.document, False) if sel.document else None
    table = Table(
        binding=index,
        path=path,
        ident=quote_path(path),
        collection=binding.collection.name,
        materialization=materialization,
        keys=keys,
        values=values,
        document=document,
        delta_updates=delta,
        resource=resource,
        backfill=binding.backfill,
    )
    check_truncation_collisions(table)
    return table


def check_truncation_collisions(table: Table) -> None:
    """PostgreSQL cuts names at 63 bytes; two fields that cut to the same name would share a column."""
    seen: dict[str, str] = {}
    for c in table.columns:
        short = truncate(c.field)
        if short in seen and seen[short] != c.field:
            raise BindingError(
                f"fields {seen[short]!r} and {c.field!r} of table {'.'.join(table.path)} are the same in their "
                f"first 63 bytes, which is all PostgreSQL keeps of a column name; exclude one of them or "
                f"give one a shorter projection name"
            )
        seen[short] = c.field
