"""Ollama's streamed `/api/chat`: NDJSON objects in, the fleet's stream events out.

`ndjson_chat_stream` keeps `sse_chat_stream`'s promises for NDJSON bodies: the
request is built on the first iteration, the response is closed on every way
out and drained after the final object (so its connection is reused), a body
that ends before `"done": true` is a dropped stream (`ProviderUnavailable`), and
the `StreamEnd` comes after the response is closed.

Each object is one piece of the answer: `message.content` text (`message.thinking`
is reasoning and is not passed on), or whole tool calls, each given the next
index of the stream (servers number them per message, or not at all). The last
object has `done: true`, the `done_reason` and the token counts; an
`{"error": "..."}` line instead ends the stream with that error.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any, Final

from contracts.errors import InternalError, ProviderUnavailable
from contracts.frames import ToolCallDelta, Usage
from providers.core.api import ApiClient, drain
from providers.core.types import Secret, StreamEnd, StreamEvent, TextDelta, ToolDelta
from providers.ollama.errors import ERRORS
from providers.ollama.mapping import finish_reason, tool_call_of, usage_of
from providers.ollama.ndjson import aiter_ndjson

__all__ = ["NDJSON", "OllamaStreamState", "ndjson_chat_stream"]

NDJSON: Final = "application/x-ndjson"


class OllamaStreamState:
    """One stream's reading: text, tool calls by running index, the final object."""

    __slots__ = ("_calls", "_provider", "_secret", "done", "finish_reason", "usage")

    def __init__(self, provider: str, secret: Secret) -> None:
        self._provider = provider
        self._secret = secret
        self._calls = 0
        self.done = False
        self.finish_reason: str | None = None
        self.usage = Usage()

    def feed(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        if chunk.get("error"):
            raise ERRORS.from_payload(self._provider, chunk, self._secret)
        message = chunk.get("message")
        out: list[StreamEvent] = []
        if isinstance(message, dict):
            text = message.get("content")
            if text and isinstance(text, str):
                out.append(TextDelta(text))
            calls = message.get("tool_calls")
            if calls:
                out.extend(self._tool_deltas(calls))
        if chunk.get("done"):
            self.done = True
            self.finish_reason = finish_reason(chunk.get("done_reason"), self._calls > 0)
            self.usage = usage_of(chunk)
        return out

    def _tool_deltas(self, calls: Any) -> list[StreamEvent]:
        if not isinstance(calls, list):
            raise ProviderUnavailable(f"{self._provider}: malformed tool calls in stream")
        out: list[StreamEvent] = []
        for raw in calls:
            try:
                call = tool_call_of(raw, self._calls)
            except (InternalError, AttributeError, TypeError):
                raise ProviderUnavailable(
                    f"{self._provider}: malformed tool call in stream"
                ) from None
            delta = ToolCallDelta(
                index=self._calls, id=call.id, name=call.name, arguments=call.arguments
            )
            out.append(ToolDelta(delta))
            self._calls += 1
        return out

    def end(self) -> StreamEnd:
        return StreamEnd(finish_reason=self.finish_reason, usage=self.usage)


async def ndjson_chat_stream(
    api: ApiClient,
    path: str,
    secret: Secret,
    body: Callable[[], Mapping[str, Any]],
    parser: OllamaStreamState,
) -> AsyncGenerator[StreamEvent, None]:
    """POST `body()` and yield what `parser` makes of each NDJSON object (see above).

    An adapter returns this generator as its `stream_chat`, as with `sse_chat_stream`.
    """
    async with (
        api.stream("POST", path, secret, body(), accept=NDJSON) as response,
        contextlib.aclosing(aiter_ndjson(api.name, response.aiter_bytes())) as objects,
    ):
        async for chunk in objects:
            for event in parser.feed(chunk):
                yield event
            if parser.done:
                break
        else:
            raise ProviderUnavailable(f"{api.name}: stream ended before its final object")
        await drain(objects)
    yield parser.end()
