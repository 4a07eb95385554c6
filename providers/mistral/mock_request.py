"""Reading and checking a request the way Mistral does, for the mock.

Mistral validates bodies with pydantic behind FastAPI: a field it does not know,
or of the wrong type, is a 422 whose `detail` lists each problem
(`{"type":"extra_forbidden","loc":["body","seed"],"msg":…,"input":…}`), so a
client sending OpenAI's spellings (`seed`, `stream_options`,
`max_completion_tokens`, `user`) is refused here as it is there. Its own checks
(an unknown model, a tool-call id that is not 9 letters and digits, a prompt past
the context window) are 400s in its error object; see `mock_errors`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from providers.mistral.mock_errors import invalid_tool_call_id, validation_error
from providers.mock.text import prompt_token_count

__all__ = [
    "ChatParams",
    "EmbedParams",
    "ToolSpec",
    "chat_params",
    "embedding_params",
    "json_body",
]

_ROLES: Final = frozenset({"system", "user", "assistant", "tool"})
_TOOL_CHOICES: Final = frozenset({"auto", "none", "any", "required"})
_FORMATS: Final = frozenset({"text", "json_object", "json_schema"})
_EFFORTS: Final = frozenset({"none", "minimal", "low", "medium", "high", "xhigh", "max"})
_TIERS: Final = frozenset({"auto", "standard_only"})
_ID: Final = re.compile(r"[A-Za-z0-9]{9}")


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ChatParams:
    """A checked chat request: what the answer depends on."""

    model: str
    messages: list[dict[str, Any]]
    prompt_tokens: int
    stream: bool
    max_tokens: int | None
    n: int
    stop: tuple[str, ...]
    format: str  # "text", "json_object" or "json_schema"
    schema: Mapping[str, Any] | None
    tools: tuple[ToolSpec, ...]
    tool_choice: Any
    parallel_tool_calls: bool
    seed: int | None


@dataclass(frozen=True, slots=True)
class EmbedParams:
    model: str
    inputs: list[str]
    output_dimension: int | None
    output_dtype: str


Check = Callable[[Any], bool]


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_bool(value: Any) -> bool:
    return isinstance(value, bool)


def _is_stop(value: Any) -> bool:
    return isinstance(value, str) or (
        isinstance(value, list) and all(isinstance(s, str) for s in value)
    )


def _is_tool_choice(value: Any) -> bool:
    if isinstance(value, str):
        return value in _TOOL_CHOICES
    function = value.get("function") if isinstance(value, dict) else None
    return isinstance(function, dict) and isinstance(function.get("name"), str)


def _is_format(value: Any) -> bool:
    return isinstance(value, dict) and value.get("type", "text") in _FORMATS


# Every field Mistral's chat endpoint takes, and what its value must be (None: any).
_CHAT_FIELDS: Final[Mapping[str, Check | None]] = {
    "model": lambda v: isinstance(v, str),
    "messages": lambda v: isinstance(v, list),
    "temperature": _is_number,
    "top_p": _is_number,
    "max_tokens": _is_int,
    "stream": _is_bool,
    "stop": _is_stop,
    "random_seed": _is_int,
    "metadata": lambda v: isinstance(v, dict),
    "response_format": _is_format,
    "tools": lambda v: isinstance(v, list),
    "tool_choice": _is_tool_choice,
    "presence_penalty": _is_number,
    "frequency_penalty": _is_number,
    "n": lambda v: _is_int(v) and v >= 1,
    "prediction": None,
    "parallel_tool_calls": _is_bool,
    "prompt_mode": None,
    "safe_prompt": _is_bool,
    "reasoning_effort": lambda v: v in _EFFORTS,
    "service_tier": lambda v: v in _TIERS,
    "logprobs": _is_bool,
    "top_logprobs": _is_int,
    "guardrails": None,
    "prompt_cache_key": None,
}
_EMBED_FIELDS: Final[Mapping[str, Check | None]] = {
    "model": lambda v: isinstance(v, str),
    "input": lambda v: (
        isinstance(v, str)
        or (isinstance(v, list) and bool(v) and all(isinstance(t, str) for t in v))
    ),
    "metadata": lambda v: isinstance(v, dict),
    "output_dimension": lambda v: _is_int(v) and v > 0,
    "output_dtype": lambda v: v in ("float", "int8", "uint8", "binary", "ubinary"),
    "encoding_format": lambda v: v in ("float", "base64"),
}


def problem(kind: str, loc: list[Any], msg: str, value: Any) -> dict[str, Any]:
    """One entry of a 422's `detail`, as pydantic words it."""
    return {"type": kind, "loc": loc, "msg": msg, "input": value}


