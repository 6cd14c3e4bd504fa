"""The configuration reference (docs/configuration.md), generated from the Spec's JSON schemas.

`python -m materialize_postgres.reference_docs > docs/configuration.md` regenerates it; a test fails
when the file and the schemas disagree, so the reference can never go stale.
"""

from __future__ import annotations

from typing import Any

from .config import endpoint_schema, resource_schema

HEADER = """# Configuration reference

Generated from the connector's Spec (`materialize-postgres spec`); do not edit by hand, run
`python -m materialize_postgres.reference_docs > docs/configuration.md`.

A property marked *secret* is never logged or shown in errors.
"""


def _type(prop: dict[str, Any]) -> str:
    if "enum" in prop:
        return "one of " + ", ".join(f"`{v}`" for v in prop["enum"])
    if "oneOf" in prop:
        return "one of: " + ", ".join(o.get("title", "?") for o in prop["oneOf"])
    return str(prop.get("type", "object"))


def _rows(schema: dict[str, Any], prefix: str = "") -> list[str]:
    rows: list[str] = []
    required = set(schema.get("required", []))
    for name, prop in schema.get("properties", {}).items():
        path = f"{prefix}/{name}"
        flags = []
        if name in required:
            flags.append("required")
        if "default" in prop:
            flags.append(f"default `{_literal(prop['default'])}`")
        if prop.get("secret"):
            flags.append("secret")
        desc = " ".join(str(prop.get("description", "")).split())
        rows.append(f"| `{path}` | {prop.get('title', '')} | {desc} | {_type(prop)} | {', '.join(flags)} |")
        if prop.get("type") == "object" and "properties" in prop:
            rows += _rows(prop, path)
        for option in prop.get("oneOf", []):
            rows += _rows(option, f"{path}[{option.get('title', '')}]")
    return rows


def _literal(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return ", ".join(f"{k}: {v}" for k, v in value.items())
    return str(value)


def _table(schema: dict[str, Any]) -> str:
    head = "| property | title | description | type | notes |\n| --- | --- | --- | --- | --- |"
    return head + "\n" + "\n".join(_rows(schema))


def render() -> str:
    return (
        HEADER
        + "\n## Endpoint\n\n"
        + _table(endpoint_schema())
        + "\n\nA legacy top-level `password` is also accepted when `credentials` is absent.\n"
        + "\n## Bindings (resource)\n\n"
        + _table(resource_schema())
        + "\n"
    )


if __name__ == "__main__":
    print(render(), end="")
