"""The fleet's chat request as a `generateContent` body (Gemini and Vertex AI alike).

The body is the same on both APIs; only the URL and the auth differ, so nothing
here knows either. What the mapping decides:

* System and developer messages become `systemInstruction`; the other turns are
  `contents` with the roles `user` and `model`. Consecutive turns of one role are
  merged, so the results of parallel calls answer their call turn as one turn (the
  API wants as many `functionResponse` parts as the turn had `functionCall`s).
* A tool result is a `functionResponse` named after the call it answers (looked up
  by `tool_call_id` among the assistant's earlier calls). Its `response` must be an
  object: JSON objects are sent as they are, anything else as `{"result": …}`.
* Tool-call ids are sent back only when Google made them: the ids the parser mints
  for calls that came without one (`call_<n>`, see `parse`) mean nothing to Google.
* Tool schemas travel as `parametersJsonSchema` and structured outputs as
  `responseJsonSchema`: both take JSON Schema as the fleet has it, where
  `parameters`/`responseSchema` take Google's OpenAPI subset.
* `reasoning_effort` becomes `thinkingConfig`: a `thinkingBudget` for Gemini 1.x and
  2.x models (the budgets Google's OpenAI-compatible endpoint uses), a
  `thinkingLevel` for later ones. `top_logprobs` asks for `responseLogprobs`.
* Not expressible, hence refused (`BadRequest`): a `response_format` other than
  text/json_object/json_schema, an unknown `tool_choice`, a named tool choice
  without tools, an image that is neither a base64 `data:` URL nor a URL whose file
  type says it is an image. Options that do not change the answer (`user`,
  `metadata`, `service_tier`) and `Tool.strict` have no Gemini field and are not sent.
"""

from __future__ import annotations

import json
import mimetypes
import re
from collections.abc import Mapping
from typing import Any, Final
from urllib.parse import urlsplit

from contracts.errors import BadRequest, ContractError
from contracts.jobs import ContentPart, Message, Tool, ToolCall
from providers.core.turns import append_turn
from providers.core.types import ChatRequest, tool_schema
from providers.options import ModelOptions

__all__ = ["MINTED_ID", "compact_json", "generate_body", "model_path"]

# Ids `parse` gives calls that came without one; never sent back to Google.
MINTED_ID: Final = re.compile(r"call_\d+")

_ROLES: Final[Mapping[str, str]] = {"user": "user", "tool": "user", "assistant": "model"}
_SYSTEM: Final = ("system", "developer")

_TOOL_MODES: Final[Mapping[str, str]] = {
    "auto": "AUTO",
    "none": "NONE",
    "required": "ANY",
    "any": "ANY",
    "validated": "VALIDATED",
}
# Gemini 2.x takes a token budget; these are the ones Google's OpenAI-compatible
# endpoint uses for `reasoning_effort` (0 turns thinking off where a model allows).
_THINKING_BUDGETS: Final[Mapping[str, int]] = {
    "none": 0,
    "minimal": 1024,
    "low": 1024,
    "medium": 8192,
    "high": 24576,
}
_THINKING_LEVELS: Final[Mapping[str, str]] = {
    "minimal": "MINIMAL",
    "low": "LOW",
    "medium": "MEDIUM",
    "high": "HIGH",
}
_BUDGET_MODELS: Final = re.compile(r"(^|/)gemini-[12](\.|-)")


def compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def model_path(model: str) -> str:
    """`models/{model}` for a name given with or without its `models/` prefix."""
    return model if model.startswith("models/") else f"models/{model}"


def generate_body(provider: str, req: ChatRequest) -> dict[str, Any]:
    """The JSON body of `:generateContent` / `:streamGenerateContent`; unset options
    are omitted."""
    body: dict[str, Any] = {"contents": _contents(provider, req.messages)}
    system = [
        {"text": text} for text in (m.text() for m in req.messages if m.role in _SYSTEM) if text
    ]
    if system:
        body["systemInstruction"] = {"parts": system}
    options = req.options
    if req.tools:
        body["tools"] = [{"functionDeclarations": [_declaration(t) for t in req.tools]}]
    if options.tool_choice is not None:
        config = _tool_config(provider, options.tool_choice, req.tools)
        if config is not None:
            body["toolConfig"] = config
    generation = _generation_config(provider, req.model, options)
    if generation:
        body["generationConfig"] = generation
    return body


# -- contents -------------------------------------------------------------------------


def _contents(provider: str, messages: list[Message]) -> list[dict[str, Any]]:
    contents: list[dict[str, Any]] = []
    calls: dict[str, str] = {}  # tool-call id → function name, newest call winning
    for i, msg in enumerate(messages):
        if msg.role in _SYSTEM:
            continue
        if msg.role == "tool":
            parts = [_function_response(msg, i, calls)]
        else:
            parts = _parts(provider, msg.content)
            for j, call in enumerate(msg.tool_calls or ()):
                calls[call.id] = call.name
                parts.append(_function_call(call, f"messages[{i}].tool_calls[{j}].arguments"))
        append_turn(contents, _ROLES[msg.role], "parts", parts)
    return contents


def _parts(provider: str, content: str | list[ContentPart] | None) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    return [_part(provider, p) for p in content or () if p.type != "text" or p.text]


