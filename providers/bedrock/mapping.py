"""The fleet's chat request as a Converse body, and a Converse answer as a result.

Converse wants: the system prompt apart (`system: [{text}]`); turns of `user`
and `assistant` made of content blocks, consecutive turns of one role merged (it
refuses two in a row); tool calls as `toolUse` blocks with object inputs and their
results as `toolResult` blocks of a user turn (`json` when the result is a JSON
object, else `text`); images as raw bytes (base64 in JSON) or S3 locations, not
URLs; no empty text blocks.

Options: `max_tokens`, `temperature`, `top_p`, `stop` go to `inferenceConfig`;
`response_format` `json_schema` to `outputConfig.textFormat` (the schema as JSON
text); `reasoning_effort` to `outputConfig.effort`; `service_tier` to
`serviceTier`; `metadata` (and `user`, under the key `user`) to
`requestMetadata`, which tags the invocation logs. Refused with `BadRequest`,
since dropping them would change the answer: `json_object` (Converse's structured
output needs a schema), non-zero `frequency_penalty`/`presence_penalty` and
`top_logprobs` (no Converse equivalent), `tool_choice: none` in a conversation
that already carries tool blocks (Converse cannot be told not to call tools
except by not offering them, and it refuses tool blocks without tools). `seed`
has no Converse equivalent and is not sent: it asks for repeatability, not for a
different answer.

Answers: `stopReason` in the fleet's words (`end_turn`/`stop_sequence` → stop,
`max_tokens` → length, `tool_use` → tool_calls); `guardrail_intervened` and
`content_filtered` raise `ContentFiltered`, `model_context_window_exceeded` a
`BadRequest`, `malformed_model_output`/`malformed_tool_use` a retryable
`ProviderUnavailable` (a new sample may be well formed). Usage: Converse's
`inputTokens` leaves out the prompt-cache reads and writes (`totalTokens`
includes them), so `Usage.input_tokens` is the sum of the three, with the two
cache counts also given apart.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Mapping
from typing import Any, Final

from contracts.errors import (
    BadRequest,
    ContentFiltered,
    ContractError,
    FleetError,
    InternalError,
    ProviderUnavailable,
)
from contracts.frames import Usage
from contracts.jobs import ContentPart, Message, Tool, ToolCall
from providers.core.turns import user_assistant_turns
from providers.core.types import ChatRequest, ChatResult, tool_schema
from providers.options import ModelOptions

__all__ = ["compact_json", "converse_body", "finish_reason", "parse_converse", "usage_of"]

_FINISH: Final[Mapping[str, str]] = {
    "end_turn": "stop",
    "stop_sequence": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
}
_FILTERED: Final[Mapping[str, str]] = {
    "guardrail_intervened": "a guardrail intervened",
    "content_filtered": "the model's content filter stopped the answer",
}
_MALFORMED: Final = ("malformed_model_output", "malformed_tool_use")
_IMAGE_FORMATS: Final[Mapping[str, str]] = {
    "image/png": "png",
    "image/jpeg": "jpeg",
    "image/jpg": "jpeg",
    "image/gif": "gif",
    "image/webp": "webp",
}
_EFFORTS: Final = ("low", "medium", "high", "xhigh", "max")
_SERVICE_TIERS: Final = ("priority", "default", "flex", "reserved")
_TOOL_CHOICE: Final[Mapping[str, dict[str, Any]]] = {
    "auto": {"auto": {}},
    "required": {"any": {}},
    "any": {"any": {}},
}


def converse_body(provider: str, req: ChatRequest) -> dict[str, Any]:
    """The JSON body of `POST /model/{id}/converse` (and `converse-stream`)."""
    options = req.options
    body: dict[str, Any] = {"messages": _turns(provider, req.messages)}
    system = [m.text() for m in req.messages if m.role in ("system", "developer")]
    if any(system):
        body["system"] = [{"text": text} for text in system if text]
    inference = _inference(options)
    if inference:
        body["inferenceConfig"] = inference
    tools = _tool_config(provider, req, body["messages"])
    if tools is not None:
        body["toolConfig"] = tools
    output = _output_config(provider, options)
    if output:
        body["outputConfig"] = output
    _refuse_unsupported(provider, options)
    if options.service_tier is not None and options.service_tier != "auto":
        if options.service_tier not in _SERVICE_TIERS:
            raise BadRequest(f"{provider}: unsupported service_tier {options.service_tier!r}")
        body["serviceTier"] = {"type": options.service_tier}
    metadata = dict(options.metadata or {})
    if options.user:
        metadata.setdefault("user", options.user)
    if metadata:
        body["requestMetadata"] = metadata
    return body


def _inference(options: ModelOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    if options.max_tokens is not None:
        out["maxTokens"] = options.max_tokens
    if options.temperature is not None:
        out["temperature"] = options.temperature
    if options.top_p is not None:
        out["topP"] = options.top_p
    if options.stop:
        out["stopSequences"] = [s for s in options.stop if s]
    return out


def _refuse_unsupported(provider: str, options: ModelOptions) -> None:
    for name in ("frequency_penalty", "presence_penalty"):
        if getattr(options, name):
            raise BadRequest(f"{provider}: Converse has no {name}")
    if options.top_logprobs:
        raise BadRequest(f"{provider}: Converse does not return log probabilities")


def _output_config(provider: str, options: ModelOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    fmt = options.response_format
    kind = fmt.get("type") if fmt is not None else None
    if fmt is not None and kind != "text":
        wrapper = fmt.get("json_schema")
        schema = wrapper.get("schema") if isinstance(wrapper, dict) else None
        if kind != "json_schema" or not isinstance(schema, dict):
            raise BadRequest(
                f"{provider}: response_format {kind!r} is not supported: Converse's "
                "structured output needs a json_schema with a schema"
            )
        definition: dict[str, Any] = {"schema": compact_json(schema)}
        name = wrapper.get("name") if isinstance(wrapper, dict) else None
        if isinstance(name, str) and name:
            definition["name"] = name
        out["textFormat"] = {"type": "json_schema", "structure": {"jsonSchema": definition}}
    if options.reasoning_effort is not None:
        if options.reasoning_effort not in _EFFORTS:
            raise BadRequest(
                f"{provider}: unsupported reasoning_effort {options.reasoning_effort!r}"
            )
        out["effort"] = options.reasoning_effort
    return out


# -- turns ----------------------------------------------------------------------------


def _turns(provider: str, messages: list[Message]) -> list[dict[str, Any]]:
    return user_assistant_turns(messages, lambda msg, i: _blocks(provider, msg, i))


def _blocks(provider: str, msg: Message, i: int) -> list[dict[str, Any]]:
    if msg.role == "tool":
        if not msg.tool_call_id:
            raise ContractError(f"messages[{i}].tool_call_id", "required for role 'tool'")
        return [{"toolResult": _tool_result(provider, msg)}]
    blocks = _content(provider, msg.content)
    for j, call in enumerate(msg.tool_calls or []):
        blocks.append({"toolUse": _tool_use(call, f"messages[{i}].tool_calls[{j}].arguments")})
    return blocks


def _tool_result(provider: str, msg: Message) -> dict[str, Any]:
    content: list[dict[str, Any]]
    if isinstance(msg.content, str):
        try:
            value = json.loads(msg.content)
        except ValueError:
            value = None
        content = [{"json": value}] if isinstance(value, dict) else [{"text": msg.content}]
    else:
        content = _content(provider, msg.content)
    # A tool that returned nothing still answers its call.
    return {"toolUseId": msg.tool_call_id, "content": content or [{"text": ""}]}


def _content(provider: str, content: str | list[ContentPart] | None) -> list[dict[str, Any]]:
    if isinstance(content, str):
        return [{"text": content}] if content else []
    return [_part(provider, p) for p in content or [] if p.type != "text" or p.text]


def _part(provider: str, part: ContentPart) -> dict[str, Any]:
    if part.type == "text":
        return {"text": part.text or ""}
    url = part.image_url or ""
    if url.startswith("s3://"):
        fmt = _IMAGE_FORMATS.get(_guess_type(url))
        if fmt is None:
            raise BadRequest(f"{provider}: an S3 image must end in .png, .jpg, .gif or .webp")
        return {"image": {"format": fmt, "source": {"s3Location": {"uri": url}}}}
    head, comma, data = url.partition(",")
    media_type = head.removeprefix("data:").removesuffix(";base64")
    if not (url.startswith("data:") and comma and head.endswith(";base64")):
        raise BadRequest(f"{provider}: an image must be a base64 data: URL or an s3:// URI")
    fmt = _IMAGE_FORMATS.get(media_type.lower())
    if fmt is None:
        raise BadRequest(f"{provider}: unsupported image type {media_type!r}")
    try:
        raw = base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        raise BadRequest(f"{provider}: image data is not valid base64") from None
    # Blobs travel base64-encoded in JSON; re-encoding normalises the padding and alphabet.
    return {"image": {"format": fmt, "source": {"bytes": base64.b64encode(raw).decode()}}}


def _guess_type(url: str) -> str:
    suffix = url.rsplit(".", 1)[-1].lower()
    return {"png": "image/png", "jpg": "image/jpeg", "jpeg": "image/jpeg"}.get(
        suffix, f"image/{suffix}"
    )


def _tool_use(call: ToolCall, field: str) -> dict[str, Any]:
    try:
        arguments = json.loads(call.arguments) if call.arguments.strip() else {}
    except ValueError:
        raise ContractError(field, "not valid JSON") from None
    if not isinstance(arguments, dict):
        raise ContractError(field, "must be a JSON object")
    return {"toolUseId": call.id, "name": call.name, "input": arguments}


# -- tools ----------------------------------------------------------------------------


def _tool_config(
    provider: str, req: ChatRequest, turns: list[dict[str, Any]]
) -> dict[str, Any] | None:
    choice = req.options.tool_choice
    if not req.tools:
        return None
    if choice == "none":
        if any("toolUse" in b or "toolResult" in b for t in turns for b in t["content"]):
            raise BadRequest(
                f"{provider}: tool_choice 'none' cannot be honoured once the conversation "
                "carries tool calls (Converse needs the tools to read them)"
            )
        return None
    config: dict[str, Any] = {"tools": [_tool(t) for t in req.tools]}
    if choice is not None:
        config["toolChoice"] = _tool_choice(provider, choice)
    return config


def _tool(tool: Tool) -> dict[str, Any]:
    spec: dict[str, Any] = {"name": tool.name, "inputSchema": {"json": tool_schema(tool)}}
    if tool.description:
        spec["description"] = tool.description
    if tool.strict is not None:
        spec["strict"] = tool.strict
    return {"toolSpec": spec}


def _tool_choice(provider: str, choice: str | dict[str, Any]) -> dict[str, Any]:
    if isinstance(choice, str):
        if choice in _TOOL_CHOICE:
            return dict(_TOOL_CHOICE[choice])
    else:
        function = choice.get("function")
        name = function.get("name") if isinstance(function, dict) else choice.get("name")
        if isinstance(name, str) and name:
            return {"tool": {"name": name}}
    raise BadRequest(f"{provider}: unsupported tool_choice {choice!r}")


# -- answers --------------------------------------------------------------------------


def finish_reason(provider: str, stop_reason: Any) -> str | None:
    """The fleet's finish reason, or the exception a stop reason stands for."""
    if not isinstance(stop_reason, str):
        return None
    error = stop_error(provider, stop_reason)
    if error is not None:
        raise error
    return _FINISH.get(stop_reason, stop_reason.lower())


