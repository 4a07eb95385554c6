"""The fleet's chat request as an Ollama `/api/chat` body, and Ollama's answers read back.

Request: system and developer messages as `system`; content parts joined into
the one content string Ollama takes, images as bare base64 in `images` (a
`data:` URL is unwrapped; an http(s) URL is refused, Ollama fetches nothing);
assistant tool calls with their arguments as objects; tool results as
`{role: "tool", content, tool_name}`, the name taken from the message or from
the call it answers. Tools in OpenAI's shape, which Ollama takes as is.

Options: `max_tokens` → `options.num_predict`; `temperature`, `top_p`, `seed`,
`stop`, `presence_penalty`, `frequency_penalty` → `options`; `response_format`
→ `format` (`"json"` for `json_object`, the schema itself for `json_schema`);
`reasoning_effort` → `think` (`none` → false, `low`/`medium`/`high` as levels,
which models without levels take as on); `top_logprobs` → `logprobs` +
`top_logprobs`. Refused with `BadRequest` since dropping them would change the
answer: a `tool_choice` other than `auto` (Ollama cannot be told to call or not
to call a tool) and other reasoning efforts. Not sent, since they do not change
the answer: `user`, `metadata`, `service_tier`. `keep_alive` is left to the
server's default.

Answer: `message.content` is the text and `message.thinking` (reasoning) is not;
tool calls arrive whole, arguments as objects and, from older servers, without
ids, so ids are minted from the call itself (`call_<digest>`): the same call
gets the same id streamed or not. `done_reason` `stop` with tool calls is
`tool_calls`; usage is `prompt_eval_count` and `eval_count`.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any, Final

from contracts.errors import BadRequest, InternalError
from contracts.frames import Usage
from contracts.jobs import ContentPart, Message, Tool, ToolCall
from providers.core.types import ChatRequest, ChatResult, tool_schema
from providers.options import ModelOptions

__all__ = [
    "chat_body",
    "finish_reason",
    "parse_chat_response",
    "tool_call_id",
    "tool_call_of",
    "usage_of",
]

_THINK_LEVELS: Final = frozenset({"low", "medium", "high"})
_SEPARATORS: Final = (",", ":")


# -- request ---------------------------------------------------------------------------


def chat_body(provider: str, req: ChatRequest, *, stream: bool) -> dict[str, Any]:
    """The JSON body for `POST /api/chat`; unset options are omitted."""
    body: dict[str, Any] = {
        "model": req.model,
        "messages": _messages(provider, req.messages),
        "stream": stream,
    }
    if req.tools:
        body["tools"] = [_tool(t) for t in req.tools]
    _check_tool_choice(provider, req.options.tool_choice)
    options = _runtime_options(req.options)
    if options:
        body["options"] = options
    fmt = _format(provider, req.options.response_format)
    if fmt is not None:
        body["format"] = fmt
    think = _think(provider, req.options.reasoning_effort)
    if think is not None:
        body["think"] = think
    if req.options.top_logprobs is not None:
        body["logprobs"] = True
        body["top_logprobs"] = req.options.top_logprobs
    return body


def _messages(provider: str, messages: Sequence[Message]) -> list[dict[str, Any]]:
    names: dict[str, str] = {}  # tool call id → function name, for the results answering them
    out: list[dict[str, Any]] = []
    for msg in messages:
        for call in msg.tool_calls or ():
            names[call.id] = call.name
        out.append(_message(provider, msg, names))
    return out


def _message(provider: str, msg: Message, names: Mapping[str, str]) -> dict[str, Any]:
    role = "system" if msg.role == "developer" else msg.role
    text, images = _content(provider, msg.content)
    out: dict[str, Any] = {"role": role, "content": text}
    if images:
        out["images"] = images
    if msg.tool_calls:
        out["tool_calls"] = [
            {"function": {"name": c.name, "arguments": _arguments_object(provider, c)}}
            for c in msg.tool_calls
        ]
    if role == "tool":
        name = msg.name or names.get(msg.tool_call_id or "")
        if name:
            out["tool_name"] = name
    return out


def _content(provider: str, content: str | list[ContentPart] | None) -> tuple[str, list[str]]:
    if content is None or isinstance(content, str):
        return content or "", []
    texts: list[str] = []
    images: list[str] = []
    for part in content:
        if part.type == "text":
            texts.append(part.text or "")
        else:
            images.append(_image(provider, part.image_url))
    return "\n".join(texts), images


def _image(provider: str, url: str | None) -> str:
    if not url:
        raise BadRequest(f"{provider}: image_url content part without a url")
    if url.startswith("data:"):
        meta, comma, data = url.partition(",")
        if comma and meta.endswith(";base64") and data:
            return data
        raise BadRequest(f"{provider}: image data URL is not base64")
    # Ollama takes image bytes only; it fetches nothing.
    raise BadRequest(f"{provider}: images must be base64 data URLs (Ollama fetches no URLs)")


def _arguments_object(provider: str, call: ToolCall) -> Any:
    if not call.arguments.strip():
        return {}
    try:
        value = json.loads(call.arguments)
    except ValueError:
        raise BadRequest(
            f"{provider}: arguments of tool call {call.id!r} are not JSON (Ollama wants an object)"
        ) from None
    if not isinstance(value, dict):
        raise BadRequest(f"{provider}: arguments of tool call {call.id!r} are not a JSON object")
    return value


def _tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool_schema(tool)}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _check_tool_choice(provider: str, choice: str | dict[str, Any] | None) -> None:
    if choice is None or choice == "auto":
        return
    shown = choice if isinstance(choice, str) else sorted(choice)
    raise BadRequest(
        f"{provider}: Ollama has no tool_choice (only 'auto', the default); got {shown!r}"
    )


def _runtime_options(options: ModelOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in ("temperature", "top_p", "seed", "presence_penalty", "frequency_penalty"):
        value = getattr(options, name)
        if value is not None:
            out[name] = value
    if options.max_tokens is not None:
        out["num_predict"] = options.max_tokens
    if options.stop:
        out["stop"] = [s for s in options.stop if s]
    return out


def _format(
    provider: str, response_format: Mapping[str, Any] | None
) -> str | dict[str, Any] | None:
    kind = response_format.get("type") if response_format is not None else None
    if response_format is None or kind == "text":
        return None
    if kind == "json_object":
        return "json"
    if kind == "json_schema":
        wrapper = response_format.get("json_schema")
        schema = wrapper.get("schema") if isinstance(wrapper, dict) else None
        if not isinstance(schema, dict):
            raise BadRequest(f"{provider}: response_format json_schema without a schema")
        return schema
    raise BadRequest(f"{provider}: unsupported response_format type {kind!r}")


def _think(provider: str, effort: str | None) -> bool | str | None:
    if effort is None:
        return None
    if effort == "none":
        return False
    if effort in _THINK_LEVELS:
        return effort
    raise BadRequest(f"{provider}: reasoning_effort {effort!r} has no Ollama 'think' level")


# -- answers ---------------------------------------------------------------------------


def usage_of(payload: Mapping[str, Any]) -> Usage:
    prompt = _count(payload.get("prompt_eval_count"))
    output = _count(payload.get("eval_count"))
    return Usage(input_tokens=prompt, output_tokens=output, total_tokens=prompt + output)


def _count(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def finish_reason(done_reason: Any, called_tools: bool) -> str | None:
    """`done_reason` in the fleet's words: Ollama says `stop` after tool calls too."""
    if not isinstance(done_reason, str) or not done_reason:
        return "tool_calls" if called_tools else None
    reason = done_reason.lower()
    return "tool_calls" if called_tools and reason == "stop" else reason


