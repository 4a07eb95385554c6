"""Validation of Messages API requests for the mock, with the real API's rules.

The mock refuses what api.anthropic.com refuses, so an adapter bug shows up as the
400 it would cause in production: a missing `max_tokens`, a `system` role among
the messages, turns that do not alternate or do not open with `user`, a
`tool_use` without its `tool_result` in the next turn (or the reverse), fields the
API does not know ("Extra inputs are not permitted"). Messages follow the real
API's wording where it is known. One deliberate strictness: consecutive turns of
one role are refused (the API used to; it now merges them), so an adapter that
forgets to merge is caught.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from aiohttp import web

from providers.mock.faults import bad_request

__all__ = ["MessagesRequest", "json_object", "parse_count_tokens", "parse_messages"]

_MESSAGES_FIELDS: Final = frozenset(
    {
        "model",
        "messages",
        "max_tokens",
        "system",
        "tools",
        "tool_choice",
        "temperature",
        "top_p",
        "top_k",
        "stop_sequences",
        "stream",
        "metadata",
        "thinking",
        "output_config",
        "service_tier",
        "container",
        "context_management",
        "mcp_servers",
    }
)
# count_tokens takes the prompt only: no sampling, no max_tokens.
_COUNT_FIELDS: Final = frozenset(
    {"model", "messages", "system", "tools", "tool_choice", "thinking", "output_config"}
)
_BLOCK_TYPES: Final = frozenset(
    {"text", "image", "document", "tool_use", "tool_result", "thinking", "redacted_thinking"}
)
_TOOL_CHOICES: Final = frozenset({"auto", "any", "none", "tool"})


@dataclass(frozen=True, slots=True)
class MessagesRequest:
    """A validated request, reduced to what the mock's answer depends on."""

    model: str
    messages: list[dict[str, Any]]
    system: list[dict[str, Any]]  # always as text blocks
    tools: list[dict[str, Any]]
    tool_choice: dict[str, Any] | None
    max_tokens: int
    stream: bool
    stop_sequences: tuple[str, ...] = ()
    # `output_config.format.schema`: answer with text that is an instance of it.
    output_schema: dict[str, Any] | None = None


async def json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise bad_request("There was an error parsing the body: invalid JSON") from None
    if not isinstance(body, dict):
        raise bad_request("The request body must be a JSON object.")
    return body


