"""JSON the mocks answer with: structured outputs and tool-call arguments.

A requested JSON schema (OpenAI's `response_format`, Anthropic's
`output_config.format`) and a tool's schema (`parameters`, `input_schema`) get an
instance of the schema with plausible typed values, so a client validating the
answer against its own model (an SDK's `.parse()`, pydantic) accepts it; OpenAI's
`json_object` mode gets a small object. Values come from the caller's RNG, so
they are as reproducible as the answer text. The subset of JSON Schema that
structured outputs accept is covered: types (also as lists), `enum`, `const`,
`anyOf`/`oneOf`/`allOf`, `$ref` into `$defs`/`definitions`, arrays with `items`
and `minItems`.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping
from typing import Any, Final

from providers.mock.text import WORDS

__all__ = ["instance_of", "json_object_answer", "tool_input"]

# Recursive schemas (a tree of nodes) stop here with the smallest valid value.
_MAX_DEPTH: Final = 6


def json_object_answer(rng: random.Random, text: str) -> dict[str, Any]:
    """What `json_object` mode answers: the prompt's answer wrapped in an object."""
    return {"answer": text, "confidence": round(rng.uniform(0.5, 1.0), 2)}


def instance_of(schema: Mapping[str, Any], rng: random.Random) -> Any:
    """A value valid against `schema` (unknown keywords are ignored, as the APIs do)."""
    return _Generator(schema, rng).value(schema, 0)


def tool_input(schema: Mapping[str, Any], rng: random.Random) -> dict[str, Any]:
    """A tool call's arguments: an instance of the tool's schema, always an object."""
    # A tool without a schema (or with `{}`) takes an object all the same.
    whole = schema if "type" in schema else {"type": "object", **schema}
    value = instance_of(whole, rng)
    return value if isinstance(value, dict) else {}


class _Generator:
    __slots__ = ("_rng", "_root")

    def __init__(self, root: Mapping[str, Any], rng: random.Random) -> None:
        self._root = root
        self._rng = rng

    def value(self, schema: Any, depth: int) -> Any:
        if not isinstance(schema, Mapping):
            return None  # `true`/`{}` schemas accept anything; null is the simplest
        schema = self._resolve(schema)
        if "const" in schema:
            return schema["const"]
        if isinstance(schema.get("enum"), list) and schema["enum"]:
            return self._rng.choice(schema["enum"])
        for key in ("anyOf", "oneOf", "allOf"):
            options = schema.get(key)
            if isinstance(options, list) and options:
                # The first option, which for `T | None` is the non-null one.
                return self.value(options[0], depth)
        return self._typed(schema, _type_of(schema), depth)

    def _resolve(self, schema: Mapping[str, Any]) -> Mapping[str, Any]:
        for _ in range(32):  # a chain of refs, never a cycle of them
            ref = schema.get("$ref")
            if not isinstance(ref, str) or not ref.startswith("#/"):
                return schema
            target: Any = self._root
            for part in ref[2:].split("/"):
                target = target.get(part) if isinstance(target, Mapping) else None
            if not isinstance(target, Mapping):
                return {}
            schema = target
        return schema

    def _typed(self, schema: Mapping[str, Any], kind: str, depth: int) -> Any:
        if kind == "object":
            return self._object(schema, depth)
        if kind == "array":
            return self._array(schema, depth)
        return _SCALARS.get(kind, _null)(self._rng)

    def _object(self, schema: Mapping[str, Any], depth: int) -> dict[str, Any]:
        properties = schema.get("properties")
        if not isinstance(properties, Mapping) or depth >= _MAX_DEPTH:
            return {}
        required = schema.get("required")
        # Strict schemas list every property as required; loose ones may list none,
        # and then every property is still a fine thing to answer with.
        names = [n for n in properties if not isinstance(required, list) or n in required]
        return {n: self.value(properties[n], depth + 1) for n in names}

    def _array(self, schema: Mapping[str, Any], depth: int) -> list[Any]:
        low = schema.get("minItems")
        count = low if isinstance(low, int) and low > 0 else 2
        if depth >= _MAX_DEPTH:
            count = low if isinstance(low, int) and low > 0 else 0
        return [self.value(schema.get("items"), depth + 1) for _ in range(count)]


def _type_of(schema: Mapping[str, Any]) -> str:
    kind = schema.get("type")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if isinstance(kind, str):
        return kind
    if "properties" in schema:
        return "object"
    if "items" in schema:
        return "array"
    return "string"


def _string(rng: random.Random) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(1, 3)))


def _integer(rng: random.Random) -> int:
    return rng.randint(1, 100)


def _number(rng: random.Random) -> float:
    return round(rng.uniform(0.0, 100.0), 2)


def _boolean(rng: random.Random) -> bool:
    return rng.random() < 0.5


def _null(rng: random.Random) -> None:
    return None


_SCALARS: Final[Mapping[str, Callable[[random.Random], Any]]] = {
    "string": _string,
    "integer": _integer,
    "number": _number,
    "boolean": _boolean,
    "null": _null,
}
