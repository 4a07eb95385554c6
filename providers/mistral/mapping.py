"""The fleet's chat request as a Mistral `POST /v1/chat/completions` body.

Mistral's body is OpenAI's in outline, but it refuses fields it does not know
(422 `extra_forbidden`), so nothing OpenAI-only is ever sent: no `seed` (it is
`random_seed`), no `stream_options` (usage comes on the last chunk unasked), no
`max_completion_tokens`, no `user`.

* Roles: `developer` messages go as `system`; Mistral has no other name for them.
* Tool-call ids: Mistral refuses any id that is not exactly 9 letters and digits
  (400 `invalid_function_call`, code 3280). Its own ids are; ids from other
  providers in the same conversation (`call_…`, `toolu_…`) are not. Those are
  replaced by a 9-character digest of themselves (`tool_call_id`), the same in
  the assistant's call and in the tool result answering it, so the pairs still
  match; Mistral's own ids go back unchanged. A tool result without a `name` gets
  the name of the call it answers, which older Mistral models want.
* Options: `temperature`, `top_p`, `max_tokens`, `stop`, `frequency_penalty`,
  `presence_penalty`, `response_format` (text, json_object, json_schema),
  `reasoning_effort` and `metadata` go as they are; `seed` as `random_seed`;
  `top_logprobs` with `logprobs: true`; `tool_choice` as `auto`, `none`, `any`,
  `required` or a named function; `service_tier` only in Mistral's words (`auto`,
  `standard_only`). Refused (`BadRequest`): another `response_format` type or
  `tool_choice` word, a named tool choice without tools. Not sent because they do
  not change the answer: `user` (Mistral has no such field) and OpenAI's service
  tiers (`default`, `flex`, `scale`, `priority`).
* `safe_prompt` comes from the credential (see `adapter`), not the job: it is
  the account owner's policy for the key, and no job option names it.
"""

from __future__ import annotations

import hashlib
import re
import string
from collections.abc import Mapping
from typing import Any, Final

from contracts.errors import BadRequest
from contracts.jobs import ContentPart, Message, Tool
from providers.core.types import ChatRequest, tool_schema
from providers.options import ModelOptions

__all__ = ["chat_body", "tool_call_id"]

# What Mistral accepts as a tool-call id (its own ids look like this too).
MISTRAL_ID: Final = re.compile(r"[A-Za-z0-9]{9}")
_ID_ALPHABET: Final = string.ascii_letters + string.digits
_ROLES: Final[Mapping[str, str]] = {"developer": "system"}
_TOOL_CHOICES: Final = frozenset({"auto", "none", "any", "required"})
_FORMATS: Final = frozenset({"text", "json_object", "json_schema"})
_SERVICE_TIERS: Final = frozenset({"auto", "standard_only"})
# Options copied verbatim when set.
_PLAIN_OPTIONS: Final = (
    "temperature",
    "top_p",
    "max_tokens",
    "frequency_penalty",
    "presence_penalty",
    "reasoning_effort",
    "metadata",
)


def tool_call_id(call_id: str) -> str:
    """`call_id` if Mistral accepts it, else a 9-character digest of it (stable, so a
    call and the result answering it map to the same id)."""
    if MISTRAL_ID.fullmatch(call_id):
        return call_id
    number = int.from_bytes(hashlib.blake2b(call_id.encode(), digest_size=8).digest(), "big")
    digits = []
    for _ in range(9):
        number, digit = divmod(number, len(_ID_ALPHABET))
        digits.append(_ID_ALPHABET[digit])
    return "".join(digits)


def chat_body(
    provider: str, req: ChatRequest, *, stream: bool, safe_prompt: bool = False
) -> dict[str, Any]:
    """The JSON body for `POST /chat/completions`; unset options are omitted."""
    body: dict[str, Any] = {"model": req.model, "messages": _messages(provider, req.messages)}
    if req.tools:
        body["tools"] = [_tool(t) for t in req.tools]
    body.update(_options(provider, req.options, has_tools=bool(req.tools)))
    if safe_prompt:
        body["safe_prompt"] = True
    if stream:
        body["stream"] = True
    return body


def _messages(provider: str, messages: list[Message]) -> list[dict[str, Any]]:
    names = {c.id: c.name for m in messages for c in m.tool_calls or ()}
    return [_message(provider, m, names) for m in messages]


def _message(provider: str, msg: Message, names: Mapping[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": _ROLES.get(msg.role, msg.role)}
    content = msg.content
    if isinstance(content, list):
        out["content"] = [_part(provider, p) for p in content]
    elif content is not None:
        out["content"] = content
    elif not msg.tool_calls:
        out["content"] = ""  # Mistral refuses a message with neither content nor calls
    if msg.tool_calls:
        out["tool_calls"] = [
            {
                "id": tool_call_id(c.id),
                "type": "function",
                "function": {"name": c.name, "arguments": c.arguments},
            }
            for c in msg.tool_calls
        ]
    if msg.tool_call_id is not None:
        out["tool_call_id"] = tool_call_id(msg.tool_call_id)
    if msg.role == "tool":
        name = msg.name or names.get(msg.tool_call_id or "")
        if name:
            out["name"] = name
    return out


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
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _options(provider: str, options: ModelOptions, *, has_tools: bool) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _PLAIN_OPTIONS:
        value = getattr(options, name)
        if value is not None:
            out[name] = value
    if options.seed is not None:
        out["random_seed"] = options.seed
    if options.stop is not None:
        out["stop"] = list(options.stop)
    if options.top_logprobs is not None:
        out["logprobs"] = True
        out["top_logprobs"] = options.top_logprobs
    if options.service_tier in _SERVICE_TIERS:
        out["service_tier"] = options.service_tier
    if options.response_format is not None:
        kind = options.response_format.get("type")
        if kind not in _FORMATS:
            raise BadRequest(f"{provider}: unsupported response_format type {kind!r}")
        out["response_format"] = options.response_format
    if options.tool_choice is not None:
        out["tool_choice"] = _tool_choice(provider, options.tool_choice, has_tools=has_tools)
    return out


def _tool_choice(
    provider: str, choice: str | dict[str, Any], *, has_tools: bool
) -> str | dict[str, Any]:
    if isinstance(choice, str):
        if choice not in _TOOL_CHOICES:
            raise BadRequest(f"{provider}: unsupported tool_choice {choice!r}")
        return choice
    function = choice.get("function")
    name = function.get("name") if isinstance(function, dict) else choice.get("name")
    if not isinstance(name, str) or not name:
        raise BadRequest(f"{provider}: unsupported tool_choice {sorted(choice)!r}")
    if not has_tools:
        raise BadRequest(f"{provider}: tool_choice names {name!r} but no tools are given")
    return {"type": "function", "function": {"name": name}}