def tool_call_id(index: int, name: str, arguments: str) -> str:
    """A stable id for a call the server sent without one."""
    digest = hashlib.blake2b(f"{index}\0{name}\0{arguments}".encode(), digest_size=12)
    return "call_" + digest.hexdigest()


def tool_call_of(raw: Any, index: int) -> ToolCall:
    """One of `message.tool_calls`: `{id?, function: {index?, name, arguments: {...}}}`."""
    function = raw.get("function") if isinstance(raw, dict) else None
    if not isinstance(function, dict):
        raise InternalError("tool call without a function")
    name = function.get("name")
    arguments = function.get("arguments")
    text = (
        arguments
        if isinstance(arguments, str)
        else json.dumps(arguments or {}, ensure_ascii=False, separators=_SEPARATORS)
    )
    name = name if isinstance(name, str) else ""
    given = raw.get("id")
    call_id = given if isinstance(given, str) and given else tool_call_id(index, name, text)
    return ToolCall(id=call_id, name=name, arguments=text)


def parse_chat_response(provider: str, payload: Mapping[str, Any]) -> ChatResult:
    """`ChatResult` from a whole (`"stream": false`) `/api/chat` answer."""
    message = payload.get("message")
    if not isinstance(message, dict):
        raise InternalError(f"{provider}: response has no message")
    try:
        calls = [tool_call_of(raw, i) for i, raw in enumerate(message.get("tool_calls") or ())]
    except (InternalError, AttributeError, TypeError):
        raise InternalError(f"{provider}: malformed tool call in response") from None
    content = message.get("content")
    text = content if isinstance(content, str) else ""
    result = Message(
        role="assistant",
        content=None if calls and not text else text,
        tool_calls=calls or None,
    )
    return ChatResult(
        message=result,
        finish_reason=finish_reason(payload.get("done_reason"), bool(calls)),
        usage=usage_of(payload),
    )
