"""The mock's answers on the wire: `chat.completion` bodies and chunk streams.

Field for field what OpenAI sent in 2025 (see shared/reference/transcripts/openai):
`service_tier`, `system_fingerprint`, `logprobs: null` on every choice, a first
delta of `{"role","content","refusal":null}`, `usage: null` on every chunk when
usage was asked for and then a usage-only chunk with token details, and the
random `obfuscation` padding (unless `stream_options.include_obfuscation` is
false). With `n > 1` the choices' chunks take turns, one choice per chunk, as
OpenAI interleaves them. Parallel tool calls are streamed one after the other
(the `interleave` fault mixes their fragments, which is legal but rare).

Streams are hot paths (hundreds of concurrent 50 tok/s streams per process), so
each content chunk is a pre-built prefix and suffix around the token's JSON.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from itertools import zip_longest
from typing import Any, Final

import msgspec
from aiohttp import web

from providers.mock.app import MockShared, Pacer, StreamCounter, interrupt
from providers.mock.app import stamp as stamp_now
from providers.mock.faults import Fault, LayoutFault, StreamErrorFault
from providers.mock.text import embedding_bytes, embedding_floats
from providers.openai.mock_answers import Answer, Choice, ToolCall, random_id
from providers.openai.mock_errors import error_body, fault_error
from providers.openai.mock_request import ChatParams

__all__ = ["completion_body", "completion_id", "fingerprint", "stream_answer", "usage_body"]

# Compact JSON as bytes, the same bytes as `json.dumps(separators=(",", ":"),
# ensure_ascii=False).encode()` at a tenth of its cost: it runs once per token.
_encode: Final = msgspec.json.Encoder().encode
_DONE: Final = b"data: [DONE]\n\n"
_SSE_HEADERS: Final = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
}
# Padding values cycled through (random per process): the point of the field is
# only that chunk sizes stop revealing token lengths.
_PADDING: Final = tuple(random_id("", length) for length in range(2, 18))


def completion_id() -> str:
    return random_id("chatcmpl-", 29)


def fingerprint(model: str) -> str:
    """A stable `system_fingerprint` per model, like a backend configuration's."""
    return "fp_" + hashlib.blake2b(model.encode(), digest_size=5).hexdigest()


