"""The fleet's chat request as a Messages API body, and a Message body as a result.

Anthropic wants what OpenAI's shape leaves loose: the system prompt apart from
the turns, turns alternating between `user` and `assistant` (consecutive ones of
one role are merged here), tool results as `tool_result` blocks of a user turn,
tool arguments as objects, and `max_tokens` always. See `adapter` for the usage
and finish-reason conventions.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from contracts.errors import BadRequest, ContentFiltered, ContractError, InternalError
from contracts.frames import Usage
from contracts.jobs import ContentPart, Message, Tool, ToolCall
from providers.core.turns import user_assistant_turns
from providers.core.types import ChatRequest, ChatResult, tool_schema
from providers.options import ModelOptions

__all__ = [
    "DEFAULT_MAX_TOKENS",
    "compact_json",
    "finish_reason",
    "messages_body",
    "parse_message",
    "refusal_error",
    "usage_of",
]

# Anthropic requires `max_tokens`. 4096 is the largest value every current Claude
# model accepts (Claude 3 Haiku's output limit), so a job that does not say is
# never refused for it, and it is long enough for ordinary answers.
DEFAULT_MAX_TOKENS: Final = 4096

# `response_format: json_object` has no Anthropic switch (structured outputs need a
# schema), so the model is asked in the system prompt, as Anthropic's docs advise.
JSON_OBJECT_INSTRUCTION: Final = "Respond with a single JSON object and nothing else."

_FINISH: Final[Mapping[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "model_context_window_exceeded": "length",
    "tool_use": "tool_calls",
}

_TOOL_CHOICE: Final[Mapping[str, str]] = {
    "auto": "auto",
    "none": "none",
    "required": "any",
    "any": "any",
}


def messages_body(provider: str, req: ChatRequest, *, stream: bool) -> dict[str, Any]:
    """The JSON body for `POST /messages`; unset options are omitted."""
    system = [m.text() for m in req.messages if m.role in ("system", "developer")]
    options = req.options
    output_config = None
    if options.response_format is not None:
        output_config = _output_config(provider, options.response_format)
        if options.response_format.get("type") == "json_object":
            system.append(JSON_OBJECT_INSTRUCTION)
    body: dict[str, Any] = {
        "model": req.model,
        "max_tokens": options.max_tokens or DEFAULT_MAX_TOKENS,
        "messages": _turns(provider, req.messages),
    }
    system = [s for s in system if s]
    if system:
        body["system"] = "\n\n".join(system)
    if req.tools:
        body["tools"] = [_tool(t) for t in req.tools]
    body.update(_sampling(provider, options))
    if output_config is not None:
        body["output_config"] = output_config
    if stream:
        body["stream"] = True
    return body


def _turns(provider: str, messages: list[Message]) -> list[dict[str, Any]]:
    turns = user_assistant_turns(messages, lambda msg, i: _blocks(provider, msg, i))
    for turn in turns:
        # A user turn must open with its tool results, before any text.
        turn["content"].sort(key=lambda b: b["type"] != "tool_result")
    return turns


def _blocks(provider: str, msg: Message, i: int) -> list[dict[str, Any]]:
    if msg.role == "tool":
        if not msg.tool_call_id:
            raise ContractError(f"messages[{i}].tool_call_id", "required for role 'tool'")
        result: dict[str, Any] = {"type": "tool_result", "tool_use_id": msg.tool_call_id}
        content = _content(provider, msg.content)
        if content:
            result["content"] = content
        return [result]
    blocks = _content(provider, msg.content)
    for j, call in enumerate(msg.tool_calls or []):
        blocks.append(_tool_use(call, f"messages[{i}].tool_calls[{j}].arguments"))
    return blocks


def _content(provider: str, content: str | list[ContentPart] | None) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"type": "text", "text": content}] if content else []
    return [_part(provider, p) for p in content or [] if p.type != "text" or p.text]


def _part(provider: str, part: ContentPart) -> dict[str, Any]:
    if part.type == "text":
        return {"type": "text", "text": part.text or ""}
    url = part.image_url or ""
    if url.startswith(("https://", "http://")):
        return {"type": "image", "source": {"type": "url", "url": url}}
    head, comma, data = url.partition(",")
    if url.startswith("data:") and comma and head.endswith(";base64"):
        media_type = head.removeprefix("data:").removesuffix(";base64")
        return {
            "type": "image",
            "source": {"type": "base64", "media_type": media_type, "data": data},
        }
    raise BadRequest(f"{provider}: an image must be an http(s) URL or a base64 data: URL")


def _tool_use(call: ToolCall, field: str) -> dict[str, Any]:
    try:
        arguments = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        raise ContractError(field, "not valid JSON") from None
    if not isinstance(arguments, dict):
        raise ContractError(field, "must be a JSON object")
    return {"type": "tool_use", "id": call.id, "name": call.name, "input": arguments}


def _tool(tool: Tool) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": tool.name,
        "input_schema": tool_schema(tool),
    }
    if tool.description:
        out["description"] = tool.description
    if tool.strict is not None:
        out["strict"] = tool.strict
    return out


def _sampling(provider: str, options: ModelOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if options.temperature is not None:
        out["temperature"] = options.temperature
    if options.top_p is not None:
        out["top_p"] = options.top_p
    if options.stop:
        out["stop_sequences"] = list(options.stop)
    if options.tool_choice is not None:
        out["tool_choice"] = _tool_choice(provider, options.tool_choice)
    return out


def _tool_choice(provider: str, choice: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(choice, str):
        if choice in _TOOL_CHOICE:
            return {"type": _TOOL_CHOICE[choice]}
    elif choice.get("type") in ("auto", "any", "none", "tool"):
        return choice  # already in Anthropic's shape
    else:
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else choice.get("name")
        if isinstance(name, str) and name:
            return {"type": "tool", "name": name}
    raise BadRequest(f"{provider}: unsupported tool_choice {choice!r}")


def _output_config(provider: str, response_format: dict[str, Any]) -> dict[str, Any] | None:
    kind = response_format.get("type")
    if kind in ("text", "json_object"):
        return None
    if kind == "json_schema":
        wrapper = response_format.get("json_schema")
        schema = wrapper.get("schema") if isinstance(wrapper, dict) else None
        if isinstance(schema, dict):
            return {"format": {"type": "json_schema", "schema": schema}}
    raise BadRequest(f"{provider}: unsupported response_format {kind!r}")


# -- response -------------------------------------------------------------------------


def finish_reason(stop_reason: Any) -> str | None:
    if not isinstance(stop_reason, str):
        return None
    return _FINISH.get(stop_reason, stop_reason)


def usage_of(raw: Any) -> Usage:
    """`Usage` from a Message's `usage` (or a stream's merged one)."""
    if not isinstance(raw, Mapping):
        return Usage()
    read = _count(raw.get("cache_read_input_tokens"))
    written = _count(raw.get("cache_creation_input_tokens"))
    prompt = (_count(raw.get("input_tokens")) or 0) + (read or 0) + (written or 0)
    output = _count(raw.get("output_tokens")) or 0
    details = raw.get("output_tokens_details")
    thinking = _count(details.get("thinking_tokens")) if isinstance(details, Mapping) else None
    return Usage(
        input_tokens=prompt,
        output_tokens=output,
        total_tokens=prompt + output,
        cached_input_tokens=read,
        cache_write_tokens=written,
        reasoning_tokens=thinking,
    )


def compact_json(value: Any) -> str:
    """Tool input as the fleet carries arguments: JSON text, as OpenAI sends it."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def refusal_error(provider: str) -> ContentFiltered:
    return ContentFiltered(
        f"{provider}: the answer was stopped by the provider's safety classifier "
        "(stop_reason refusal)"
    )


def parse_message(provider: str, payload: Mapping[str, Any]) -> ChatResult:
    """`ChatResult` from a non-streaming Message body; a refusal is `ContentFiltered`."""
    if payload.get("stop_reason") == "refusal":
        raise refusal_error(provider)
    content = payload.get("content")
    if not isinstance(content, list):
        raise InternalError(f"{provider}: response has no content list")
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in content:
        kind = block.get("type") if isinstance(block, dict) else None
        if kind == "text" and isinstance(block.get("text"), str):
            texts.append(block["text"])
        elif kind == "tool_use" and isinstance(block, dict):
            calls.append(
                ToolCall(
                    id=str(block.get("id") or ""),
                    name=str(block.get("name") or ""),
                    arguments=compact_json(block.get("input") or {}),
                )
            )
    text = "".join(texts)
    message = Message(
        role="assistant",
        content=text if text or not calls else None,
        tool_calls=calls or None,
    )
    return ChatResult(
        message=message,
        finish_reason=finish_reason(payload.get("stop_reason")),
        usage=usage_of(payload.get("usage")),
    )
