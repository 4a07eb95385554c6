"""Reading a native `/api/chat` or `/api/embed` request the way Ollama does, for the mock.

A chat request becomes the OpenAI mock's `ChatParams`, so one answer engine
(`providers.openai.mock_answers.compose`) serves both dialects: `options.num_predict`
is the token limit (Ollama's -1 and -2 mean none), `options.stop` the stop
sequences, `format` `"json"` or a schema the structured answer, `stream` true
unless it is `false`. Refusals use Ollama's sentences.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from aiohttp import web

from providers.mock.faults import MockError
from providers.mock.text import prompt_token_count
from providers.ollama.mock_errors import bad_request
from providers.openai.mock_request import ChatParams, ToolSpec

__all__ = ["NativeChat", "embed_inputs", "json_object", "native_chat", "require_model"]


@dataclass(frozen=True, slots=True)
class NativeChat:
    params: ChatParams
    think: bool  # `think` asked for: the answer starts with reasoning


async def json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise bad_request("invalid character looking for beginning of value") from None
    if not isinstance(body, dict):
        raise bad_request("json: cannot unmarshal array into Go value of type api.ChatRequest")
    return body


def require_model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model is required")
    return model


def native_chat(body: Mapping[str, Any], model: str) -> NativeChat:
    messages = body.get("messages")
    if not isinstance(messages, list) or not all(isinstance(m, dict) for m in messages):
        raise bad_request(
            "json: cannot unmarshal messages into Go struct field of type []api.Message"
        )
    for message in messages:
        if not isinstance(message.get("content", ""), str):
            raise bad_request("json: cannot unmarshal content into Go struct field of type string")
    options = body.get("options") or {}
    if not isinstance(options, dict):
        raise bad_request("json: cannot unmarshal options into Go struct field of type map")
    fmt, schema = _format(body.get("format"))
    seed = options.get("seed")
    params = ChatParams(
        model=model,
        messages=messages,
        prompt_tokens=prompt_token_count(messages),
        stream=body.get("stream") is not False,
        include_usage=False,
        include_obfuscation=False,
        max_tokens=_limit(options.get("num_predict")),
        n=1,
        stop=_stop(options.get("stop")),
        format=fmt,
        schema=schema,
        tools=_tools(body.get("tools")),
        tool_choice=None,
        parallel_tool_calls=True,
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
        service_tier="default",
    )
    think = body.get("think")
    return NativeChat(params, think not in (None, False, ""))


def _limit(raw: Any) -> int | None:
    if raw is None:
        return None
    if not isinstance(raw, int) or isinstance(raw, bool):
        raise bad_request('option "num_predict" must be of type integer')
    return raw if raw > 0 else None  # -1: no limit, -2: fill the context


def _stop(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise bad_request('option "stop" must be of an array of strings')
    return tuple(s for s in raw if s)


def _format(raw: Any) -> tuple[str, Mapping[str, Any] | None]:
    if raw in (None, ""):
        return "text", None
    if raw == "json":
        return "json_object", None
    if isinstance(raw, dict):
        return "json_schema", raw
    raise bad_request(f'invalid format: {raw!r}; expected "json" or a valid JSON Schema')


def _tools(raw: Any) -> tuple[ToolSpec, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise bad_request("json: cannot unmarshal tools into Go struct field of type api.Tools")
    specs: list[ToolSpec] = []
    for tool in raw:
        function = tool.get("function") if isinstance(tool, dict) else None
        name = function.get("name") if isinstance(function, dict) else None
        if not isinstance(function, dict) or not isinstance(name, str) or not name:
            raise bad_request("invalid tool: a function with a name is required")
        parameters = function.get("parameters")
        specs.append(ToolSpec(name, parameters if isinstance(parameters, dict) else {}))
    return tuple(specs)


def embed_inputs(raw: Any) -> list[str]:
    """`input` of `/api/embed`: a string or a list of strings."""
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and all(isinstance(item, str) for item in raw):
        return raw
    error: MockError = bad_request("invalid input type")
    raise error
