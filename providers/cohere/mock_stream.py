"""A streamed Cohere v2 chat answer, event by event, in the order the API sends them.

Each event is an `event: <type>` line and a `data:` line whose JSON repeats the
type. Text: `message-start`, `content-start`, `content-delta`…, `content-end`,
`message-end` (finish reason and usage). Tool calls: `message-start`,
`tool-plan-delta`…, then per call `tool-call-start` (id, name, empty arguments),
`tool-call-delta`… (argument fragments), `tool-call-end`, and `message-end`.
Calls are sent one after the other, as Cohere does, so the `interleave` layout
is ignored. Stall and drop faults apply after N content deltas; a stream-error
fault ends the stream with a `message-end` saying `finish_reason: ERROR`, its
`delta.error` the sentence the same error has as an HTTP answer.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from providers.cohere.mock_answer import Answer, ToolCall, dumps, usage
from providers.cohere.mock_errors import stream_failure
from providers.mock.app import Pacer, interrupt, stamp
from providers.mock.config import MockConfig
from providers.mock.faults import Fault, StreamErrorFault

__all__ = ["StreamWriter"]

_TEXT_HEAD: Final = (
    b'event: content-delta\ndata: {"type":"content-delta","index":0,'
    b'"delta":{"message":{"content":{"text":'
)
_TEXT_TAIL: Final = b"}}}}\n\n"


def event(kind: str, payload: Mapping[str, Any]) -> bytes:
    return f"event: {kind}\ndata: {dumps({'type': kind, **payload})}\n\n".encode()


def _message_start(response_id: str) -> bytes:
    message = {
        "role": "assistant",
        "content": [],
        "tool_plan": "",
        "tool_calls": [],
        "citations": [],
    }
    return event("message-start", {"id": response_id, "delta": {"message": message}})


def _plan_delta(piece: str) -> bytes:
    return event("tool-plan-delta", {"delta": {"message": {"tool_plan": piece}}})


def _call_frames(index: int, call: ToolCall) -> list[bytes]:
    """One frame per argument fragment, the first led by the events opening the call."""
    head = b""
    if index:
        head = event("tool-call-end", {"index": index - 1})
    opened = {
        "id": call.id,
        "type": "function",
        "function": {"name": call.name, "arguments": ""},
    }
    head += event("tool-call-start", {"index": index, "delta": {"message": {"tool_calls": opened}}})
    frames = []
    for fragment in call.fragments or [""]:
        arguments = {"function": {"arguments": fragment}}
        frames.append(
            head
            + event(
                "tool-call-delta",
                {"index": index, "delta": {"message": {"tool_calls": arguments}}},
            )
        )
        head = b""
    return frames


class StreamWriter:
    """Writes one answer's events, with `MockConfig`'s pacing and the request's fault."""

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

    async def send(self, answer: Answer, response_id: str) -> None:
        frames = self._frames(answer)
        total = len(frames)
        start = _message_start(response_id)
        pacer = Pacer(self._config.tokens_per_sec)
        if self._config.ttft_ms:
            await asyncio.sleep(self._config.ttft_ms / 1000)
        for index, frame in enumerate(frames):
            if await self._interrupted(index, total, start):
                return
            await pacer.wait()
            await self._resp.write(start + frame if index == 0 else frame)
        if await self._interrupted(total, total, start):
            return
        await self._resp.write((start if total == 0 else b"") + self._tail(answer))

    def _frames(self, answer: Answer) -> list[bytes]:
        if answer.tool_calls:
            frames = [_plan_delta(piece) for piece in answer.pieces]
            for index, call in enumerate(answer.tool_calls):
                frames.extend(_call_frames(index, call))
            return frames
        pieces = [stamp() for _ in answer.pieces] if self._config.stamp_tokens else answer.pieces
        frames = [_TEXT_HEAD + json.dumps(piece).encode() + _TEXT_TAIL for piece in pieces]
        if frames:
            content = {"message": {"content": {"type": "text", "text": ""}}}
            frames[0] = event("content-start", {"index": 0, "delta": content}) + frames[0]
        return frames

    async def _interrupted(self, index: int, total: int, start: bytes) -> bool:
        """Apply the fault due after `index` deltas; True when it ended the stream."""
        fault = self._fault
        if isinstance(fault, StreamErrorFault) and index == min(fault.after, total):
            end = event("message-end", {"delta": stream_failure(fault.error)})
            await self._resp.write((start if index == 0 else b"") + end)
            return True
        await interrupt(self._request, fault, index, total)
        return False

    @staticmethod
    def _tail(answer: Answer) -> bytes:
        if answer.tool_calls:
            closing = event("tool-call-end", {"index": len(answer.tool_calls) - 1})
        elif answer.pieces:
            closing = event("content-end", {"index": 0})
        else:
            closing = b""
        delta = {"finish_reason": answer.finish_reason, "usage": usage(answer)}
        return closing + event("message-end", {"delta": delta})