def usage_body(answer: Answer) -> dict[str, Any]:
    prompt, completion = answer.prompt_tokens, answer.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
        "prompt_tokens_details": {"cached_tokens": 0, "audio_tokens": 0},
        "completion_tokens_details": {
            "reasoning_tokens": answer.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


# ---------------------------------------------------------------- whole bodies


def _tool_call_body(call: ToolCall) -> dict[str, Any]:
    return {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


def _message(choice: Choice, stamp: bool) -> dict[str, Any]:
    if choice.tool_calls:
        return {
            "role": "assistant",
            "content": None,
            "tool_calls": [_tool_call_body(c) for c in choice.tool_calls],
            "refusal": None,
            "annotations": [],
        }
    pieces = [stamp_now() for _ in choice.pieces] if stamp else choice.pieces
    return {"role": "assistant", "content": "".join(pieces), "refusal": None, "annotations": []}


def completion_body(params: ChatParams, answer: Answer, stamp: bool) -> dict[str, Any]:
    return {
        "id": completion_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": params.model,
        "choices": [
            {
                "index": c.index,
                "message": _message(c, stamp),
                "logprobs": None,
                "finish_reason": c.finish_reason,
            }
            for c in answer.choices
        ],
        "usage": usage_body(answer),
        "service_tier": params.service_tier,
        "system_fingerprint": fingerprint(params.model),
    }


# ---------------------------------------------------------------- streams


class _ChunkWriter:
    """Builds `chat.completion.chunk` events for one stream."""

    __slots__ = ("_content", "_count", "_head", "_padding", "_tails")

    def __init__(self, params: ChatParams) -> None:
        self._head = (
            f'data: {{"id":"{completion_id()}","object":"chat.completion.chunk",'
            f'"created":{int(time.time())},"model":{_encode(params.model).decode()},'
            f'"service_tier":"{params.service_tier}",'
            f'"system_fingerprint":"{fingerprint(params.model)}","choices":'
        ).encode()
        usage = b',"usage":null' if params.include_usage else b""
        self._padding = params.include_obfuscation
        self._tails = (
            [usage + f',"obfuscation":"{p}"}}\n\n'.encode() for p in _PADDING]
            if self._padding
            else [usage + b"}\n\n"]
        )
        self._content = [
            self._head + f'[{{"index":{i},"delta":{{"content":'.encode() for i in range(params.n)
        ]
        self._count = 0

    def _tail(self) -> bytes:
        self._count += 1
        return self._tails[self._count % len(self._tails)]

    def content(self, index: int, text: str) -> bytes:
        return (
            self._content[index]
            + _encode(text)
            + b'},"logprobs":null,"finish_reason":null}]'
            + self._tail()
        )

    def delta(self, index: int, delta: Mapping[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": index, "delta": delta, "logprobs": None, "finish_reason": finish}
        return self._head + _encode([choice]) + self._tail()

    def usage(self, usage: Mapping[str, Any]) -> bytes:
        padding = f',"obfuscation":"{_PADDING[0]}"' if self._padding else ""
        return self._head + b'[],"usage":' + _encode(usage) + padding.encode() + b"}\n\n"

    @staticmethod
    def error(body: Mapping[str, Any]) -> bytes:
        return b"data: " + _encode(body) + b"\n\n"


@dataclass(frozen=True, slots=True)
class _Step:
    """One chunk of one choice: a content token (`text`) or another delta."""

    choice: int
    text: str | None = None
    delta: Mapping[str, Any] | None = None


def _text_steps(choice: Choice) -> list[_Step]:
    # An empty answer (a stop sequence at the very start) still opens its choice.
    return [_Step(choice.index, text=piece) for piece in choice.pieces or [""]]


def _tool_steps(choice: Choice, interleave: bool) -> list[_Step]:
    per_call: list[list[_Step]] = []
    for index, call in enumerate(choice.tool_calls):
        header = {
            "index": index,
            "id": call.id,
            "type": "function",
            "function": {"name": call.name, "arguments": ""},
        }
        steps = [_Step(choice.index, delta={"tool_calls": [header]})]
        steps += [
            _Step(
                choice.index,
                delta={"tool_calls": [{"index": index, "function": {"arguments": fragment}}]},
            )
            for fragment in call.fragments
        ]
        per_call.append(steps)
    if interleave:
        return [s for group in zip_longest(*per_call) for s in group if s is not None]
    return [s for steps in per_call for s in steps]


_ROLE: Final = {"role": "assistant", "content": "", "refusal": None}


def _first(writer: _ChunkWriter, step: _Step) -> bytes:
    """A tool choice's first chunk carries the role beside the first call's header."""
    delta = {"role": "assistant", "content": None, **(step.delta or {}), "refusal": None}
    return writer.delta(step.choice, delta)


def _plan(answer: Answer, fault: Fault | None) -> list[list[_Step]]:
    interleave = isinstance(fault, LayoutFault) and fault.name == "interleave"
    return [_tool_steps(c, interleave) if c.tool_calls else _text_steps(c) for c in answer.choices]


def _rounds(plans: Sequence[list[_Step]]) -> list[tuple[_Step, bool]]:
    """Every step in sending order, each with whether it is its choice's first."""
    order: list[tuple[_Step, bool]] = []
    longest = max((len(p) for p in plans), default=0)
    for position in range(longest):
        order += [(plan[position], position == 0) for plan in plans if position < len(plan)]
    return order


async def stream_answer(
    request: web.Request,
    state: MockShared,
    params: ChatParams,
    answer: Answer,
    fault: Fault | None,
) -> web.StreamResponse:
    resp = web.StreamResponse(headers=_SSE_HEADERS)
    await resp.prepare(request)
    writer = _ChunkWriter(params)
    with StreamCounter(state.stats):
        if await _send_steps(request, resp, writer, state, answer, fault):
            for choice in answer.choices:
                await resp.write(writer.delta(choice.index, {}, choice.finish_reason))
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
) -> bool:
    """The choices' chunks; False when an in-stream error ended the stream instead."""
    config = state.config
    order = _rounds(_plan(answer, fault))
    total = len(order)
    stamp = config.stamp_tokens
    pacer = Pacer(config.tokens_per_sec) if config.tokens_per_sec else None
    if config.ttft_ms:
        await asyncio.sleep(config.ttft_ms / 1000)
    # Once per token: the fault and pacing checks are skipped when there are none.
    faulty = fault is not None
    for sent, (step, first) in enumerate(order):
        if faulty and not await _before_token(request, resp, writer, state, fault, sent, total):
            return False
        if pacer is not None:
            await pacer.wait()
        if step.text is None:
            await resp.write(
                _first(writer, step) if first else writer.delta(step.choice, step.delta or {})
            )
            continue
        if first:
            await resp.write(writer.delta(step.choice, _ROLE))
        await resp.write(writer.content(step.choice, stamp_now() if stamp else step.text))
    return await _before_token(request, resp, writer, state, fault, total, total)


async def _before_token(
    request: web.Request,
    resp: web.StreamResponse,
    writer: _ChunkWriter,
    state: MockShared,
    fault: Fault | None,
    sent: int,
    total: int,
) -> bool:
    """Apply this point's fault; False when it was an in-stream error (then sent)."""
    if isinstance(fault, StreamErrorFault) and sent == min(fault.after, total):
        error = fault_error(fault.error, None, state.config.context_window)
        await resp.write(writer.error(error_body(error)))
        return False
    await interrupt(request, fault, sent, total)
    return True


def embeddings_body(
    inputs: Sequence[tuple[str, int]], dims: int, encoding: str, model: str
) -> dict[str, Any]:
    """An embeddings answer: one vector per input (text, tokens), floats or base64."""
    data = [
        {
            "object": "embedding",
            "index": index,
            "embedding": (
                base64.b64encode(embedding_bytes(text, dims)).decode()
                if encoding == "base64"
                else embedding_floats(text, dims)
            ),
        }
        for index, (text, _) in enumerate(inputs)
    ]
    tokens = sum(count for _, count in inputs)
    usage = {"prompt_tokens": tokens, "total_tokens": tokens}
    return {"object": "list", "data": data, "model": model, "usage": usage}
