"""The mock's `/api/chat` answers on the wire: whole bodies and NDJSON streams.

As Ollama writes them: every object has `model` and `created_at`; a streamed
answer is one object per token (`message.content`), reasoning first when `think`
was asked (`message.thinking`), each tool call whole in an object of its own
(arguments as an object, `function.index`, no id, as servers before ids sent
them), then a final object with `done: true`, `done_reason` (`stop` after tool
calls too, `length` at `num_predict`) and the counts and durations (ns). An
in-stream error is a line `{"error": "..."}` and the end of the body. No blank
lines: the official SDK parses every line it reads.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import msgspec
from aiohttp import web

from providers.mock.app import MockShared, Pacer, StreamCounter, interrupt
from providers.mock.app import stamp as stamp_now
from providers.mock.faults import Fault, StreamErrorFault
from providers.mock.pieces import split_pieces
from providers.ollama.mock_errors import error_line, fault_error
from providers.openai.mock_answers import Answer, Choice

__all__ = ["NDJSON_HEADERS", "Reply", "chat_body", "stream_reply"]

_encode: Final = msgspec.json.Encoder().encode
NDJSON_HEADERS: Final = {"Content-Type": "application/x-ndjson"}
_THINKING: Final = tuple(
    split_pieces("The user asks for an answer; I will give a short, clear one.")
)
# Plausible durations (ns) for the final object: Ollama reports them, nobody checks them.
_LOAD_NS: Final = 1_500_000
_PROMPT_NS_PER_TOKEN: Final = 400_000
_EVAL_NS_PER_TOKEN: Final = 20_000_000


@dataclass(frozen=True, slots=True)
class Reply:
    """One answer to send: the composed choice, its reasoning, the prompt's size."""

    model: str
    choice: Choice
    thinking: tuple[str, ...]
    prompt_tokens: int

    @classmethod
    def of(cls, model: str, answer: Answer, think: bool) -> Reply:
        return cls(model, answer.choices[0], _THINKING if think else (), answer.prompt_tokens)

    @property
    def eval_count(self) -> int:
        """Generated tokens, reasoning included, as Ollama counts them."""
        return self.choice.output_tokens + len(self.thinking)

    @property
    def done_reason(self) -> str:
        reason = self.choice.finish_reason
        return "stop" if reason == "tool_calls" else reason


def created_at() -> str:
    return datetime.now(UTC).isoformat().replace("+00:00", "Z")


def _tool_call(index: int, name: str, arguments: str) -> dict[str, Any]:
    return {"function": {"index": index, "name": name, "arguments": json.loads(arguments)}}


def _final(reply: Reply) -> dict[str, Any]:
    prompt_ns = reply.prompt_tokens * _PROMPT_NS_PER_TOKEN
    eval_ns = reply.eval_count * _EVAL_NS_PER_TOKEN
    return {
        "done": True,
        "done_reason": reply.done_reason,
        "total_duration": _LOAD_NS + prompt_ns + eval_ns,
        "load_duration": _LOAD_NS,
        "prompt_eval_count": reply.prompt_tokens,
        "prompt_eval_duration": prompt_ns,
        "eval_count": reply.eval_count,
        "eval_duration": eval_ns,
    }


def chat_body(reply: Reply, stamp: bool) -> dict[str, Any]:
    """A whole (`"stream": false`) answer."""
    choice = reply.choice
    pieces = [stamp_now() for _ in choice.pieces] if stamp else choice.pieces
    message: dict[str, Any] = {"role": "assistant", "content": "".join(pieces)}
    if reply.thinking:
        message["thinking"] = "".join(reply.thinking)
    if choice.tool_calls:
        message["tool_calls"] = [
            _tool_call(i, c.name, c.arguments) for i, c in enumerate(choice.tool_calls)
        ]
    return {"model": reply.model, "created_at": created_at(), "message": message, **_final(reply)}


class _Lines:
    """Builds the stream's objects, one line each."""

    __slots__ = ("_model",)

    def __init__(self, model: str) -> None:
        self._model = _encode(model).decode()

    def _head(self) -> str:
        return f'{{"model":{self._model},"created_at":"{created_at()}",'

    def message(self, fields: Mapping[str, Any]) -> bytes:
        body = _encode({"role": "assistant", **fields}).decode()
        return f'{self._head()}"message":{body},"done":false}}\n'.encode()

    def content(self, text: str) -> bytes:
        return (
            f'{self._head()}"message":{{"role":"assistant","content":'
            f'{_encode(text).decode()}}},"done":false}}\n'
        ).encode()

    def final(self, reply: Reply) -> bytes:
        last = _encode(_final(reply)).decode()[1:]  # the fields, without their opening brace
        return f'{self._head()}"message":{{"role":"assistant","content":""}},{last}\n'.encode()


async def stream_reply(
    request: web.Request, state: MockShared, reply: Reply, fault: Fault | None
) -> web.StreamResponse:
    resp = web.StreamResponse(headers=NDJSON_HEADERS)
    await resp.prepare(request)
    lines = _Lines(reply.model)
    with StreamCounter(state.stats):
        if await _send(request, resp, lines, state, reply, fault):
            await resp.write(lines.final(reply))
    return resp


async def _send(
    request: web.Request,
    resp: web.StreamResponse,
    lines: _Lines,
    state: MockShared,
    reply: Reply,
    fault: Fault | None,
) -> bool:
    """Reasoning, then the content tokens or tool calls; False when an in-stream
    error ended the stream instead (it is then written)."""
    config = state.config
    pacer = Pacer(config.tokens_per_sec) if config.tokens_per_sec else None
    if config.ttft_ms:
        await asyncio.sleep(config.ttft_ms / 1000)
    for piece in reply.thinking:
        if pacer is not None:
            await pacer.wait()
        await resp.write(lines.message({"content": "", "thinking": piece}))
    choice = reply.choice
    steps: list[bytes] = [
        lines.message({"content": "", "tool_calls": [_tool_call(i, c.name, c.arguments)]})
        for i, c in enumerate(choice.tool_calls)
    ]
    texts = [] if steps else choice.pieces
    total = len(steps) or len(texts)
    for sent in range(total):
        if fault is not None and not await _before_token(request, resp, state, fault, sent, total):
            return False
        if pacer is not None:
            await pacer.wait()
        if steps:
            await resp.write(steps[sent])
        else:
            await resp.write(lines.content(stamp_now() if config.stamp_tokens else texts[sent]))
    return await _before_token(request, resp, state, fault, total, total)


async def _before_token(
    request: web.Request,
    resp: web.StreamResponse,
    state: MockShared,
    fault: Fault | None,
    sent: int,
    total: int,
) -> bool:
    if isinstance(fault, StreamErrorFault) and sent == min(fault.after, total):
        await resp.write(error_line(fault_error(fault.error, None)) + b"\n")
        return False
    await interrupt(request, fault, sent, total)
    return True
