"""A streamed Messages API answer, event by event, in the order the API sends them.

`message_start` (input usage, `output_tokens: 1`), `content_block_start`, `ping`,
`content_block_delta`…, `content_block_stop` (and the next block's start),
`message_delta` (stop reason, cumulative usage), `message_stop`; `event:` lines
with `data:` JSON. Tool input arrives as `input_json_delta` fragments after an
empty one, as the API opens a tool block. Stall and drop faults apply after N
content deltas; a stream-error fault sends `event: error` and ends the stream.
Parallel tool calls are sequential blocks, so the `interleave` layout is ignored.
An answer cut to nothing by a stop sequence has no content block, as the API's.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from typing import Any, Final

from aiohttp import web

from providers.anthropic.mock_answer import Answer, ToolUse, dumps, split
from providers.anthropic.mock_errors import error_body, fault_error
from providers.anthropic.mock_usage import CacheCharge
from providers.mock.app import Pacer, interrupt, new_id, stamp
from providers.mock.config import MockConfig
from providers.mock.faults import Fault, StreamErrorFault

__all__ = ["StreamWriter"]

_TEXT_DELTA_HEAD: Final = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":0,'
    b'"delta":{"type":"text_delta","text":'
)
_TEXT_DELTA_TAIL: Final = b"}}\n\n"
_PING: Final = {"type": "ping"}


def _event(name: str, payload: Mapping[str, Any]) -> bytes:
    return f"event: {name}\ndata: {dumps(payload)}\n\n".encode()


def _tool_frames(uses: list[ToolUse]) -> list[bytes]:
    """One frame per input fragment, each led by the events that open its block."""
    frames: list[bytes] = []
    for index, use in enumerate(uses):
        head = b""
        if index:
            head = _event("content_block_stop", {"type": "content_block_stop", "index": index - 1})
        block = {"type": "tool_use", "id": use.id, "name": use.name, "input": {}}
        head += _event(
            "content_block_start",
            {"type": "content_block_start", "index": index, "content_block": block},
        )
        if not index:
            head += _event("ping", _PING)
        for part in ["", *split(dumps(use.input))]:  # the API opens with an empty fragment
            delta = {"type": "input_json_delta", "partial_json": part}
            head += _event(
                "content_block_delta",
                {"type": "content_block_delta", "index": index, "delta": delta},
            )
            if part:
                frames.append(head)
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

    async def send(self, model: str, answer: Answer, charge: CacheCharge) -> None:
        start = {
            "type": "message_start",
            "message": {
                "id": new_id("msg_"),
                "type": "message",
                "role": "assistant",
                "model": model,
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": charge.usage(1),
            },
        }
        frames = _tool_frames(answer.tool_uses) if answer.tool_uses else None
        total = len(frames) if frames is not None else len(answer.tokens)
        pacer = Pacer(self._config.tokens_per_sec)
        if self._config.ttft_ms:
            await asyncio.sleep(self._config.ttft_ms / 1000)
        for index in range(total):
            if await self._interrupted(index, total, start):
                return
            await pacer.wait()
            if index == 0:
                await self._resp.write(_event("message_start", start))
            if frames is not None:
                await self._resp.write(frames[index])
            else:
                await self._text(index == 0, answer.tokens[index])
        if await self._interrupted(total, total, start):
            return
        if total == 0:  # nothing said (a stop sequence at once): no content block at all
            await self._resp.write(_event("message_start", start) + _event("ping", _PING))
        await self._resp.write(self._tail(answer, charge, len(answer.tool_uses) or min(total, 1)))

    async def _interrupted(self, index: int, total: int, start: Mapping[str, Any]) -> bool:
        """Apply the fault due after `index` tokens; True when it ended the stream."""
        fault = self._fault
        if isinstance(fault, StreamErrorFault) and index == min(fault.after, total):
            error = fault_error(fault.error, None)
            if index == 0:
                await self._resp.write(_event("message_start", start))
            await self._resp.write(_event("error", error_body(error, self._request)))
            return True
        await interrupt(self._request, fault, index, total)
        return False

    async def _text(self, first: bool, token: str) -> None:
        head = b""
        if first:
            block = {"type": "text", "text": ""}
            head = _event(
                "content_block_start",
                {"type": "content_block_start", "index": 0, "content_block": block},
            ) + _event("ping", _PING)
        text = stamp() if self._config.stamp_tokens else token
        await self._resp.write(
            head + _TEXT_DELTA_HEAD + json.dumps(text).encode() + _TEXT_DELTA_TAIL
        )

    @staticmethod
    def _tail(answer: Answer, charge: CacheCharge, blocks: int) -> bytes:
        usage = charge.usage(answer.output_tokens)
        delta_usage = {k: usage[k] for k in _DELTA_USAGE}
        delta = {"stop_reason": answer.stop_reason, "stop_sequence": answer.stop_sequence}
        closing = (
            _event("content_block_stop", {"type": "content_block_stop", "index": blocks - 1})
            if blocks
            else b""
        )
        return (
            closing
            + _event(
                "message_delta", {"type": "message_delta", "delta": delta, "usage": delta_usage}
            )
            + _event("message_stop", {"type": "message_stop"})
        )


# Cumulative counts a `message_delta` repeats (the SDK keeps the newest of each).
_DELTA_USAGE: Final = (
    "input_tokens",
    "cache_creation_input_tokens",
    "cache_read_input_tokens",
    "output_tokens",
)
