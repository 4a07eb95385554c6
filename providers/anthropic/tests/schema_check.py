"""A small JSON Schema checker for the tests, independent of the mock's generator.

Covers what the tests' schemas use: `type` (also as a list), `properties`,
`required`, `additionalProperties: false`, `enum`, `const`, `items`, `minItems`,
`anyOf`/`oneOf`, and `$ref` into `$defs`. It reports problems rather than
raising, so a failing test shows every one of them.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

__all__ = ["problems"]

_TYPES: Final[Mapping[str, tuple[type, ...]]] = {
    "object": (dict,),
    "array": (list,),
    "string": (str,),
    "integer": (int,),
    "number": (int, float),
    "boolean": (bool,),
    "null": (type(None),),
}


def problems(value: Any, schema: Mapping[str, Any]) -> list[str]:
    """Where `value` breaks `schema`; empty when it is valid."""
    found: list[str] = []
    _check(value, schema, schema, "$", found)
    return found


def _check(
    value: Any, schema: Mapping[str, Any], root: Mapping[str, Any], at: str, found: list[str]
) -> None:
    ref = schema.get("$ref")
    if isinstance(ref, str):
        name = ref.removeprefix("#/$defs/")
        _check(value, root["$defs"][name], root, at, found)
        return
    options = schema.get("anyOf") or schema.get("oneOf")
    if options:
        if all(_failures(value, option, root, at) for option in options):
            found.append(f"{at}: matches none of {len(options)} options")
        return
    if "const" in schema and value != schema["const"]:
        found.append(f"{at}: {value!r} is not {schema['const']!r}")
    if "enum" in schema and value not in schema["enum"]:
        found.append(f"{at}: {value!r} not in {schema['enum']!r}")
    kinds = schema.get("type")
    if kinds is not None and not any(
        _is(value, kind) for kind in (kinds if isinstance(kinds, list) else [kinds])
    ):
        found.append(f"{at}: {value!r} is not of type {kinds!r}")
        return
    if isinstance(value, dict):
        _check_object(value, schema, root, at, found)
    if isinstance(value, list):
        low = schema.get("minItems", 0)
        if len(value) < low:
            found.append(f"{at}: {len(value)} items, fewer than {low}")
        for i, item in enumerate(value):
            _check(item, schema.get("items", {}), root, f"{at}[{i}]", found)


def _check_object(
    value: dict[str, Any],
    schema: Mapping[str, Any],
    root: Mapping[str, Any],
    at: str,
    found: list[str],
) -> None:
    properties: Mapping[str, Any] = schema.get("properties", {})
    for name in schema.get("required", []):
        if name not in value:
            found.append(f"{at}: missing required {name!r}")
    for name, item in value.items():
        if name in properties:
            _check(item, properties[name], root, f"{at}.{name}", found)
        elif schema.get("additionalProperties") is False:
            found.append(f"{at}: unexpected property {name!r}")


def _failures(value: Any, schema: Mapping[str, Any], root: Mapping[str, Any], at: str) -> bool:
    found: list[str] = []
    _check(value, schema, root, at, found)
    return bool(found)


def _is(value: Any, kind: str) -> bool:
    if isinstance(value, bool) and kind in ("integer", "number"):
        return False  # JSON booleans are not numbers, though Python's are
    return isinstance(value, _TYPES.get(kind, ()))
