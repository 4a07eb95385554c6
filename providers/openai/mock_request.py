"""Reading and checking a chat request the way OpenAI does, for the mock.

Every check answers with OpenAI's own 400 wording, `param` and `code`, so a
client's error handling meets the same bodies it meets in production.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from providers.mock.faults import MockError, bad_request
from providers.mock.text import content_text, prompt_token_count
from providers.openai.models import is_reasoning_model

__all__ = [
    "ChatParams",
    "ToolSpec",
    "chat_params",
    "embedding_inputs",
    "json_object",
    "positive_int",
    "require_model",
]

_MAX_N: Final = 128
_MAX_STOP: Final = 4
_TIERS: Final = ("auto", "default", "flex", "scale", "priority")
_FORMATS: Final = ("text", "json_object", "json_schema")


@dataclass(frozen=True, slots=True)
class ToolSpec:
    name: str
    parameters: Mapping[str, Any]


@dataclass(frozen=True, slots=True)
class ChatParams:
    """A checked chat request: what the answer depends on."""

    model: str
    messages: list[Any]
    prompt_tokens: int
    stream: bool
    include_usage: bool
    include_obfuscation: bool
    max_tokens: int | None  # the caller's limit, under either parameter name
    n: int
    stop: tuple[str, ...]
    format: str  # "text", "json_object" or "json_schema"
    schema: Mapping[str, Any] | None
    tools: tuple[ToolSpec, ...]
    tool_choice: Any
    parallel_tool_calls: bool
    seed: int | None
    service_tier: str


async def json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise bad_request(
            "We could not parse the JSON body of your request. (HINT: This likely means you "
            "aren't using your HTTP library correctly. The OpenAI API expects a JSON payload, "
            "but what was sent was not valid JSON. If you have trouble figuring out how to fix "
            "this, please contact us through our help center at help.openai.com.)"
        ) from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def require_model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("you must provide a model parameter")
    return model


def positive_int(body: Mapping[str, Any], name: str, *, high: int | None = None) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if not isinstance(value, int) or isinstance(value, bool):
        raise bad_request(
            f"Invalid type for '{name}': expected an integer, but got "
            f"{type(value).__name__} instead.",
            name,
            "invalid_type",
        )
    if value < 1 or (high is not None and value > high):
        bound = f"at most {high}" if high is not None else "at least 1"
        raise bad_request(
            f"Invalid '{name}': integer {value} is out of range; it must be {bound}.",
            name,
            "integer_below_min_value" if value < 1 else "integer_above_max_value",
        )
    return value


def chat_params(body: Mapping[str, Any], model: str) -> ChatParams:
    """Everything the answer needs, checked; raises OpenAI's 400s."""
    messages = _messages(body)
    stream = body.get("stream") is True
    usage, obfuscation = _stream_options(body, stream)
    fmt, schema = _response_format(body, messages)
    tier = body.get("service_tier")
    if tier is not None and tier not in _TIERS:
        raise _invalid_value("service_tier", tier, _TIERS)
    seed = body.get("seed")
    return ChatParams(
        model=model,
        messages=messages,
        prompt_tokens=prompt_token_count(messages),
        stream=stream,
        include_usage=usage,
        include_obfuscation=obfuscation,
        max_tokens=_token_limit(body, model),
        n=positive_int(body, "n", high=_MAX_N) or 1,
        stop=_stop(body.get("stop")),
        format=fmt,
        schema=schema,
        tools=_tools(body.get("tools")),
        tool_choice=body.get("tool_choice"),
        parallel_tool_calls=body.get("parallel_tool_calls") is not False,
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        service_tier="default" if tier in (None, "auto") else str(tier),
    )


def _messages(body: Mapping[str, Any]) -> list[Any]:
    messages = body.get("messages")
    if messages is None:
        raise bad_request(
            "Missing required parameter: 'messages'.", "messages", "missing_required_parameter"
        )
    if not isinstance(messages, list) or not messages:
        raise bad_request(
            "Invalid 'messages': empty array. Expected an array with minimum length 1, but got "
            "an empty array instead.",
            "messages",
            "empty_array",
        )
    if not all(isinstance(m, dict) for m in messages):
        raise bad_request("Invalid 'messages': every message must be an object.", "messages")
    return messages


