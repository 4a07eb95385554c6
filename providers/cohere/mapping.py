"""The fleet's chat request as a Cohere v2 `POST /v2/chat` body.

Messages keep their roles (`developer` is Cohere's `system`). An assistant turn
that called tools carries its calls as `tool_calls` and its text as `tool_plan`,
the place Cohere keeps what a model says before calling tools (and what the
adapter returns as that turn's text); tool results are `{role: "tool",
tool_call_id, content}`. Options, by the names Cohere gives them:

* `temperature`, `max_tokens`, `seed`, `frequency_penalty`, `presence_penalty`
  as they are; `top_p` is `p`; `stop` is `stop_sequences`.
* `tool_choice`: `required` (or `any`) is `REQUIRED`, `none` is `NONE`, `auto` is
  left out (Cohere's default). A named function cannot be forced: `BadRequest`.
* `response_format`: `json_object` as it is; OpenAI's `json_schema` is Cohere's
  `json_object` with the schema itself as `json_schema`; `text` is left out.
* `top_logprobs` turns on `logprobs` (Cohere gives the chosen tokens' only).
* `reasoning_effort`: `none` disables `thinking`, any other effort enables it.
* Not sent, as they do not change the answer: `user`, `metadata`, `service_tier`
  (Cohere has no such fields; its `priority` is not a tier).
* A tool's `strict` turns on `strict_tools`, which applies to every tool.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from contracts.errors import BadRequest, ContractError
from contracts.jobs import ContentPart, Message, Tool
from providers.core.types import ChatRequest, tool_schema
from providers.options import ModelOptions

__all__ = ["chat_body"]

# Options whose name and value Cohere takes as the fleet has them.
_PLAIN_OPTIONS: Final = (
    "temperature",
    "max_tokens",
    "seed",
    "frequency_penalty",
    "presence_penalty",
)
_TOOL_CHOICE: Final[Mapping[str, str | None]] = {
    "auto": None,
    "required": "REQUIRED",
    "any": "REQUIRED",
    "none": "NONE",
}


def chat_body(provider: str, req: ChatRequest, *, stream: bool) -> dict[str, Any]:
    """The JSON body for `POST /v2/chat`; unset options are omitted."""
    body: dict[str, Any] = {
        "model": req.model,
        "messages": [_message(provider, m, i) for i, m in enumerate(req.messages)],
    }
    if req.tools:
        body["tools"] = [_tool(t) for t in req.tools]
        if any(t.strict for t in req.tools):
            body["strict_tools"] = True
    body.update(_options(provider, req.options))
    body["stream"] = stream
    return body


def _message(provider: str, msg: Message, i: int) -> dict[str, Any]:
    if msg.role in ("system", "developer"):
        return {"role": "system", "content": _text_only(provider, msg, i)}
    if msg.role == "tool":
        if not msg.tool_call_id:
            raise ContractError(f"messages[{i}].tool_call_id", "required for role 'tool'")
        return {
            "role": "tool",
            "tool_call_id": msg.tool_call_id,
            "content": _text_only(provider, msg, i),
        }
    if msg.role == "assistant":
        return _assistant(provider, msg, i)
    return {"role": "user", "content": _user_content(provider, msg.content)}


def _assistant(provider: str, msg: Message, i: int) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant"}
    text = _text_only(provider, msg, i)
    if msg.tool_calls:
        out["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments or "{}"},
            }
            for call in msg.tool_calls
        ]
        if text:
            out["tool_plan"] = text
    else:
        out["content"] = text
    return out


def _text_only(provider: str, msg: Message, i: int) -> str:
    content = msg.content
    if isinstance(content, list) and any(p.type != "text" for p in content):
        raise BadRequest(f"{provider}: messages[{i}] ({msg.role}) may hold text only, not images")
    return msg.text()


def _user_content(provider: str, content: str | list[ContentPart] | None) -> Any:
    if not isinstance(content, list):
        return content or ""
    return [_part(provider, p) for p in content]


def _part(provider: str, part: ContentPart) -> dict[str, Any]:
    if part.type == "text":
        return {"type": "text", "text": part.text or ""}
    if not part.image_url:
        raise BadRequest(f"{provider}: image_url content part without a url")
    return {"type": "image_url", "image_url": {"url": part.image_url}}


def _tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {"name": tool.name, "parameters": tool_schema(tool)}
    if tool.description:
        function["description"] = tool.description
    return {"type": "function", "function": function}


def _options(provider: str, options: ModelOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _PLAIN_OPTIONS:
        value = getattr(options, name)
        if value is not None:
            out[name] = value
    if options.top_p is not None:
        out["p"] = options.top_p
    if options.stop:
        out["stop_sequences"] = list(options.stop)
    if options.top_logprobs is not None:
        out["logprobs"] = True
    if options.tool_choice is not None:
        choice = _tool_choice(provider, options.tool_choice)
        if choice is not None:
            out["tool_choice"] = choice
    if options.response_format is not None:
        response_format = _response_format(provider, options.response_format)
        if response_format is not None:
            out["response_format"] = response_format
    if options.reasoning_effort is not None:
        enabled = options.reasoning_effort.strip().lower() != "none"
        out["thinking"] = {"type": "enabled" if enabled else "disabled"}
    return out


def _tool_choice(provider: str, choice: str | dict[str, Any]) -> str | None:
    kind = choice if isinstance(choice, str) else choice.get("type")
    if isinstance(kind, str) and kind.lower() in _TOOL_CHOICE:
        return _TOOL_CHOICE[kind.lower()]
    # A named function (`{"type": "function", "function": {"name": …}}`) has no
    # Cohere equivalent; answering with any tool instead would change the answer.
    raise BadRequest(
        f"{provider}: tool_choice {choice!r} cannot be expressed; Cohere takes "
        "auto, required or none"
    )


def _response_format(provider: str, response_format: dict[str, Any]) -> dict[str, Any] | None:
    kind = response_format.get("type")
    if kind == "text":
        return None
    if kind == "json_object":
        schema = response_format.get("json_schema")
        if schema is None:
            return {"type": "json_object"}
        if isinstance(schema, dict):
            return {"type": "json_object", "json_schema": schema}
    if kind == "json_schema":
        wrapper = response_format.get("json_schema")
        schema = wrapper.get("schema") if isinstance(wrapper, dict) else None
        if isinstance(schema, dict):
            return {"type": "json_object", "json_schema": schema}
    raise BadRequest(f"{provider}: unsupported response_format {kind!r}")
