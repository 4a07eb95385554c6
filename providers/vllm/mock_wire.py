"""The vLLM mock's answers on the wire: completion bodies, chunk streams, rankings.

What vLLM's OpenAI-compatible server writes (see shared/reference/transcripts/
openai/vllm-stream-tool-call): `chatcmpl-<32 hex>` ids, `logprobs: null` on every
choice, a first delta `{"role": "assistant", "content": ""}`, tool calls with
`chatcmpl-tool-<32 hex>` ids whose first delta carries the name and no
`arguments` at all, then the argument fragments; the finishing chunk has
`delta: {"content": ""}` beside `finish_reason` and vLLM's own `stop_reason`; the
usage chunk (`choices: []`) only when `stream_options.include_usage` is set; an
in-stream error is a `data: {"error": {...}}` event followed by `[DONE]`. Whole
answers carry `reasoning_content`, an empty `tool_calls` list and usage with
`prompt_tokens_details: null`.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from itertools import zip_longest
from typing import Any, Final

import msgspec
from aiohttp import web

from providers.mock.app import MockShared, Pacer, StreamCounter, interrupt
from providers.mock.app import stamp as stamp_now
from providers.mock.faults import Fault, LayoutFault, StreamErrorFault
from providers.mock.rerank import rank, token_count
from providers.openai.mock_answers import Answer, Choice, ToolCall
from providers.openai.mock_request import ChatParams
from providers.vllm.mock_errors import error_body, fault_error

__all__ = ["completion_body", "rerank_body", "stream_answer", "tool_call_id", "usage_body"]

_encode: Final = msgspec.json.Encoder().encode
_DONE: Final = b"data: [DONE]\n\n"
_SSE_HEADERS: Final = {"Content-Type": "text/event-stream; charset=utf-8"}


def _hex_id(prefix: str) -> str:
    return prefix + os.urandom(16).hex()


def tool_call_id() -> str:
    return _hex_id("chatcmpl-tool-")


def usage_body(answer: Answer) -> dict[str, Any]:
    prompt, completion = answer.prompt_tokens, answer.completion_tokens
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
    }


# ---------------------------------------------------------------- whole bodies


def _message(choice: Choice, ids: Sequence[str], stamp: bool) -> dict[str, Any]:
    calls = [
        {"id": ids[i], "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
        for i, c in enumerate(choice.tool_calls)
    ]
    pieces = [stamp_now() for _ in choice.pieces] if stamp else choice.pieces
    return {
        "role": "assistant",
        "reasoning_content": None,
        "content": None if calls else "".join(pieces),
        "tool_calls": calls,
    }


def completion_body(params: ChatParams, answer: Answer, stamp: bool) -> dict[str, Any]:
    return {
        "id": _hex_id("chatcmpl-"),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": params.model,
        "choices": [
            {
                "index": c.index,
                "message": _message(c, [tool_call_id() for _ in c.tool_calls], stamp),
                "logprobs": None,
                "finish_reason": c.finish_reason,
                "stop_reason": None,
            }
            for c in answer.choices
        ],
        "usage": {**usage_body(answer), "prompt_tokens_details": None},
        "prompt_logprobs": None,
        "kv_transfer_params": None,
    }


def rerank_body(model: str, query: str, documents: list[str], top_n: int | None) -> dict[str, Any]:
    ranked = rank(query, documents)
    if top_n:
        ranked = ranked[:top_n]
    tokens = sum(token_count(query) + token_count(doc) for doc in documents)
    return {
        "id": _hex_id("rerank-"),
        "model": model,
        "usage": {"total_tokens": tokens},
        "results": [
            {"index": i, "document": {"text": documents[i]}, "relevance_score": score}
            for i, score in ranked
        ],
    }


# ---------------------------------------------------------------- streams


class _Chunks:
    """`chat.completion.chunk` events of one stream."""

    __slots__ = ("_head",)

    def __init__(self, params: ChatParams) -> None:
        self._head = (
            f'data: {{"id":"{_hex_id("chatcmpl-")}","object":"chat.completion.chunk",'
            f'"created":{int(time.time())},"model":{_encode(params.model).decode()},"choices":'
        ).encode()

    def delta(self, index: int, delta: Mapping[str, Any], finish: str | None = None) -> bytes:
        choice: dict[str, Any] = {
            "index": index,
            "delta": delta,
            "logprobs": None,
            "finish_reason": finish,
        }
        if finish is not None:
            choice["stop_reason"] = None
        return self._head + _encode([choice]) + b"}\n\n"

    def usage(self, usage: Mapping[str, Any]) -> bytes:
        return self._head + b'[],"usage":' + _encode(usage) + b"}\n\n"


def _tool_steps(calls: Sequence[ToolCall], interleave: bool) -> list[dict[str, Any]]:
    per_call: list[list[dict[str, Any]]] = []
    for index, call in enumerate(calls):
        header = {
            "id": tool_call_id(),
            "type": "function",
            "index": index,
            "function": {"name": call.name},
        }
        steps = [{"tool_calls": [header]}]
        steps += [
            {"tool_calls": [{"index": index, "function": {"arguments": fragment}}]}
            for fragment in call.fragments
        ]
        per_call.append(steps)
    if interleave:
        return [s for group in zip_longest(*per_call) for s in group if s is not None]
    return [s for steps in per_call for s in steps]


def _plan(choice: Choice, interleave: bool) -> list[dict[str, Any]]:
    if choice.tool_calls:
        return _tool_steps(choice.tool_calls, interleave)
    return [{"content": piece} for piece in choice.pieces]


async def stream_answer(
    request: web.Request, state: MockShared, params: ChatParams, answer: Answer, fault: Fault | None
) -> web.StreamResponse:
    resp = web.StreamResponse(headers=_SSE_HEADERS)
    await resp.prepare(request)
    chunks = _Chunks(params)
    with StreamCounter(state.stats):
        if await _send(request, resp, chunks, state, answer, fault):
            for choice in answer.choices:
                await resp.write(chunks.delta(choice.index, {"content": ""}, choice.finish_reason))
            if params.include_usage:
                await resp.write(chunks.usage(usage_body(answer)))
        await resp.write(_DONE)
    return resp


async def _send(
    request: web.Request,
    resp: web.StreamResponse,
    chunks: _Chunks,
    state: MockShared,
    answer: Answer,
    fault: Fault | None,
) -> bool:
    """Every choice's deltas, choices taking turns; False when an in-stream error
    ended the answer instead (it is then written)."""
    config = state.config
    interleave = isinstance(fault, LayoutFault) and fault.name == "interleave"
    plans = [_plan(c, interleave) for c in answer.choices]
    stamp = config.stamp_tokens
    pacer = Pacer(config.tokens_per_sec) if config.tokens_per_sec else None
    if config.ttft_ms:
        await asyncio.sleep(config.ttft_ms / 1000)
    for choice in answer.choices:
        await resp.write(chunks.delta(choice.index, {"role": "assistant", "content": ""}))
    order = [
        (index, step)
        for group in zip_longest(*plans)
        for index, step in enumerate(group)
        if step is not None
    ]
    total = len(order)
    for sent, (index, step) in enumerate(order):
        if fault is not None and not await _before(request, resp, state, fault, sent, total):
            return False
        if pacer is not None:
            await pacer.wait()
        if stamp and "content" in step:
            step = {"content": stamp_now()}  # taken as it is written
        await resp.write(chunks.delta(index, step))
    return await _before(request, resp, state, fault, total, total)


async def _before(
    request: web.Request,
    resp: web.StreamResponse,
    state: MockShared,
    fault: Fault | None,
    sent: int,
    total: int,
) -> bool:
    if isinstance(fault, StreamErrorFault) and sent == min(fault.after, total):
        error = fault_error(fault.error, None, state.config.context_window)
        await resp.write(b"data: " + _encode(error_body(error)) + b"\n\n")
        return False
    await interrupt(request, fault, sent, total)
    return True