async def json_body(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise validation_error(
            [problem("json_invalid", ["body"], "JSON decode error", None)]
        ) from None
    if not isinstance(body, dict):
        raise validation_error(
            [problem("model_attributes_type", ["body"], "Input should be an object", body)]
        )
    return body


def _field_problems(
    body: Mapping[str, Any], fields: Mapping[str, Check | None], required: tuple[str, ...]
) -> list[dict[str, Any]]:
    problems = [
        problem("missing", ["body", name], "Field required", None)
        for name in required
        if name not in body
    ]
    for name, value in body.items():
        if name not in fields:
            problems.append(
                problem("extra_forbidden", ["body", name], "Extra inputs are not permitted", value)
            )
            continue
        check = fields[name]
        if value is not None and check is not None and not check(value):
            problems.append(problem("value_error", ["body", name], "Invalid value", value))
    return problems


def chat_params(body: Mapping[str, Any]) -> ChatParams:
    """Everything the answer needs, checked; raises Mistral's 422s and 400s."""
    problems = _field_problems(body, _CHAT_FIELDS, ("model", "messages"))
    messages = body.get("messages")
    if isinstance(messages, list):
        problems += _message_problems(messages)
    fmt, schema = _response_format(body.get("response_format"), problems)
    if problems or not isinstance(messages, list):
        raise validation_error(problems)
    _check_tool_call_ids(messages)
    stop = body.get("stop")
    seed = body.get("random_seed")
    return ChatParams(
        model=str(body["model"]),
        messages=messages,
        prompt_tokens=prompt_token_count(messages),
        stream=body.get("stream") is True,
        max_tokens=body.get("max_tokens"),
        n=body.get("n") or 1,
        stop=tuple(s for s in ([stop] if isinstance(stop, str) else stop or []) if s),
        format=fmt,
        schema=schema,
        tools=_tools(body.get("tools") or [], problems),
        tool_choice=body.get("tool_choice") or "auto",
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        seed=seed if _is_int(seed) else None,
    )


def _message_problems(messages: list[Any]) -> list[dict[str, Any]]:
    problems: list[dict[str, Any]] = []
    if not messages:
        problems.append(
            problem("too_short", ["body", "messages"], "List should have at least 1 item", [])
        )
    for index, message in enumerate(messages):
        role = message.get("role") if isinstance(message, dict) else None
        if role not in _ROLES:
            problems.append(
                problem(
                    "union_tag_invalid",
                    ["body", "messages", index],
                    "Input tag does not match any of the expected tags: 'assistant', "
                    "'system', 'tool', 'user'",
                    role,
                )
            )
    return problems


def _check_tool_call_ids(messages: list[dict[str, Any]]) -> None:
    for message in messages:
        ids = [message.get("tool_call_id")] if message.get("role") == "tool" else []
        ids += [c.get("id") for c in message.get("tool_calls") or () if isinstance(c, dict)]
        for call_id in ids:
            if call_id is not None and not (isinstance(call_id, str) and _ID.fullmatch(call_id)):
                raise invalid_tool_call_id(call_id)


def _response_format(
    raw: Any, problems: list[dict[str, Any]]
) -> tuple[str, Mapping[str, Any] | None]:
    if not isinstance(raw, dict):
        return "text", None
    kind = str(raw.get("type") or "text")
    if kind != "json_schema":
        return kind, None
    spec = raw.get("json_schema")
    schema = spec.get("schema") if isinstance(spec, dict) else None
    if not isinstance(schema, dict):
        loc = ["body", "response_format", "json_schema", "schema"]
        problems.append(problem("missing", loc, "Field required", spec))
        return kind, None
    return kind, schema


def _tools(raw: list[Any], problems: list[dict[str, Any]]) -> tuple[ToolSpec, ...]:
    specs: list[ToolSpec] = []
    for index, tool in enumerate(raw):
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(function, dict) or not isinstance(name, str) or not name:
            loc = ["body", "tools", index, "function", "name"]
            raise validation_error([*problems, problem("missing", loc, "Field required", tool)])
        parameters = function.get("parameters")
        specs.append(ToolSpec(name, parameters if isinstance(parameters, dict) else {}))
    return tuple(specs)


def embedding_params(body: Mapping[str, Any]) -> EmbedParams:
    """A checked embeddings request; raises Mistral's 422s."""
    problems = _field_problems(body, _EMBED_FIELDS, ("model", "input"))
    if problems:
        raise validation_error(problems)
    raw = body["input"]
    dimension = body.get("output_dimension")
    return EmbedParams(
        model=str(body["model"]),
        inputs=[raw] if isinstance(raw, str) else list(raw),
        output_dimension=dimension if _is_int(dimension) else None,
        output_dtype=str(body.get("output_dtype") or "float"),
    )