def _part(provider: str, part: ContentPart) -> dict[str, Any]:
    if part.type == "text":
        return {"text": part.text or ""}
    url = part.image_url or ""
    head, comma, data = url.partition(",")
    if url.startswith("data:") and comma and head.endswith(";base64"):
        mime = head.removeprefix("data:").removesuffix(";base64")
        if mime:
            return {"inlineData": {"mimeType": mime, "data": data}}
    elif url.startswith(("https://", "http://", "gs://")):
        guessed, _ = mimetypes.guess_type(urlsplit(url).path)
        if guessed is not None and guessed.startswith("image/"):
            return {"fileData": {"mimeType": guessed, "fileUri": url}}
        raise BadRequest(
            f"{provider}: cannot tell the image type of {_short(url)!r}: "
            "give a URL ending in its file type (.png, .jpg, …) or a base64 data: URL"
        )
    raise BadRequest(f"{provider}: an image must be an http(s) URL or a base64 data: URL")


def _short(url: str) -> str:
    return url if len(url) <= 80 else url[:77] + "..."


def _function_call(call: ToolCall, field: str) -> dict[str, Any]:
    try:
        arguments = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        raise ContractError(field, "not valid JSON") from None
    if not isinstance(arguments, dict):
        raise ContractError(field, "must be a JSON object")
    function: dict[str, Any] = {"name": call.name, "args": arguments}
    if call.id and not MINTED_ID.fullmatch(call.id):
        function["id"] = call.id
    return {"functionCall": function}


def _function_response(msg: Message, i: int, calls: Mapping[str, str]) -> dict[str, Any]:
    call_id = msg.tool_call_id
    name = (calls.get(call_id) if call_id else None) or msg.name
    if not name:
        raise ContractError(
            f"messages[{i}].tool_call_id",
            "answers no earlier tool call (and the message has no name)",
        )
    function: dict[str, Any] = {"name": name, "response": _response_object(msg.text())}
    if call_id and not MINTED_ID.fullmatch(call_id):
        function["id"] = call_id
    return {"functionResponse": function}


def _response_object(text: str) -> dict[str, Any]:
    try:
        value = json.loads(text)
    except ValueError:
        return {"result": text}
    return value if isinstance(value, dict) else {"result": value}


def _declaration(tool: Tool) -> dict[str, Any]:
    out: dict[str, Any] = {"name": tool.name, "parametersJsonSchema": tool_schema(tool)}
    if tool.description:
        out["description"] = tool.description
    return out


def _tool_config(
    provider: str, choice: str | dict[str, Any], tools: list[Tool]
) -> dict[str, Any] | None:
    mode: str | None = None
    names: list[str] | None = None
    if isinstance(choice, str):
        mode = _TOOL_MODES.get(choice.lower())
    else:
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else choice.get("name")
        if isinstance(name, str) and name:
            mode, names = "ANY", [name]
        elif isinstance(choice.get("type"), str):
            mode = _TOOL_MODES.get(choice["type"].lower())
    if mode is None:
        raise BadRequest(f"{provider}: unsupported tool_choice {choice!r}")
    if not tools:
        if mode in ("AUTO", "NONE"):
            return None  # nothing to call either way
        raise BadRequest(f"{provider}: tool_choice {choice!r} needs tools")
    config: dict[str, Any] = {"mode": mode}
    if names is not None:
        config["allowedFunctionNames"] = names
    return {"functionCallingConfig": config}


# -- generationConfig -----------------------------------------------------------------


def _generation_config(provider: str, model: str, options: ModelOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name, key in (
        ("temperature", "temperature"),
        ("top_p", "topP"),
        ("max_tokens", "maxOutputTokens"),
        ("seed", "seed"),
        ("presence_penalty", "presencePenalty"),
        ("frequency_penalty", "frequencyPenalty"),
    ):
        value = getattr(options, name)
        if value is not None:
            out[key] = value
    if options.stop:
        out["stopSequences"] = list(options.stop)
    if options.response_format is not None:
        out.update(_response_format(provider, options.response_format))
    if options.reasoning_effort is not None:
        out["thinkingConfig"] = _thinking(provider, model, options.reasoning_effort)
    if options.top_logprobs is not None:
        out["responseLogprobs"] = True
        out["logprobs"] = options.top_logprobs
    return out


def _response_format(provider: str, response_format: dict[str, Any]) -> dict[str, Any]:
    kind = response_format.get("type")
    if kind == "text":
        return {}
    if kind == "json_object":
        return {"responseMimeType": "application/json"}
    if kind == "json_schema":
        wrapper = response_format.get("json_schema")
        schema = wrapper.get("schema") if isinstance(wrapper, dict) else None
        if isinstance(schema, dict):
            return {"responseMimeType": "application/json", "responseJsonSchema": schema}
        raise BadRequest(f"{provider}: response_format json_schema needs json_schema.schema")
    raise BadRequest(f"{provider}: unsupported response_format {kind!r}")


def _thinking(provider: str, model: str, effort: str) -> dict[str, Any]:
    effort = effort.strip().lower()
    if _BUDGET_MODELS.search(model):
        if effort in _THINKING_BUDGETS:
            return {"thinkingBudget": _THINKING_BUDGETS[effort]}
    elif effort in _THINKING_LEVELS:
        return {"thinkingLevel": _THINKING_LEVELS[effort]}
    raise BadRequest(f"{provider}: reasoning_effort {effort!r} has no equivalent for {model!r}")
