"""Normalise the seed's `model.*` option keys into one typed value object.

Producers migrating from the system we replace send keys such as
`model.temperature` with loosely typed values (numbers as strings, stop lists
as comma-separated text, `response_format` as a bare type name, `metadata` as
a JSON string). Each key means what it meant there (shared/reference/
rapida-integration-api.md, "`model.*` keys honoured"): `max_completion_tokens`
is the answer's token limit, kept as `max_tokens` here and sent under whichever
name the provider and model want. Unknown keys are ignored; a known key with a
value that cannot be coerced, or that holds NaN or infinity anywhere (JSON
cannot carry them to the provider), is a `ContractError` naming `options.<key>`.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from contracts.errors import ContractError
from providers.finite import require_finite


@dataclass(frozen=True, slots=True)
class ModelOptions:
    name: str | None = None
    temperature: float | None = None
    max_tokens: int | None = None
    top_p: float | None = None
    stop: tuple[str, ...] | None = None
    tool_choice: str | dict[str, Any] | None = None
    frequency_penalty: float | None = None
    presence_penalty: float | None = None
    seed: int | None = None
    response_format: dict[str, Any] | None = None
    user: str | None = None
    reasoning_effort: str | None = None
    service_tier: str | None = None
    top_logprobs: int | None = None
    metadata: dict[str, str] | None = None

    @classmethod
    def from_mapping(cls, raw: Mapping[str, Any]) -> ModelOptions:
        values: dict[str, Any] = {}
        for key, value in raw.items():
            name = key.removeprefix("model.")
            if name == "max_completion_tokens":
                name = "max_tokens"
            coerce = _COERCERS.get(name)
            if coerce is None or value is None:
                continue
            try:
                coerced = coerce(value)
            except (TypeError, ValueError) as exc:
                raise ContractError(f"options.{key}", str(exc)) from None
            # After coercion: "nan" and "1e999" become non-finite floats only then.
            require_finite(coerced, f"options.{key}")
            values[name] = coerced
        return cls(**values)


def _float(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, int | float | str):
        raise TypeError(f"expected a number, got {type(v).__name__}")
    return float(v)


def _int(v: Any) -> int:
    if isinstance(v, bool):
        raise TypeError("expected an integer, got bool")
    if isinstance(v, int):
        return v
    if isinstance(v, float):
        if not v.is_integer():  # also NaN and infinity
            raise ValueError(f"{v!r} is not an integer")
        return int(v)
    if isinstance(v, str):
        return int(v.strip())
    raise TypeError(f"expected an integer, got {type(v).__name__}")


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise TypeError(f"expected a string, got {type(v).__name__}")
    return v


def _stop(v: Any) -> tuple[str, ...]:
    if isinstance(v, str):
        return tuple(s for s in v.split(",") if s) if "," in v else (v,)
    if isinstance(v, list | tuple) and all(isinstance(s, str) for s in v):
        return tuple(v)
    raise TypeError("expected a string or a list of strings")


def _json_object(v: Any) -> dict[str, Any]:
    if isinstance(v, str):
        v = json.loads(v)
    if not isinstance(v, dict):
        raise TypeError("expected an object")
    return v


_FORMAT_TYPES = ("text", "json_object", "json_schema")


def _response_format(v: Any) -> dict[str, Any]:
    if isinstance(v, str) and v.strip() in _FORMAT_TYPES:
        return {"type": v.strip()}  # the seed's bare `json_object`
    value = _json_object(v)
    schema = value.get("json_schema")
    if isinstance(schema, str):  # the schema itself sent as JSON text
        value = {**value, "json_schema": _json_object(schema)}
    return value


def _metadata(v: Any) -> dict[str, str]:
    value = _json_object(v)
    if not all(isinstance(k, str) and isinstance(x, str) for k, x in value.items()):
        raise TypeError("expected an object of strings")
    return value


def _tool_choice(v: Any) -> str | dict[str, Any]:
    if isinstance(v, str):
        if v.startswith("{"):
            return _json_object(v)
        return v
    return _json_object(v)


_COERCERS: dict[str, Callable[[Any], Any]] = {
    "name": _str,
    "temperature": _float,
    "max_tokens": _int,
    "top_p": _float,
    "stop": _stop,
    "tool_choice": _tool_choice,
    "frequency_penalty": _float,
    "presence_penalty": _float,
    "seed": _int,
    "response_format": _response_format,
    "user": _str,
    "reasoning_effort": _str,
    "service_tier": _str,
    "top_logprobs": _int,
    "metadata": _metadata,
}
