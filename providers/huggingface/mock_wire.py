"""The mock router's chat answers on the wire, as TGI (HF Inference's server) writes them.

OpenAI's shape with TGI's habits, which the `huggingface_hub` types describe:
`object`, `id`, `created`, `model`, a `system_fingerprint` naming the TGI version,
usage without token details, `logprobs: null`; every stream delta repeats
`"role": "assistant"`, and every tool-call delta carries `index`, `id` (empty after
the first), `type` and `function.arguments`. The finishing chunk of each choice has
an empty content delta, and the usage (when `stream_options.include_usage` asked for
it) rides on the last one, as TGI sends it, before `data: [DONE]`.

What an answer says is the OpenAI mock's (`providers.openai.mock_answers`): the
same deterministic text, tool calls and finish reasons.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from itertools import zip_longest
from typing import Any, Final

import msgspec
from aiohttp import web

from providers.huggingface.mock_errors import stream_error_payload
from providers.mock.app import MockShared, Pacer, StreamCounter, interrupt
from providers.mock.app import stamp as stamp_now
from providers.mock.faults import Fault, LayoutFault, StreamErrorFault
from providers.openai.mock_answers import Answer, Choice
from providers.openai.mock_request import ChatParams

__all__ = ["FINGERPRINT", "completion_body", "stream_answer", "usage_body"]

FINGERPRINT: Final = "3.3.6-sha-mock"
_encode: Final = msgspec.json.Encoder().encode
_DONE: Final = b"data: [DONE]\n\n"
_SSE_HEADERS: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}


def _completion_id() -> str:
    return "chatcmpl-" + os.urandom(12).hex()


def usage_body(answer: Answer) -> dict[str, int]:
    prompt, completion = answer.prompt_tokens, answer.completion_tokens
    return {
        "prompt_tokens": prompt,
        "completion_tokens": completion,
        "total_tokens": prompt + completion,
    }


def _message(choice: Choice, stamp: bool) -> dict[str, Any]:
    if choice.tool_calls:
        calls = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in choice.tool_calls
        ]
        return {"role": "assistant", "tool_calls": calls}
    pieces = [stamp_now() for _ in choice.pieces] if stamp else choice.pieces
    return {"role": "assistant", "content": "".join(pieces)}


def completion_body(model: str, answer: Answer, stamp: bool) -> dict[str, Any]:
    return {
        "object": "chat.completion",
        "id": _completion_id(),
        "created": int(time.time()),
        "model": model,
        "system_fingerprint": FINGERPRINT,
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
    }


class _Chunks:
    """`chat.completion.chunk` events of one stream."""

    __slots__ = ("_head",)

    def __init__(self, model: str) -> None:
        self._head = {
            "object": "chat.completion.chunk",
            "id": _completion_id(),
            "created": int(time.time()),
            "model": model,
            "system_fingerprint": FINGERPRINT,
        }

    def delta(
        self,
        index: int,
        delta: Mapping[str, Any],
        finish: str | None = None,
        usage: Mapping[str, int] | None = None,
    ) -> bytes:
        choice = {
            "index": index,
            "delta": {"role": "assistant", **delta},
            "logprobs": None,
            "finish_reason": finish,
        }
        return b"data: " + _encode({**self._head, "choices": [choice], "usage": usage}) + b"\n\n"


Step = tuple[int, dict[str, Any]]  # (choice index, delta); a text delta is one token


def _steps(answer: Answer, fault: Fault | None) -> list[Step]:
    interleave = isinstance(fault, LayoutFault) and fault.name == "interleave"
    steps: list[Step] = []
    for choice in answer.choices:
        if not choice.tool_calls:
            steps += [(choice.index, {"content": piece}) for piece in choice.pieces or [""]]
            continue
        per_call = [
            [
                (choice.index, _tool_delta(i, c.id, c.name, "")),
                *((choice.index, _tool_delta(i, "", None, f)) for f in c.fragments),
            ]
            for i, c in enumerate(choice.tool_calls)
        ]
        if interleave:
            steps += [s for group in zip_longest(*per_call) for s in group if s is not None]
        else:
            steps += [s for call in per_call for s in call]
    return steps


def _tool_delta(index: int, call_id: str, name: str | None, arguments: str) -> dict[str, Any]:
    function = {"name": name, "arguments": arguments}
    return {
        "tool_calls": [{"index": index, "id": call_id, "type": "function", "function": function}]
    }


async def stream_answer(
    request: web.Request,
    state: MockShared,
    params: ChatParams,
    answer: Answer,
    fault: Fault | None,
) -> web.StreamResponse:
    resp = web.StreamResponse(headers=_SSE_HEADERS)
    await resp.prepare(request)
    chunks = _Chunks(params.model)
    with StreamCounter(state.stats):
        if not await _send_steps(request, resp, chunks, state, params, answer, fault):
            return resp
        last = len(answer.choices) - 1
        for position, choice in enumerate(answer.choices):
            usage = usage_body(answer) if params.include_usage and position == last else None
            await resp.write(
                chunks.delta(choice.index, {"content": ""}, choice.finish_reason, usage)
            )
        await resp.write(_DONE)
    return resp


async def _send_steps(
    request: web.Request,
    resp: web.StreamResponse,
    chunks: _Chunks,
    state: MockShared,
    params: ChatParams,
    answer: Answer,
    fault: Fault | None,
) -> bool:
    """Every token's chunk; False when an in-stream error ended the stream instead."""
    config = state.config
    steps = _steps(answer, fault)
    total = len(steps)
    pacer = Pacer(config.tokens_per_sec) if config.tokens_per_sec else None
    if config.ttft_ms:
        await asyncio.sleep(config.ttft_ms / 1000)
    for sent, (index, delta) in enumerate(steps):
        if fault is not None and not await _before(
            request, resp, state, params, fault, sent, total
        ):
            return False
        if pacer is not None:
            await pacer.wait()
        if config.stamp_tokens and "content" in delta:
            delta = {"content": stamp_now()}
        await resp.write(chunks.delta(index, delta))
    return await _before(request, resp, state, params, fault, total, total)


async def _before(
    request: web.Request,
    resp: web.StreamResponse,
    state: MockShared,
    params: ChatParams,
    fault: Fault | None,
    sent: int,
    total: int,
) -> bool:
    """Apply this point's fault; False when it was an in-stream error (then sent)."""
    if isinstance(fault, StreamErrorFault) and sent == min(fault.after, total):
        payload = stream_error_payload(fault.error, params.model, state.config.context_window)
        await resp.write(b"data: " + _encode(payload) + b"\n\n")
        return False
    await interrupt(request, fault, sent, total)
    return True