def _token_limit(body: Mapping[str, Any], model: str) -> int | None:
    older = positive_int(body, "max_tokens")
    if older is not None and is_reasoning_model(model):
        raise bad_request(
            "Unsupported parameter: 'max_tokens' is not supported with this model. "
            "Use 'max_completion_tokens' instead.",
            "max_tokens",
            "unsupported_parameter",
        )
    newer = positive_int(body, "max_completion_tokens")
    return newer if newer is not None else older


def _stream_options(body: Mapping[str, Any], stream: bool) -> tuple[bool, bool]:
    options = body.get("stream_options")
    if options is None:
        return False, True
    if not stream:
        raise bad_request(
            "The 'stream_options' parameter is only allowed when 'stream' is enabled.",
            "stream_options",
            "invalid_value",
        )
    if not isinstance(options, dict):
        raise bad_request("Invalid 'stream_options': expected an object.", "stream_options")
    return options.get("include_usage") is True, options.get("include_obfuscation") is not False


def _stop(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    stops = [raw] if isinstance(raw, str) else raw
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise bad_request(
            "Invalid type for 'stop': expected a string or an array of strings.",
            "stop",
            "invalid_type",
        )
    if len(stops) > _MAX_STOP:
        raise bad_request(
            f"Invalid 'stop': array too long. Expected an array with maximum length "
            f"{_MAX_STOP}, but got an array with length {len(stops)} instead.",
            "stop",
            "array_above_max_length",
        )
    return tuple(s for s in stops if s)


def _response_format(
    body: Mapping[str, Any], messages: list[Any]
) -> tuple[str, Mapping[str, Any] | None]:
    raw = body.get("response_format")
    if raw is None:
        return "text", None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind not in _FORMATS:
        raise _invalid_value("response_format.type", kind, _FORMATS)
    if kind == "json_object" and not _mentions_json(messages):
        raise bad_request(
            "'messages' must contain the word 'json' in some form, to use 'response_format' "
            "of type 'json_object'.",
            "messages",
        )
    if kind != "json_schema":
        return str(kind), None
    spec = raw.get("json_schema")
    if not isinstance(spec, dict) or not isinstance(spec.get("name"), str):
        raise bad_request(
            "Missing required parameter: 'response_format.json_schema.name'.",
            "response_format.json_schema.name",
            "missing_required_parameter",
        )
    schema = spec.get("schema")
    return "json_schema", schema if isinstance(schema, dict) else {}


def _mentions_json(messages: list[Any]) -> bool:
    return any("json" in content_text(m.get("content")).lower() for m in messages)


def _tools(raw: Any) -> tuple[ToolSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise bad_request("Invalid type for 'tools': expected an array.", "tools", "invalid_type")
    specs: list[ToolSpec] = []
    for index, tool in enumerate(raw):
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(function, dict) or not isinstance(name, str) or not name:
            raise bad_request(
                f"Missing required parameter: 'tools[{index}].function.name'.",
                f"tools[{index}].function.name",
                "missing_required_parameter",
            )
        parameters = function.get("parameters")
        specs.append(ToolSpec(name, parameters if isinstance(parameters, dict) else {}))
    return tuple(specs)


def _invalid_value(param: str, value: Any, allowed: tuple[str, ...]) -> MockError:
    listed = ", ".join(f"'{a}'" for a in allowed[:-1]) + f", and '{allowed[-1]}'"
    return bad_request(
        f"Invalid value: '{value}'. Supported values are: {listed}.", param, "invalid_value"
    )


def embedding_inputs(raw: object) -> list[tuple[str, int]]:
    """(text to embed, token count) per input; token arrays are accepted as OpenAI does."""
    if isinstance(raw, str):
        raw = [raw]
    if isinstance(raw, list) and raw and all(isinstance(t, int) for t in raw):
        raw = [raw]
    if not isinstance(raw, list) or not raw:
        raise bad_request("'input' must be a non-empty string or array.", "input")
    inputs: list[tuple[str, int]] = []
    for item in raw:
        if isinstance(item, str) and item:
            inputs.append((item, max(len(item.split()), 1)))
        elif isinstance(item, list) and item and all(isinstance(t, int) for t in item):
            inputs.append((" ".join(map(str, item)), len(item)))
        else:
            raise bad_request("'input' items must be non-empty strings or token arrays.", "input")
    return inputs
