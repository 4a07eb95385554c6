"""Converse and ConverseStream for the Bedrock mock: the request rules, the answer, the wire.

Refused as Bedrock refuses them (400 `ValidationException`, AWS's wording where
known): fields Converse does not have, a conversation that does not open with a
user turn or does not alternate, empty text blocks, a block that is not exactly
one kind, `toolUse`/`toolResult` blocks without a `toolConfig`, tool results
answering no tool call of the turn before, out-of-range inference settings.

The answer mirrors the other mocks (`providers.mock.text`): the same text for the
same last user text, cut by `maxTokens` (`max_tokens`) or a stop sequence
(`stop_sequence`); tool calls when tools are offered and the last user text asks
to "use tools" (or `toolChoice` is `any`/`tool`), two at most; JSON matching
`outputConfig.textFormat`'s schema. The stream sends `messageStart`, text as
`contentBlockDelta`s of block 0, each tool call as `contentBlockStart` (id, name),
input fragments and `contentBlockStop`, then `messageStop` and `metadata`
(usage, latency). A `filtered` fault stops the answer with `guardrail_intervened`
before any text, `filtered-after:N` with `content_filtered` after N tokens.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from providers.bedrock.mock_wire import dumps, event, stream_fault_frame, validation
from providers.mock.app import Pacer, interrupt, new_id, stamp
from providers.mock.config import MockConfig
from providers.mock.faults import Fault, FilterFault, StreamErrorFault
from providers.mock.schema_json import tool_input
from providers.mock.text import answer_rng
from providers.mock.written import written_answer

__all__ = [
    "Answer",
    "ConverseRequest",
    "StreamWriter",
    "compose",
    "parse_converse",
    "response_body",
]

_FIELDS: Final = frozenset(
    {
        "messages",
        "system",
        "inferenceConfig",
        "toolConfig",
        "guardrailConfig",
        "additionalModelRequestFields",
        "promptVariables",
        "additionalModelResponseFieldPaths",
        "requestMetadata",
        "performanceConfig",
        "serviceTier",
        "outputConfig",
    }
)
_BLOCKS: Final = frozenset(
    {
        "text",
        "image",
        "document",
        "video",
        "audio",
        "toolUse",
        "toolResult",
        "guardContent",
        "cachePoint",
        "reasoningContent",
        "citationsContent",
        "searchResult",
    }
)
_FIRST_USER: Final = (
    "A conversation must start with a user message. "
    "Try again with a conversation that starts with a user message."
)
_BLOCKED: Final = "Sorry, the model cannot answer this question."


@dataclass(frozen=True, slots=True)
class ConverseRequest:
    messages: list[dict[str, Any]]
    system: list[str]
    max_tokens: int | None
    stop_sequences: tuple[str, ...]
    tools: list[dict[str, Any]]  # the toolSpecs
    tool_choice: dict[str, Any] | None
    output_schema: dict[str, Any] | None

    @property
    def last_user_text(self) -> str:
        for message in reversed(self.messages):
            if message["role"] == "user":
                return " ".join(b["text"] for b in message["content"] if "text" in b)
        return ""

    def prompt_tokens(self) -> int:
        """Words across the prompt: a stable stand-in for a tokenizer's count."""
        words = sum(len(s.split()) for s in self.system)
        for message in self.messages:
            for block in message["content"]:
                if "text" in block:
                    words += len(block["text"].split())
                elif "toolUse" in block or "toolResult" in block:
                    words += len(dumps(block).split(",")) + 1
        return max(words, 1)


