"""The mock's answers on the wire: completions, chunk streams, embeddings, model cards.

As Mistral sends them: ids of 32 hex digits, `tool_calls: null` beside text,
tool calls with their `index`, and in streams a first chunk carrying the role,
one chunk per token, and a last chunk with an empty delta (or, for tool calls,
every call whole), the finish reason and the usage, unasked; then `[DONE]`.
Choices of `n > 1` take turns, one chunk each. An in-stream error is Mistral's
error object written as an event, and the stream ends without `[DONE]`.

Streams are hot paths, so each token's chunk is a pre-built prefix and suffix
around the token's JSON.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping, Sequence
from typing import Any, Final

import msgspec
from aiohttp import web

from providers.mistral.mock_answers import Answer, Choice
from providers.mistral.mock_errors import fault_error, stream_error_event
from providers.mistral.mock_request import ChatParams
from providers.mock.app import MockShared, Pacer, StreamCounter, interrupt
from providers.mock.app import stamp as stamp_now
from providers.mock.faults import Fault, StreamErrorFault
from providers.mock.text import embedding_floats

__all__ = ["completion_body", "embeddings_body", "model_card", "stream_answer"]

_encode: Final = msgspec.json.Encoder().encode
_DONE: Final = b"data: [DONE]\n\n"
_SSE_HEADERS: Final = {
    "Content-Type": "text/event-stream; charset=utf-8",
    "Cache-Control": "no-cache",
}
_MODEL_CREATED: Final = 1_700_000_000


def _id() -> str:
    return os.urandom(16).hex()


def _tool_calls(choice: Choice) -> list[dict[str, Any]]:
    return [
        {
            "id": call.id,
            "function": {"name": call.name, "arguments": call.arguments},
            "index": index,
        }
        for index, call in enumerate(choice.tool_calls)
    ]


def _message(choice: Choice, stamp: bool) -> dict[str, Any]:
    if choice.tool_calls:
        return {"role": "assistant", "tool_calls": _tool_calls(choice), "content": ""}
    pieces = [stamp_now() for _ in choice.pieces] if stamp else choice.pieces
    return {"role": "assistant", "tool_calls": None, "content": "".join(pieces)}


def completion_body(params: ChatParams, answer: Answer, stamp: bool) -> dict[str, Any]:
    return {
        "id": _id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": params.model,
        "choices": [
            {"index": c.index, "message": _message(c, stamp), "finish_reason": c.finish_reason}
            for c in answer.choices
        ],
        "usage": answer.usage(),
    }


class _ChunkWriter:
    """Builds `chat.completion.chunk` events for one stream."""

    __slots__ = ("_content", "_head")

    def __init__(self, params: ChatParams) -> None:
        self._head = (
            f'data: {{"id":"{_id()}","object":"chat.completion.chunk",'
            f'"created":{int(time.time())},"model":{_encode(params.model).decode()},"choices":'
        ).encode()
        self._content = [
            self._head + f'[{{"index":{i},"delta":{{"content":'.encode() for i in range(params.n)
        ]

    def content(self, index: int, text: str) -> bytes:
        return self._content[index] + _encode(text) + b'},"finish_reason":null}]}\n\n'

    def delta(
        self,
        index: int,
        delta: Mapping[str, Any],
        finish: str | None = None,
        usage: Mapping[str, Any] | None = None,
    ) -> bytes:
        choice = {"index": index, "delta": delta, "finish_reason": finish}
        tail = b"" if usage is None else b',"usage":' + _encode(usage)
        return self._head + _encode([choice]) + tail + b"}\n\n"


def _steps(choice: Choice) -> list[str]:
    """A choice's tokens, one chunk each (none for a tool choice: its calls all come
    whole in its last chunk)."""
    if choice.tool_calls:
        return []
    return list(choice.pieces)


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
        if await _send_tokens(request, resp, writer, state, answer, fault):
            last = len(answer.choices) - 1
            for position, choice in enumerate(answer.choices):
                delta: dict[str, Any] = {"content": ""}
                if choice.tool_calls:
                    delta["tool_calls"] = _tool_calls(choice)
                usage = answer.usage() if position == last else None
                await resp.write(writer.delta(choice.index, delta, choice.finish_reason, usage))
            await resp.write(_DONE)
    return resp


async def _send_tokens(
    request: web.Request,
    resp: web.StreamResponse,
    writer: _ChunkWriter,
    state: MockShared,
    answer: Answer,
    fault: Fault | None,
) -> bool:
    """The role chunks and every token; False when an in-stream error ended the stream."""
    config = state.config
    plans = [_steps(c) for c in answer.choices]
    order = [
        (choice.index, plan[position])
        for position in range(max((len(p) for p in plans), default=0))
        for choice, plan in zip(answer.choices, plans, strict=True)
        if position < len(plan)
    ]
    total = len(order)
    pacer = Pacer(config.tokens_per_sec) if config.tokens_per_sec else None
    if config.ttft_ms:
        await asyncio.sleep(config.ttft_ms / 1000)
    for choice in answer.choices:
        await resp.write(writer.delta(choice.index, {"role": "assistant", "content": ""}))
    faulty = fault is not None
    stamp = config.stamp_tokens
    for sent, (index, text) in enumerate(order):
        if faulty and not await _before_token(request, resp, state, fault, sent, total):
            return False
        if pacer is not None:
            await pacer.wait()
        await resp.write(writer.content(index, stamp_now() if stamp else text))
    return await _before_token(request, resp, state, fault, total, total)


async def _before_token(
    request: web.Request,
    resp: web.StreamResponse,
    state: MockShared,
    fault: Fault | None,
    sent: int,
    total: int,
) -> bool:
    """Apply this point's fault; False when it was an in-stream error (then sent)."""
    if isinstance(fault, StreamErrorFault) and sent == min(fault.after, total):
        error = fault_error(fault.error, None, state.config.context_window)
        await resp.write(stream_error_event(error))
        return False
    await interrupt(request, fault, sent, total)
    return True


def embeddings_body(inputs: Sequence[str], tokens: int, dims: int, model: str) -> dict[str, Any]:
    return {
        "id": _id(),
        "object": "list",
        "data": [
            {"object": "embedding", "embedding": embedding_floats(text, dims), "index": index}
            for index, text in enumerate(inputs)
        ],
        "model": model,
        "usage": {"prompt_tokens": tokens, "total_tokens": tokens, "completion_tokens": 0},
    }


def model_card(model: str, *, embeddings: bool) -> dict[str, Any]:
    chat = not embeddings
    return {
        "id": model,
        "object": "model",
        "created": _MODEL_CREATED,
        "owned_by": "mistralai",
        "capabilities": {
            "completion_chat": chat,
            "function_calling": chat,
            "completion_fim": False,
            "fine_tuning": chat,
            "vision": False,
            "classification": False,
        },
        "name": model,
        "description": f"{model} (mock)",
        "max_context_length": 131072 if chat else 8192,
        "aliases": [],
        "deprecation": None,
        "default_model_temperature": 0.3 if chat else None,
        "type": "base",
    }
