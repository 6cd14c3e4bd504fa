"""Validate: which projections of each binding can, must or cannot be materialized.

The rules are the Go connector's, so a Flow user sees the same field selection with either: one
constraint per projection, first for a new table, then adjusted by what an existing table holds.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from .config import EndpointConfig, parse_resource
from .identifiers import MAX_IDENTIFIER_BYTES, quote, truncate
from .introspect import ExistingTable, lookup
from .migrations import migration_cast
from .protocol.messages import (
    CollectionSpec,
    Constraint,
    MaterializationBinding,
    MaterializationSpec,
    Projection,
    Validate,
    Validated,
    ValidatedBinding,
    parse_raw,
)
from .tables import field_configs, resource_path
from .typemap import ValueError_, describe_types, flat_type, map_projection

REQUIRED_FIELD = "FIELD_REQUIRED"
REQUIRED_LOCATION = "LOCATION_REQUIRED"
RECOMMENDED = "LOCATION_RECOMMENDED"
OPTIONAL = "FIELD_OPTIONAL"
FORBIDDEN = "FIELD_FORBIDDEN"
INCOMPATIBLE = "INCOMPATIBLE"


class ValidationFailure(ValueError):
    """The whole Validate fails: the binding cannot be materialized until the user acts."""


@dataclass
class BindingContext:
    index: int
    collection: CollectionSpec
    path: list[str]
    delta: bool
    backfill: int
    field_config: dict[str, dict[str, Any]]
    existing: ExistingTable | None
    last: MaterializationBinding | None


def c(kind: str, reason: str) -> Constraint:
    return Constraint(type=kind, reason=reason)


def last_bindings(last: MaterializationSpec | None) -> dict[tuple[str, ...], MaterializationBinding]:
    if last is None:
        return {}
    return {tuple(b.resource_path): b for b in last.bindings if b.resource_path}


def validate(req: Validate, cfg: EndpointConfig, tables: dict[tuple[str, str], ExistingTable]) -> Validated:
    flags = cfg.feature_flags()
    previous = last_bindings(req.last_materialization)
    seen: dict[tuple[str, ...], str] = {}
    out: list[ValidatedBinding] = []
    for i, b in enumerate(req.bindings):
        resource = parse_resource(parse_raw(b.resource_config, {}))
        path = resource_path(resource, cfg)
        if tuple(path) in seen:
            raise ValidationFailure(
                f"bindings for collections {seen[tuple(path)]!r} and {b.collection.name!r} both write to table "
                f"{'.'.join(path)}; give each binding its own table"
            )
        seen[tuple(path)] = b.collection.name
        ctx = BindingContext(
            index=i,
            collection=b.collection,
            path=path,
            delta=resource.delta_updates,
            backfill=b.backfill,
            field_config=field_configs(b.field_config),
            existing=lookup(tables, path),
            last=previous.get(tuple(path)),
        )
        constraints = binding_constraints(ctx, cfg, flags)
        out.append(ValidatedBinding(constraints=constraints, resource_path=path, delta_updates=ctx.delta))
    return Validated(bindings=out)


def check_hard_errors(ctx: BindingContext, flags: dict[str, bool]) -> None:
    name = ctx.collection.name
    for ptr in ctx.collection.key:
        for p in ctx.collection.projections:
            if p.ptr == ptr and not p.inference.must_exist and not len(p.inference.default):
                raise ValidationFailure(
                    f"cannot materialize collection {name!r} with nullable key field {p.field!r} unless it has a "
                    "default value annotation: make the key required (and not null) in the collection schema"
                )
    if ctx.existing is not None and ctx.last is None and not flags.get("allow_existing_tables_for_new_bindings"):
        raise ValidationFailure(
            f"table [{', '.join(ctx.path)}] already exists for new binding {name!r}. Drop the table or choose "
            "another table name; to adopt an existing table, set the feature flag "
            "'allow_existing_tables_for_new_bindings'"
        )
    last = ctx.last
    if (
        last is not None
        and ctx.existing is not None
        and last.delta_updates
        and not ctx.delta
        and (last.backfill == ctx.backfill)
    ):
        raise ValidationFailure(
            f"binding {name!r}: changing table {'.'.join(ctx.path)} from delta updates to standard updates "
            "is not allowed; backfill the binding or materialize into a new table"
        )


def check_key_truncation(ctx: BindingContext) -> None:
    """Key columns must be created, so two keys that PostgreSQL would cut to one name cannot work."""
    seen: dict[str, str] = {}
    for p in ctx.collection.projections:
        if not (p.is_primary_key or p.ptr in ctx.collection.key):
            continue
        short = truncate(p.field)
        if short in seen and seen[short] != p.field:
            raise ValidationFailure(
                f"key fields {seen[short]!r} and {p.field!r} of collection {ctx.collection.name!r} are the same in "
                f"their first {MAX_IDENTIFIER_BYTES} bytes, which is all PostgreSQL keeps of a column name; "
                "give one of them a shorter projection name"
            )
        seen[short] = p.field


def binding_constraints(ctx: BindingContext, cfg: EndpointConfig, flags: dict[str, bool]) -> dict[str, Constraint]:
    check_hard_errors(ctx, flags)
    check_key_truncation(ctx)
    no_doc = cfg.advanced.no_flow_document
    same_table = ctx.existing is not None and (ctx.last is None or ctx.last.backfill == ctx.backfill)
    if not same_table:
        return new_table_constraints(ctx.collection, delta=ctx.delta, no_flow_document=no_doc)
    if not ctx.delta and not no_doc and not any(p.ptr == "" for p in ctx.collection.projections):
        raise ValidationFailure(
            f"collection {ctx.collection.name!r} has no root document projection, which is required for a "
            "standard-updates materialization"
        )
    out: dict[str, Constraint] = {}
    for p in ctx.collection.projections:
        # The projection's own constraint, without the whole-table rules of a new table.
        base = new_field_constraint(p, ctx.collection, delta=ctx.delta, no_flow_document=no_doc)
        out[p.field] = existing_constraint(ctx, p, base, cfg, flags)
    return out


def new_table_constraints(collection: CollectionSpec, *, delta: bool, no_flow_document: bool) -> dict[str, Constraint]:
    out = {
        p.field: new_field_constraint(p, collection, delta=delta, no_flow_document=no_flow_document)
        for p in collection.projections
    }
    if delta:
        return out
    documents = [p for p in collection.projections if p.ptr == "" and out[p.field].type == REQUIRED_LOCATION]
    for extra in documents[1:]:
        out[extra.field] = c(FORBIDDEN, "Only one root document projection can be materialized for standard updates")
    first_key = collection.key[0] if collection.key else None
    for p in collection.projections:
        if p.ptr == first_key and out[p.field].type in (RECOMMENDED, OPTIONAL):
            out[p.field] = c(
                REQUIRED_LOCATION, "The first component of the collection key must be materialized for standard updates"
            )
    return out


def new_field_constraint(
    p: Projection, collection: CollectionSpec, *, delta: bool, no_flow_document: bool
) -> Constraint:
    types = p.inference.types
    if p.ptr in collection.key or p.is_primary_key:
        return c(RECOMMENDED, "Every location of the collection key should be materialized")
    if p.ptr == "":
        if no_flow_document:
            return c(OPTIONAL, "The root document is optional because no_flow_document is enabled")
        if delta:
            return c(RECOMMENDED, "The root document is usually materialized")
        return c(REQUIRED_LOCATION, "The root document must be materialized for standard updates")
    if not types:
        return c(FORBIDDEN, "A field without any type cannot be materialized")
    if types == ["null"]:
        return c(FORBIDDEN, "A field that can only be null cannot be materialized")
    if not delta and no_flow_document and p.ptr.count("/") == 1 and p.inference.must_exist:
        return c(REQUIRED_LOCATION, "Required top-level fields must be materialized when no_flow_document is enabled")
    if p.field == "_meta/op":
        return c(RECOMMENDED, "The operation type (create, update, delete) is usually materialized")
    if p.field.startswith("_meta/"):
        return c(OPTIONAL, "Metadata fields may be materialized")
    flat = flat_type(p)
    if flat in ("integer", "number", "boolean", "string", "binary", "string_integer", "string_number"):
        return c(RECOMMENDED, "This field has a single scalar type")
    if flat == "object":
        return c(OPTIONAL, "Object fields may be materialized as JSON")
    return c(RECOMMENDED, "This field can be materialized as JSON")


def existing_constraint(
    ctx: BindingContext, p: Projection, base: Constraint, cfg: EndpointConfig, flags: dict[str, bool]
) -> Constraint:
    if base.type == FORBIDDEN:
        return base
    is_key = p.ptr in ctx.collection.key or p.is_primary_key
    if p.ptr == "" and not ctx.delta:
        return _existing_document(ctx, p, base, flags)
    if is_key and not ctx.delta and _new_key(ctx, p.field):
        return c(
            FORBIDDEN,
            "A new key field cannot be added to an existing standard-updates table without a backfill",
        )
    column = ctx.existing.column(p.field) if ctx.existing else None
    if column is None:
        return base
    incompatible = _incompatibility(ctx, p, column, is_key=is_key, flags=flags)
    if incompatible:
        return c(INCOMPATIBLE, incompatible)
    if is_key:
        return c(REQUIRED_FIELD, "This field is a key of the existing table")
    return c(OPTIONAL, "This field is a column of the existing table")


def _new_key(ctx: BindingContext, field: str) -> bool:
    """A key field the last spec did not select at all (a former value may become a key)."""
    if ctx.last is None:
        return False
    sel = ctx.last.field_selection
    return field not in sel.keys and field not in sel.values and field != sel.document


def _existing_document(ctx: BindingContext, p: Projection, base: Constraint, flags: dict[str, bool]) -> Constraint:
    """The document of a standard table stays the field it was: the last spec's, else the first root one."""
    roots = [q.field for q in ctx.collection.projections if q.ptr == ""]
    column = ctx.existing.column(p.field) if ctx.existing else None
    if base.type == OPTIONAL and column is None and not (ctx.last and ctx.last.field_selection.document):
        return base  # no_flow_document, and the table has no document column: it may stay without one
    current = ctx.last.field_selection.document if ctx.last else roots[0]
    if current and current not in roots and p.field == roots[0]:
        return c(
            INCOMPATIBLE,
            f"The document was materialized as field {current!r}, which the collection no longer has; "
            "backfill the binding to choose another root document projection",
        )
    if current == p.field:
        reason = _incompatibility(ctx, p, column, is_key=False, flags=flags) if column else None
        return c(INCOMPATIBLE, reason) if reason else c(REQUIRED_FIELD, "This field holds the document in the table")
    if current:
        return c(
            FORBIDDEN,
            f"The root document projection {p.field!r} cannot be materialized because field {current!r} "
            "already holds the document",
        )
    return c(INCOMPATIBLE, "A root document column cannot be added to an existing table without a backfill")


def _incompatibility(
    ctx: BindingContext, p: Projection, column: Any, *, is_key: bool, flags: dict[str, bool]
) -> str | None:
    try:
        ctype = map_projection(
            p, is_key=is_key, field_config=ctx.field_config.get(p.field), flags=flags, table_path=ctx.path
        )
    except ValueError_ as err:
        return str(err)
    if ctype.is_compatible(column.data_type, column.udt_name):
        return None
    if not is_key and migration_cast(column, ctype, quote(p.field)) is not None:
        return None
    return (
        f"Field {p.field!r} is already materialized as endpoint type {column.type_label!r} but endpoint type "
        f"{ctype.ddl.upper()!r} is required by its schema '{describe_types(p)}'; backfill the binding to "
        "recreate the table"
    )
