"""The Azure mock's answers on the wire: chat completion bodies and chunk streams.

What Azure adds to OpenAI's shapes (see shared/reference/transcripts/openai/
azure-stream-prompt-filter): a first stream chunk of its own carrying only
`prompt_filter_results` (`choices: []`, empty id, model and object, created 0);
`content_filter_results` on every choice (the full verdict on content chunks,
`{}` on the role, tool and finish chunks); keys in alphabetical order; no
`service_tier` and no `obfuscation`. Whole bodies carry `prompt_filter_results`
beside the choices. A filter fault's answer ends with `finish_reason:
content_filter` and the verdict that stopped it.

Answers themselves (text, tool calls, usage) come from the OpenAI mock's
`compose`, so both dialects answer a prompt alike.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from itertools import zip_longest
from typing import Any, Final

import msgspec
from aiohttp import web

from providers.azure.mock_errors import body_of, fault_error
from providers.mock.app import MockShared, Pacer, StreamCounter, interrupt
from providers.mock.app import stamp as stamp_now
from providers.mock.faults import Fault, FilterFault, LayoutFault, StreamErrorFault
from providers.openai.mock_answers import Answer, Choice
from providers.openai.mock_request import ChatParams
from providers.openai.mock_wire import completion_body, completion_id, fingerprint, usage_body

__all__ = [
    "ANSWER_BLOCKED",
    "CHOICE_SAFE",
    "PROMPT_BLOCKED",
    "PROMPT_SAFE",
    "completion",
    "dumps",
    "stream_answer",
]

_encode: Final = msgspec.json.Encoder().encode
_SSE_HEADERS: Final = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
}
_DONE: Final = b"data: [DONE]\n\n"
_OPERATION: Final = "ChatCompletions_Create"


def _severity(level: str) -> dict[str, Any]:
    return {"filtered": level in ("medium", "high"), "severity": level}


_UNDETECTED: Final = {"filtered": False, "detected": False}
_HARMS: Final = ("hate", "self_harm", "sexual", "violence")
PROMPT_SAFE: Final = {
    "hate": _severity("safe"),
    "jailbreak": _UNDETECTED,
    "self_harm": _severity("safe"),
    "sexual": _severity("safe"),
    "violence": _severity("safe"),
}
CHOICE_SAFE: Final = {
    "hate": _severity("safe"),
    "protected_material_code": _UNDETECTED,
    "protected_material_text": _UNDETECTED,
    "self_harm": _severity("safe"),
    "sexual": _severity("safe"),
    "violence": _severity("safe"),
}
# What the mock's filter faults report: a blocked prompt, a stopped answer.
PROMPT_BLOCKED: Final = {**PROMPT_SAFE, "hate": _severity("medium"), "violence": _severity("high")}
ANSWER_BLOCKED: Final = {**CHOICE_SAFE, "violence": _severity("high")}
# Streamed content chunks carry the harm categories only, as in the recording.
_CHUNK_SAFE: Final = _encode({name: _severity("safe") for name in _HARMS})


def dumps(payload: Mapping[str, Any]) -> bytes:
    """A whole body as Azure writes it: compact, keys in alphabetical order."""
    return json.dumps(payload, separators=(",", ":"), ensure_ascii=False, sort_keys=True).encode()


def completion(
    params: ChatParams, answer: Answer, stamp: bool, fault: Fault | None
) -> dict[str, Any]:
    """A `chat.completion` body with Azure's filter verdicts."""
    body = completion_body(params, answer, stamp)
    body.pop("service_tier", None)
    blocked = isinstance(fault, FilterFault)
    for choice, made in zip(body["choices"], answer.choices, strict=True):
        if blocked:
            choice["content_filter_results"] = ANSWER_BLOCKED
        else:
            choice["content_filter_results"] = {} if made.tool_calls else CHOICE_SAFE
    body["prompt_filter_results"] = [{"prompt_index": 0, "content_filter_results": PROMPT_SAFE}]
    return body


# ---------------------------------------------------------------- streams


class _ChunkWriter:
    """`chat.completion.chunk` events for one stream, keys in Azure's order."""

    __slots__ = ("_content", "_tail")

    def __init__(self, params: ChatParams) -> None:
        usage = ',"usage":null' if params.include_usage else ""
        self._tail = (
            f'],"created":{int(time.time())},"id":"{completion_id()}",'
            f'"model":{_encode(params.model).decode()},"object":"chat.completion.chunk",'
            f'"system_fingerprint":"{fingerprint(params.model)}"{usage}}}\n\n'
        ).encode()
        self._content = [
            (
                b'data: {"choices":[{"content_filter_results":'
                + _CHUNK_SAFE
                + b',"delta":{"content":',
                f'}},"finish_reason":null,"index":{i},"logprobs":null}}'.encode(),
            )
            for i in range(params.n)
        ]

    def content(self, index: int, text: str) -> bytes:
        head, close = self._content[index]
        return head + _encode(text) + close + self._tail

    def delta(
        self,
        index: int,
        delta: Mapping[str, Any],
        finish: str | None = None,
        verdict: Mapping[str, Any] | None = None,
    ) -> bytes:
        choice = {
            "content_filter_results": verdict or {},
            "delta": delta,
            "finish_reason": finish,
            "index": index,
            "logprobs": None,
        }
        return b'data: {"choices":[' + _encode(choice) + self._tail

    def usage(self, usage: Mapping[str, Any]) -> bytes:
        # The usage chunk's tail has the usage itself where the others have null.
        tail = self._tail.replace(b'"usage":null', b'"usage":' + _encode(usage))
        return b'data: {"choices":[' + tail

    @staticmethod
    def prompt_verdict() -> bytes:
        """Azure's first chunk: the prompt's filter verdict and nothing else."""
        chunk = {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": PROMPT_SAFE}],
        }
        return b"data: " + dumps(chunk) + b"\n\n"

    @staticmethod
    def error(body: Mapping[str, Any]) -> bytes:
        return b"data: " + _encode(body) + b"\n\n"