def stop_error(provider: str, stop_reason: str) -> FleetError | None:
    if stop_reason in _FILTERED:
        return ContentFiltered(f"{provider}: {_FILTERED[stop_reason]} (stopReason {stop_reason})")
    if stop_reason == "model_context_window_exceeded":
        return BadRequest(
            f"{provider}: the conversation exceeds the model's context window "
            f"(stopReason {stop_reason})"
        )
    if stop_reason in _MALFORMED:
        return ProviderUnavailable(
            f"{provider}: the model's output was malformed (stopReason {stop_reason})"
        )
    return None


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage_of(raw: Any) -> Usage:
    """`Usage` from Converse's `usage` (a response's, or a stream's `metadata`)."""
    if not isinstance(raw, Mapping):
        return Usage()
    read = _count(raw.get("cacheReadInputTokens"))
    written = _count(raw.get("cacheWriteInputTokens"))
    prompt = (_count(raw.get("inputTokens")) or 0) + (read or 0) + (written or 0)
    output = _count(raw.get("outputTokens")) or 0
    return Usage(
        input_tokens=prompt,
        output_tokens=output,
        total_tokens=prompt + output,
        cached_input_tokens=read,
        cache_write_tokens=written,
    )


def compact_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def parse_converse(provider: str, payload: Mapping[str, Any]) -> ChatResult:
    """`ChatResult` from a Converse response body."""
    output = payload.get("output")
    message = output.get("message") if isinstance(output, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, list):
        raise InternalError(f"{provider}: response has no output.message.content")
    finish = finish_reason(provider, payload.get("stopReason"))
    texts: list[str] = []
    calls: list[ToolCall] = []
    for block in content:
        if not isinstance(block, dict):
            continue
        if isinstance(block.get("text"), str):
            texts.append(block["text"])
        use = block.get("toolUse")
        if isinstance(use, dict):
            calls.append(
                ToolCall(
                    id=str(use.get("toolUseId") or ""),
                    name=str(use.get("name") or ""),
                    arguments=compact_json(use.get("input") or {}),
                )
            )
    text = "".join(texts)
    answer = Message(
        role="assistant", content=text if text or not calls else None, tool_calls=calls or None
    )
    return ChatResult(message=answer, finish_reason=finish, usage=usage_of(payload.get("usage")))