def _object(value: Any, where: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise validation(f"Malformed input request: {where} must be an object.")
    return value


def parse_converse(body: Any) -> ConverseRequest:
    body = _object(body, "the request body")
    for name in body:
        if name not in _FIELDS:
            raise validation(f"Malformed input request: extraneous key [{name}] is not permitted.")
    messages = _messages(body.get("messages"))
    system = _system(body.get("system"))
    max_tokens, stops = _inference(body.get("inferenceConfig"))
    tools, choice = _tool_config(body.get("toolConfig"))
    if tools is None and _has_tool_blocks(messages):
        raise validation(
            "The toolConfig field must be defined when using toolUse and toolResult content blocks."
        )
    return ConverseRequest(
        messages=messages,
        system=system,
        max_tokens=max_tokens,
        stop_sequences=stops,
        tools=tools or [],
        tool_choice=choice,
        output_schema=_output_schema(body.get("outputConfig")),
    )


def _messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw:
        raise validation(_FIRST_USER)
    previous = None
    for i, message in enumerate(raw):
        message = _object(message, f"messages.{i}")
        role = message.get("role")
        if role not in ("user", "assistant"):
            raise validation(f"messages.{i}.role: the role must be user or assistant.")
        if previous is None and role != "user":
            raise validation(_FIRST_USER)
        if role == previous:
            raise validation(
                "A conversation must alternate between user and assistant roles. Make sure the "
                "conversation alternates between user and assistant roles and try again."
            )
        previous = role
        content = message.get("content")
        if not isinstance(content, list) or not content:
            raise validation(
                f"The content field in the Message object at messages.{i} is empty. "
                "Add a ContentBlock object to the content field and try again."
            )
        for j, block in enumerate(content):
            _block(_object(block, f"messages.{i}.content.{j}"), f"messages.{i}.content.{j}", role)
    _tool_pairs(raw)
    return raw


def _block(block: Mapping[str, Any], where: str, role: str) -> None:
    kinds = [k for k in block if k in _BLOCKS]
    if len(kinds) != 1 or len(block) != 1:
        raise validation(f"The ContentBlock object at {where} must set exactly one of its members.")
    kind = kinds[0]
    if kind == "text" and (not isinstance(block["text"], str) or not block["text"].strip()):
        raise validation(
            f"The text field in the ContentBlock object at {where} is blank. "
            "Add text to the text field, and try again."
        )
    if kind == "toolUse":
        use = block["toolUse"]
        if (
            role != "assistant"
            or not isinstance(use, dict)
            or not isinstance(use.get("input"), dict)
        ):
            raise validation(f"The toolUse block at {where} is malformed.")
        if not isinstance(use.get("toolUseId"), str) or not isinstance(use.get("name"), str):
            raise validation(f"The toolUse block at {where} needs a toolUseId and a name.")
    if kind == "toolResult":
        result = block["toolResult"]
        if (
            role != "user"
            or not isinstance(result, dict)
            or not isinstance(result.get("content"), list)
        ):
            raise validation(f"The toolResult block at {where} is malformed.")
        if result.get("status", "success") not in ("success", "error"):
            raise validation(f"{where}.toolResult.status must be success or error.")
    if kind == "image":
        image = block["image"]
        source = image.get("source") if isinstance(image, dict) else None
        if not isinstance(source, dict) or image.get("format") not in (
            "png",
            "jpeg",
            "gif",
            "webp",
        ):
            raise validation(f"The image block at {where} is malformed.")


def _ids(message: Mapping[str, Any], kind: str) -> list[str]:
    return [b[kind]["toolUseId"] for b in message["content"] if kind in b]


def _tool_pairs(messages: Sequence[Mapping[str, Any]]) -> None:
    for i, message in enumerate(messages):
        results = _ids(message, "toolResult")
        if not results:
            continue
        asked = set(_ids(messages[i - 1], "toolUse")) if i else set()
        if not set(results) <= asked:
            raise validation(
                f"The number of toolResult blocks at messages.{i}.content exceeds the number "
                "of toolUse blocks of previous turn."
            )


def _has_tool_blocks(messages: Sequence[Mapping[str, Any]]) -> bool:
    return any("toolUse" in b or "toolResult" in b for m in messages for b in m["content"])


def _system(raw: Any) -> list[str]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise validation("Malformed input request: system must be a list.")
    texts = []
    for block in raw:
        text = block.get("text") if isinstance(block, dict) else None
        if not isinstance(text, str) or not text.strip():
            raise validation("The text field in the SystemContentBlock is blank.")
        texts.append(text)
    return texts


def _number(config: Mapping[str, Any], name: str, low: float, high: float) -> None:
    value = config.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float) or not low <= value <= high:
        raise validation(f"inferenceConfig.{name} must be between {low} and {high}.")


