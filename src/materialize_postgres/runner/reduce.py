"""Combining documents by key with a collection's reduction annotations, as Flow does.

Each location may carry `reduce: {strategy: ...}` (default lastWriteWins), directly or through
`if`/`then`/`else`; `reduce: {delete: true}` marks the reduced document as a deletion. Strategies
Flow has that this runner does not implement are refused when the catalog is loaded, never
silently treated as lastWriteWins.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jsonschema
from jsonschema.validators import Draft202012Validator

SUPPORTED = {"lastWriteWins", "firstWriteWins", "merge", "sum", "minimize", "maximize", "append"}
KNOWN = SUPPORTED | {"set", "jsonSchemaMerge"}


class ReduceError(ValueError):
    pass


class Reducer:
    def __init__(self, schema: dict[str, Any], collection: str = "") -> None:
        self.root = schema
        self.collection = collection
        self._if_cache: dict[int, Draft202012Validator] = {}
        self._check(schema, "")

    # -- start-up checks -------------------------------------------------------------------

    def _check(self, node: Any, where: str, depth: int = 0) -> None:
        if not isinstance(node, dict) or depth > 32:
            return
        strategy = (node.get("reduce") or {}).get("strategy") if isinstance(node.get("reduce"), dict) else None
        if strategy is not None and strategy not in SUPPORTED:
            kind = "is not supported by the standalone runner" if strategy in KNOWN else "is not a Flow strategy"
            raise ReduceError(
                f"collection {self.collection!r}: reduce strategy {strategy!r} at {where or '/'} {kind} "
                f"(supported: {', '.join(sorted(SUPPORTED))})"
            )
        for key in ("then", "else", "if"):
            self._check(node.get(key), where, depth + 1)
        for key in ("allOf", "anyOf", "oneOf"):
            for sub in node.get(key, []) or []:
                self._check(sub, where, depth + 1)
        for name, sub in (node.get("properties") or {}).items():
            self._check(sub, f"{where}/{name}", depth + 1)
        for key in ("items", "additionalProperties"):
            self._check(node.get(key), f"{where}/*", depth + 1)
        for sub in (node.get("$defs") or node.get("definitions") or {}).values():
            self._check(sub, where, depth + 1)

    # -- annotations -----------------------------------------------------------------------

    def _resolve(self, node: Any) -> dict[str, Any]:
        for _ in range(32):
            if not isinstance(node, dict) or "$ref" not in node:
                break
            target: Any = self.root
            for part in filter(None, node["$ref"].lstrip("#").split("/")):
                target = target.get(part.replace("~1", "/").replace("~0", "~"), {}) if isinstance(target, dict) else {}
            node = {**target, **{k: v for k, v in node.items() if k != "$ref"}}
        return node if isinstance(node, dict) else {}

    def _matches(self, node: dict[str, Any], doc: Any) -> bool:
        validator = self._if_cache.get(id(node))
        if validator is None:
            validator = Draft202012Validator(
                {**node, "$defs": self.root.get("$defs", {}), "definitions": self.root.get("definitions", {})}
            )
            self._if_cache[id(node)] = validator
        return validator.is_valid(doc)

    def annotation(self, node: Any, doc: Any) -> dict[str, Any]:
        """The `reduce` annotation applying to `doc` at this schema node."""
        node = self._resolve(node)
        found: dict[str, Any] = dict(node.get("reduce") or {}) if isinstance(node.get("reduce"), dict) else {}
        if "if" in node:
            branch = node.get("then") if self._matches(self._resolve(node["if"]), doc) else node.get("else")
            if branch is not None:
                found.update(self.annotation(branch, doc))
        for sub in node.get("allOf", []) or []:
            found.update(self.annotation(sub, doc))
        return found

    def _child(self, node: dict[str, Any], key: str | int) -> dict[str, Any]:
        node = self._resolve(node)
        if isinstance(key, str):
            props = node.get("properties") or {}
            if key in props:
                return self._resolve(props[key])
            extra = node.get("additionalProperties")
            return self._resolve(extra) if isinstance(extra, dict) else {}
        items = node.get("items")
        return self._resolve(items) if isinstance(items, dict) else {}

    # -- reduction -------------------------------------------------------------------------

    def reduce(self, left: Any, right: Any) -> Any:
        """`right` (newer) reduced onto `left`."""
        return self._reduce(self.root, left, right)

    def _reduce(self, node: dict[str, Any], left: Any, right: Any) -> Any:
        strategy = self.annotation(node, right).get("strategy", "lastWriteWins")
        return _STRATEGIES[strategy](self, node, left, right)

    def _merge(self, node: dict[str, Any], left: Any, right: Any) -> Any:
        if isinstance(left, dict) and isinstance(right, dict):
            out = dict(left)
            for k, v in right.items():
                out[k] = self._reduce(self._child(node, k), left[k], v) if k in left else v
            return out
        if isinstance(left, list) and isinstance(right, list):
            merged = [
                self._reduce(self._child(node, i), a, b) for i, (a, b) in enumerate(zip(left, right, strict=False))
            ]
            longer = left if len(left) > len(right) else right
            return merged + longer[len(merged) :]
        return right

    def is_delete(self, doc: Any) -> bool:
        return bool(self.annotation(self.root, doc).get("delete"))


def _sum(r: Reducer, node: dict[str, Any], left: Any, right: Any) -> Any:
    if _is_number(left) and _is_number(right):
        return left + right
    return right


def _is_number(v: Any) -> bool:
    return isinstance(v, int | float) and not isinstance(v, bool)


def _minimize(r: Reducer, node: dict[str, Any], left: Any, right: Any) -> Any:
    try:
        return right if right < left else left
    except TypeError:
        return right


def _maximize(r: Reducer, node: dict[str, Any], left: Any, right: Any) -> Any:
    try:
        return right if right > left else left
    except TypeError:
        return right


def _append(r: Reducer, node: dict[str, Any], left: Any, right: Any) -> Any:
    if isinstance(left, list) and isinstance(right, list):
        return left + right
    return right


_STRATEGIES: dict[str, Callable[[Reducer, dict[str, Any], Any, Any], Any]] = {
    "lastWriteWins": lambda r, n, left, right: right,
    "firstWriteWins": lambda r, n, left, right: left,
    "merge": Reducer._merge,
    "sum": _sum,
    "minimize": _minimize,
    "maximize": _maximize,
    "append": _append,
}


def validator(schema: dict[str, Any]) -> Callable[[Any], str | None]:
    """A document check against the collection schema: None when valid, else the first problem."""
    v = Draft202012Validator(schema)

    def check(doc: Any) -> str | None:
        err = jsonschema.exceptions.best_match(v.iter_errors(doc))
        if err is None:
            return None
        where = "/" + "/".join(str(p) for p in err.absolute_path)
        return f"at {where}: {err.message[:300]}"

    return check