# One streamed token of one choice: (choice index, text, other delta).
_Step = tuple[int, str | None, Mapping[str, Any] | None]


def _choice_steps(choice: Choice, interleave: bool) -> list[_Step]:
    if not choice.tool_calls:
        # An empty answer (a stop sequence at the very start) still opens its choice.
        return [(choice.index, piece, None) for piece in choice.pieces or [""]]
    per_call: list[list[_Step]] = []
    for number, call in enumerate(choice.tool_calls):
        header = {
            "index": number,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        steps: list[_Step] = [(choice.index, None, {"tool_calls": [header]})]
        steps += [
            (choice.index, None, {"tool_calls": [{"index": number, "function": {"arguments": f}}]})
            for f in call.fragments
        ]
        per_call.append(steps)
    if interleave:
        return [s for group in zip_longest(*per_call) for s in group if s is not None]
    return [s for steps in per_call for s in steps]


def _order(answer: Answer, fault: Fault | None) -> list[tuple[_Step, bool]]:
    """Every step in sending order (choices take turns), with whether it opens its choice."""
    interleave = isinstance(fault, LayoutFault) and fault.name == "interleave"
    plans = [_choice_steps(c, interleave) for c in answer.choices]
    longest = max((len(p) for p in plans), default=0)
    return [
        (plan[position], position == 0)
        for position in range(longest)
        for plan in plans
        if position < len(plan)
    ]


_ROLE: Final = {"content": "", "refusal": None, "role": "assistant"}


async def stream_answer(
    request: web.Request,
    state: MockShared,
    params: ChatParams,
    answer: Answer,
    fault: Fault | None,
    api_version: str,
) -> web.StreamResponse:
    """Stream `answer`; `api_version` is what in-stream errors quote."""
    resp = web.StreamResponse(headers=_SSE_HEADERS)
    await resp.prepare(request)
    writer = _ChunkWriter(params)
    blocked = isinstance(fault, FilterFault)
    with StreamCounter(state.stats):
        await resp.write(writer.prompt_verdict())
        if await _send_steps(request, resp, writer, state, answer, fault, api_version):
            for choice in answer.choices:
                verdict = ANSWER_BLOCKED if blocked else None
                await resp.write(writer.delta(choice.index, {}, choice.finish_reason, verdict))
            if params.include_usage:
                await resp.write(writer.usage(usage_body(answer)))
            await resp.write(_DONE)
    return resp


async def _send_steps(
    request: web.Request,
    resp: web.StreamResponse,
    writer: _ChunkWriter,
    state: MockShared,
    answer: Answer,
    fault: Fault | None,
    api_version: str,
) -> bool:
    """The choices' chunks; False when an in-stream error ended the stream instead."""
    config = state.config
    order = _order(answer, fault)
    total = len(order)
    pacer = Pacer(config.tokens_per_sec) if config.tokens_per_sec else None
    if config.ttft_ms:
        await asyncio.sleep(config.ttft_ms / 1000)
    faulty = fault is not None
    for sent, ((index, text, delta), first) in enumerate(order):
        if faulty and not await _before_token(
            request, resp, writer, state, fault, (sent, total), api_version
        ):
            return False
        if pacer is not None:
            await pacer.wait()
        if text is None:
            if first:  # a tool choice's first chunk carries the role beside the first header
                delta = {"content": None, "refusal": None, "role": "assistant", **(delta or {})}
            await resp.write(writer.delta(index, delta or {}))
            continue
        if first:
            await resp.write(writer.delta(index, _ROLE))
        await resp.write(writer.content(index, stamp_now() if config.stamp_tokens else text))
    return await _before_token(request, resp, writer, state, fault, (total, total), api_version)


async def _before_token(
    request: web.Request,
    resp: web.StreamResponse,
    writer: _ChunkWriter,
    state: MockShared,
    fault: Fault | None,
    progress: tuple[int, int],
    api_version: str,
) -> bool:
    """Apply the fault due once `progress` (sent, total) tokens are out; False when
    it was an in-stream error (then sent)."""
    sent, total = progress
    if isinstance(fault, StreamErrorFault) and sent == min(fault.after, total):
        error = fault_error(fault.error, _OPERATION, api_version, state.config.context_window)
        await resp.write(writer.error(body_of(error)))
        return False
    await interrupt(request, fault, sent, total)
    return True
