"""Schemas the Anthropic mock tests ask for, shared by the raw-HTTP and SDK tests.

`Forecast` is a pydantic model so the SDK can parse answers into it, and its JSON
schema brings what generated schemas contain: `$defs` with `$ref`, `anyOf` for
optional values, `enum` for literals, `additionalProperties: false`.
"""

from __future__ import annotations

from typing import Any, Literal

import pydantic

__all__ = ["FORECAST_SCHEMA", "LOOKUP_SCHEMA", "Forecast", "When"]


class When(pydantic.BaseModel):
    day: int
    note: str | None


class Forecast(pydantic.BaseModel):
    model_config = pydantic.ConfigDict(extra="forbid")

    city: str
    days: int
    units: Literal["c", "f"]
    tags: list[str]
    exact: bool | None
    when: When


FORECAST_SCHEMA: dict[str, Any] = Forecast.model_json_schema()
LOOKUP_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
    "required": ["query"],
}