def parse_messages(body: Mapping[str, Any]) -> MessagesRequest:
    """`POST /v1/messages`; raises a 400 `MockError` where the real API would."""
    _no_extra_fields(body, _MESSAGES_FIELDS)
    max_tokens = body.get("max_tokens")
    if max_tokens is None:
        raise bad_request("max_tokens: Field required", "max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise bad_request("max_tokens: Input should be an integer >= 1", "max_tokens")
    for name in ("temperature", "top_p"):
        _unit_interval(body, name)
    stop = body.get("stop_sequences")
    if stop is not None and not (isinstance(stop, list) and all(isinstance(s, str) for s in stop)):
        raise bad_request("stop_sequences: Input should be a valid list of strings")
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise bad_request("stream: Input should be a valid boolean")
    return replace(
        _prompt(body, max_tokens, stream),
        stop_sequences=tuple(s for s in stop or () if s),
        output_schema=_output_schema(body.get("output_config")),
    )


def parse_count_tokens(body: Mapping[str, Any]) -> MessagesRequest:
    """`POST /v1/messages/count_tokens`: the same prompt rules, no `max_tokens`."""
    _no_extra_fields(body, _COUNT_FIELDS)
    return _prompt(body, 1, False)


def _prompt(body: Mapping[str, Any], max_tokens: int, stream: bool) -> MessagesRequest:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise bad_request("model: Field required", "model")
    tools = _tools(body.get("tools"))
    return MessagesRequest(
        model=model,
        messages=_messages(body.get("messages")),
        system=_system(body.get("system")),
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        max_tokens=max_tokens,
        stream=stream,
    )


def _output_schema(raw: Any) -> dict[str, Any] | None:
    """The schema `output_config.format` asks the answer to follow, if any."""
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise bad_request("output_config: Input should be a valid dictionary", "output_config")
    fmt = raw.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") != "json_schema":
        raise bad_request(
            "output_config.format.type: Input should be 'json_schema'", "output_config.format"
        )
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise bad_request("output_config.format.schema: Field required", "output_config.format")
    return schema


def _no_extra_fields(body: Mapping[str, Any], allowed: frozenset[str]) -> None:
    for name in body:
        if name not in allowed:
            raise bad_request(f"{name}: Extra inputs are not permitted", name)


def _unit_interval(body: Mapping[str, Any], name: str) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 1:
        raise bad_request(f"{name}: Input should be a number between 0 and 1", name)


def _system(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [{"type": "text", "text": raw}] if raw else []
    if isinstance(raw, list) and all(_is_text_block(b) for b in raw):
        return list(raw)
    raise bad_request("system: Input should be a valid string or a list of text blocks")


def _is_text_block(block: Any) -> bool:
    return isinstance(block, dict) and block.get("type") == "text" and bool(block.get("text"))


def _messages(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        raise bad_request("messages: Field required", "messages")
    if not isinstance(raw, list) or not all(isinstance(m, dict) for m in raw):
        raise bad_request("messages: Input should be a valid list of message objects")
    if not raw:
        raise bad_request("messages: at least one message is required")
    previous: str | None = None
    for i, message in enumerate(raw):
        role = message.get("role")
        if role == "system":
            raise bad_request(
                f'messages.{i}.role: Unexpected role "system". The Messages API accepts a '
                'top-level `system` parameter, not "system" as an input message role.'
            )
        if role not in ("user", "assistant"):
            raise bad_request(f"messages.{i}.role: Input should be 'user' or 'assistant'")
        if previous is None and role != "user":
            raise bad_request('messages: first message must use the "user" role')
        if role == previous:
            raise bad_request(
                'messages: roles must alternate between "user" and "assistant", '
                f'but found multiple "{role}" roles in a row'
            )
        previous = role
        _content(message.get("content"), i, role, last=i == len(raw) - 1)
    _tool_pairs(raw)
    return raw


def _content(content: Any, i: int, role: str, *, last: bool) -> None:
    if isinstance(content, str):
        # Only a final assistant turn (a prefill) may be empty.
        if not content and not (last and role == "assistant"):
            raise bad_request(f"messages.{i}: text content blocks must be non-empty")
        return
    if not isinstance(content, list) or not all(isinstance(b, dict) for b in content):
        raise bad_request(f"messages.{i}.content: Input should be a valid string or list")
    for j, block in enumerate(content):
        _block(block, f"messages.{i}.content.{j}", role)


def _block(block: Mapping[str, Any], where: str, role: str) -> None:
    kind = block.get("type")
    if kind not in _BLOCK_TYPES:
        raise bad_request(f"{where}.type: Input tag {kind!r} does not match any expected tag")
    if kind == "text" and not _is_text_block(block):
        raise bad_request(f"{where}: text content blocks must be non-empty")
    if kind == "tool_use":
        if role != "assistant":
            raise bad_request(f"{where}: tool_use blocks are only allowed in assistant turns")
        ok = isinstance(block.get("id"), str) and isinstance(block.get("name"), str)
        if not ok or not isinstance(block.get("input"), dict):
            raise bad_request(f"{where}: tool_use needs an id, a name and an object input")
    if kind == "tool_result":
        if role != "user":
            raise bad_request(f"{where}: tool_result blocks are only allowed in user turns")
        if not isinstance(block.get("tool_use_id"), str):
            raise bad_request(f"{where}.tool_use_id: Field required")
    if kind == "image":
        source = block.get("source")
        kind_of_source = source.get("type") if isinstance(source, dict) else None
        if kind_of_source not in ("base64", "url", "file"):
            raise bad_request(f"{where}.source: Input should be a base64, url or file source")


def _ids(message: Mapping[str, Any], kind: str, key: str) -> list[str]:
    content = message.get("content")
    if not isinstance(content, list):
        return []
    return [b[key] for b in content if b.get("type") == kind]


def _tool_pairs(messages: Sequence[Mapping[str, Any]]) -> None:
    """Every tool_use answered in the very next turn, and no tool_result answering nothing."""
    for i, message in enumerate(messages):
        if message["role"] != "user":
            continue
        asked = set(_ids(messages[i - 1], "tool_use", "id")) if i else set()
        for j, used in enumerate(_ids(message, "tool_result", "tool_use_id")):
            if used not in asked:
                raise bad_request(
                    f"messages.{i}.content.{j}: unexpected `tool_use_id` found in "
                    f"`tool_result` blocks: {used}. Each `tool_result` block must have a "
                    "corresponding `tool_use` block in the previous message."
                )
    for i, message in enumerate(messages):
        asked_ids = _ids(message, "tool_use", "id")
        if not asked_ids:
            continue
        following = messages[i + 1] if i + 1 < len(messages) else {}
        missing = set(asked_ids) - set(_ids(following, "tool_result", "tool_use_id"))
        if missing:
            raise bad_request(
                f"messages.{i}: `tool_use` ids were found without `tool_result` blocks "
                f"immediately after: {', '.join(sorted(missing))}. Each `tool_use` block must "
                "have a corresponding `tool_result` block in the next message."
            )


def _tools(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise bad_request("tools: Input should be a valid list")
    for i, tool in enumerate(raw):
        if not isinstance(tool.get("name"), str) or not tool["name"]:
            raise bad_request(f"tools.{i}.name: Field required")
        # Server tools (`web_search_…`) have a versioned type and no schema.
        if tool.get("type", "custom") == "custom" and not isinstance(
            tool.get("input_schema"), dict
        ):
            raise bad_request(f"tools.{i}.custom.input_schema: Field required")
    return raw


def _tool_choice(raw: Any, tools: Sequence[Mapping[str, Any]]) -> dict[str, Any] | None:
    if raw is None:
        return None
    if not isinstance(raw, dict) or raw.get("type") not in _TOOL_CHOICES:
        raise bad_request("tool_choice: Input should be auto, any, none or tool")
    if not tools:
        raise bad_request("tool_choice may only be specified while providing tools")
    if raw["type"] == "tool" and raw.get("name") not in {t["name"] for t in tools}:
        raise bad_request(f"tool_choice.name: no tool named {raw.get('name')!r}")
    return raw