def _inference(raw: Any) -> tuple[int | None, tuple[str, ...]]:
    if raw is None:
        return None, ()
    config = _object(raw, "inferenceConfig")
    for name in config:
        if name not in ("maxTokens", "temperature", "topP", "stopSequences"):
            raise validation(
                "Malformed input request: extraneous key "
                f"[inferenceConfig.{name}] is not permitted."
            )
    max_tokens = config.get("maxTokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise validation(
            "The maximum tokens you requested exceeds the model limit or is not positive."
        )
    _number(config, "temperature", 0, 1)
    _number(config, "topP", 0, 1)
    stops = config.get("stopSequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) and s for s in stops):
        raise validation("inferenceConfig.stopSequences must be a list of non-empty strings.")
    return max_tokens, tuple(stops)


def _tool_config(raw: Any) -> tuple[list[dict[str, Any]] | None, dict[str, Any] | None]:
    if raw is None:
        return None, None
    config = _object(raw, "toolConfig")
    tools = config.get("tools")
    if not isinstance(tools, list) or not tools:
        raise validation("The toolConfig.tools list must contain at least one tool.")
    specs = []
    for i, tool in enumerate(tools):
        spec = tool.get("toolSpec") if isinstance(tool, dict) else None
        schema = spec.get("inputSchema") if isinstance(spec, dict) else None
        if (
            not isinstance(spec, dict)
            or not isinstance(spec.get("name"), str)
            or not isinstance(schema, dict)
            or not isinstance(schema.get("json"), dict)
        ):
            raise validation(
                f"toolConfig.tools.{i}: a toolSpec needs a name and an inputSchema.json."
            )
        specs.append(spec)
    choice = config.get("toolChoice")
    if choice is not None:
        choice = _object(choice, "toolChoice")
        if len(choice) != 1 or next(iter(choice)) not in ("auto", "any", "tool"):
            raise validation("toolChoice must set exactly one of auto, any or tool.")
        if "tool" in choice and choice["tool"].get("name") not in {s["name"] for s in specs}:
            raise validation("The tool named in toolChoice is not in toolConfig.tools.")
    return specs, choice


def _output_schema(raw: Any) -> dict[str, Any] | None:
    if raw is None:
        return None
    fmt = _object(raw, "outputConfig").get("textFormat")
    if fmt is None:
        return None
    fmt = _object(fmt, "outputConfig.textFormat")
    structure = fmt.get("structure")
    definition = structure.get("jsonSchema") if isinstance(structure, dict) else None
    text = definition.get("schema") if isinstance(definition, dict) else None
    if fmt.get("type") != "json_schema" or not isinstance(text, str):
        raise validation("outputConfig.textFormat must be a json_schema with a schema string.")
    try:
        schema = json.loads(text)
    except ValueError:
        raise validation("outputConfig.textFormat: the schema is not valid JSON.") from None
    return _object(schema, "outputConfig.textFormat schema")


# -- the answer -----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ToolUse:
    id: str
    name: str
    input: dict[str, Any]


@dataclass(frozen=True, slots=True)
class Answer:
    tokens: list[str]
    tool_uses: list[ToolUse]
    stop_reason: str
    input_tokens: int
    output_tokens: int


def split(arguments: str) -> list[str]:
    """Three fragments (fewer for tiny strings), so clients must concatenate."""
    cut = max(len(arguments) // 3, 1)
    return [p for p in (arguments[:cut], arguments[cut : 2 * cut], arguments[2 * cut :]) if p]


def _tools_to_call(req: ConverseRequest) -> list[dict[str, Any]]:
    if not req.tools:
        return []
    choice = req.tool_choice or {"auto": {}}
    if "tool" in choice:
        return [t for t in req.tools if t["name"] == choice["tool"]["name"]][:1]
    last = req.messages[-1]
    asked = "any" in choice or (
        last["role"] == "user"
        and any("text" in b for b in last["content"])
        and "use tools" in req.last_user_text.lower()
    )
    return req.tools[:2] if asked else []


_STOP_REASONS: Final = {
    "complete": "end_turn",
    "length": "max_tokens",
    "stop_sequence": "stop_sequence",
}


def compose(req: ConverseRequest, config: MockConfig, fault: Fault | None) -> Answer:
    rng = answer_rng([{"role": "user", "content": req.last_user_text}], None)
    prompt = req.prompt_tokens()
    if isinstance(fault, FilterFault) and fault.after is None:
        return Answer([], [], "guardrail_intervened", prompt, 0)
    tools = _tools_to_call(req)
    if tools:
        uses = [_tool_use(tool, rng) for tool in tools]
        cost = sum(len(split(dumps(u.input))) + 1 for u in uses)
        return Answer([], uses, "tool_use", prompt, cost)
    written = written_answer(
        rng,
        cap=config.max_tokens_default,
        max_tokens=req.max_tokens,
        stop=req.stop_sequences,
        schema=req.output_schema,
    )
    tokens, stop = written.pieces, _STOP_REASONS[written.ending]
    if isinstance(fault, FilterFault) and fault.after is not None and fault.after < len(tokens):
        tokens, stop = tokens[: fault.after], "content_filtered"
    return Answer(tokens, [], stop, prompt, len(tokens))


def _tool_use(tool: dict[str, Any], rng: random.Random) -> ToolUse:
    schema = tool["inputSchema"]["json"]
    return ToolUse(new_id("tooluse_"), tool["name"], tool_input(schema, rng))


def usage(answer: Answer) -> dict[str, int]:
    return {
        "inputTokens": answer.input_tokens,
        "outputTokens": answer.output_tokens,
        "totalTokens": answer.input_tokens + answer.output_tokens,
    }


def response_body(answer: Answer, config: MockConfig, started: float) -> dict[str, Any]:
    content: list[dict[str, Any]]
    if answer.tool_uses:
        content = [
            {"toolUse": {"toolUseId": u.id, "name": u.name, "input": u.input}}
            for u in answer.tool_uses
        ]
    elif answer.stop_reason == "guardrail_intervened":
        content = [{"text": _BLOCKED}]
    else:
        tokens = [stamp() for _ in answer.tokens] if config.stamp_tokens else answer.tokens
        content = [{"text": "".join(tokens)}] if tokens else []
    return {
        "output": {"message": {"role": "assistant", "content": content}},
        "stopReason": answer.stop_reason,
        "usage": usage(answer),
        "metrics": {"latencyMs": _latency(started)},
    }


def _latency(started: float) -> int:
    return max(int((time.monotonic() - started) * 1000), 1)


class StreamWriter:
    """Writes one answer's frames, with `MockConfig`'s pacing and the request's fault."""

    def __init__(
        self,
        request: web.Request,
        resp: web.StreamResponse,
        fault: Fault | None,
        config: MockConfig,
    ) -> None:
        self._request = request
        self._resp = resp
        self._fault = fault
        self._config = config

    async def send(self, answer: Answer, started: float) -> None:
        frames = self._tool_frames(answer.tool_uses) if answer.tool_uses else None
        total = len(frames) if frames is not None else len(answer.tokens)
        pacer = Pacer(self._config.tokens_per_sec)
        if self._config.ttft_ms:
            await asyncio.sleep(self._config.ttft_ms / 1000)
        head = event("messageStart", {"role": "assistant"})
        for index in range(total):
            if await self._interrupted(index, total, head):
                return
            await pacer.wait()
            if frames is not None:
                chunk = frames[index]
            else:
                text = stamp() if self._config.stamp_tokens else answer.tokens[index]
                chunk = event(
                    "contentBlockDelta", {"contentBlockIndex": 0, "delta": {"text": text}}
                )
            await self._resp.write(head + chunk)
            head = b""
        if await self._interrupted(total, total, head):
            return
        tail = head
        if frames is None and total:
            tail += event("contentBlockStop", {"contentBlockIndex": 0})
        tail += event("messageStop", {"stopReason": answer.stop_reason})
        tail += event(
            "metadata", {"usage": usage(answer), "metrics": {"latencyMs": _latency(started)}}
        )
        await self._resp.write(tail)

    @staticmethod
    def _tool_frames(uses: list[ToolUse]) -> list[bytes]:
        """One write per input fragment, each led by the events that open its block."""
        frames: list[bytes] = []
        for index, use in enumerate(uses):
            head = b""
            if index:
                head = event("contentBlockStop", {"contentBlockIndex": index - 1})
            start = {"toolUse": {"toolUseId": use.id, "name": use.name}}
            head += event("contentBlockStart", {"contentBlockIndex": index, "start": start})
            for part in split(dumps(use.input)):
                delta = {"toolUse": {"input": part}}
                frames.append(
                    head + event("contentBlockDelta", {"contentBlockIndex": index, "delta": delta})
                )
                head = b""
        if frames:
            frames[-1] += event("contentBlockStop", {"contentBlockIndex": len(uses) - 1})
        return frames

    async def _interrupted(self, index: int, total: int, head: bytes) -> bool:
        """Apply the fault due after `index` tokens; True when it ended the stream."""
        fault = self._fault
        if isinstance(fault, StreamErrorFault) and index == min(fault.after, total):
            await self._resp.write(head + stream_fault_frame(fault.error))
            return True
        await interrupt(self._request, fault, index, total)
        return False
