"""ConverseStream: `application/vnd.amazon.eventstream` frames into stream events.

Frames are cut and checked by botocore's `EventStreamBuffer` (prelude and
message CRCs, header and payload limits); a frame it refuses ends the stream at
once with a retryable `ProviderUnavailable`, never with a botocore exception or a
wait for bytes that will not come. Each event frame's payload (JSON, with AWS's
`p` padding field, ignored) is decoded once.

Events, by their `:event-type` header: `messageStart`, `contentBlockStart` (a
tool call's id and name), `contentBlockDelta` (text, a tool call's input
fragment; reasoning and citations are not answer text), `contentBlockStop`,
`messageStop` (the stop reason) and `metadata` (usage, sent after
`messageStop`). The stream is whole once both of the last two arrived; a body
that ends before is a dropped stream. Exception frames (`:message-type`
`exception`, `:exception-type` such as `throttlingException`) and generic error
frames (`error`, with `:error-code` and `:error-message`) raise the mapped error.

`event_stream_chat` keeps `sse_chat_stream`'s guarantees: the adapter returns it
as its `stream_chat`, the body is built on the first iteration, the response is
closed on every way out, and the `StreamEnd` comes after it is closed.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncGenerator, Callable, Iterator, Mapping
from typing import Any, Final, cast

import msgspec
from botocore.eventstream import EventStreamBuffer, EventStreamMessage, ParserError

from contracts.errors import FleetError, ProviderUnavailable
from contracts.frames import ToolCallDelta
from providers.bedrock.errors import BY_STATUS, ERRORS, error_type
from providers.bedrock.mapping import finish_reason, usage_of
from providers.core.api import ApiClient, drain
from providers.core.errors import ErrorInfo
from providers.core.types import Secret, StreamEnd, StreamEvent, TextDelta, ToolDelta

__all__ = ["EVENT_STREAM", "ConverseStreamState", "event_stream_chat", "frames"]

EVENT_STREAM: Final = "application/vnd.amazon.eventstream"

# Once per streamed token: msgspec builds the same dicts in a third of json.loads' time.
_decode = msgspec.json.Decoder().decode


def frames(provider: str, buffer: EventStreamBuffer) -> Iterator[EventStreamMessage]:
    """The complete frames in `buffer`; a corrupt one is a `ProviderUnavailable`."""
    while True:
        try:
            message = buffer.next()
        except StopIteration:
            return
        except ParserError as exc:
            # The connection is out of step with the framing: nothing after it is usable.
            raise ProviderUnavailable(f"{provider}: corrupt event-stream frame: {exc}") from None
        yield message


class ConverseStreamState:
    """One stream's bookkeeping: tool positions, stop reason, usage, completeness."""

    __slots__ = ("_provider", "_secret", "_stopped", "_tools", "_usage", "done", "finish_reason")

    def __init__(self, provider: str, secret: Secret) -> None:
        self._provider = provider
        self._secret = secret
        # contentBlockIndex → position among the tool calls (the fleet's index).
        self._tools: dict[int, int] = {}
        self._stopped = False
        self._usage: Any = None
        self.done = False
        self.finish_reason: str | None = None

    def feed(self, message: EventStreamMessage) -> list[StreamEvent]:
        headers = message.headers
        kind = headers.get(":message-type", "event")
        if kind == "exception":
            raise self._exception(headers.get(":exception-type"), message.payload)
        if kind == "error":
            info = ErrorInfo(
                message=str(headers.get(":error-message") or ""),
                type=error_type(str(headers.get(":error-code") or "")) or "InternalFailure",
            )
            raise self._error(info)
        try:
            data = _decode(message.payload) if message.payload else {}
            return self._event(headers.get(":event-type"), data)
        except (ValueError, AttributeError, TypeError, KeyError):  # DecodeError is a ValueError
            raise ProviderUnavailable(f"{self._provider}: malformed stream event") from None

    def _event(self, kind: Any, data: dict[str, Any]) -> list[StreamEvent]:
        if kind == "contentBlockDelta":
            return self._delta(data["contentBlockIndex"], data["delta"])
        if kind == "contentBlockStart":
            return self._block_start(data["contentBlockIndex"], data["start"])
        if kind == "messageStop":
            self._stopped = True
            self.finish_reason = finish_reason(self._provider, data["stopReason"])
        elif kind == "metadata":
            self._usage = data.get("usage")
        # messageStart, contentBlockStop and later event types carry nothing we use.
        self.done = self._stopped and self._usage is not None
        return []

    def _block_start(self, index: int, start: dict[str, Any]) -> list[StreamEvent]:
        use = start.get("toolUse")
        if not isinstance(use, dict):
            return []
        position = self._tools[index] = len(self._tools)
        delta = ToolCallDelta(index=position, id=use.get("toolUseId"), name=use.get("name"))
        return [ToolDelta(delta)]

    def _delta(self, index: int, delta: dict[str, Any]) -> list[StreamEvent]:
        text = delta.get("text")
        if text is not None:
            return [TextDelta(text)] if text else []
        use = delta.get("toolUse")
        if isinstance(use, dict):
            fragment = use["input"]
            if not fragment:
                return []
            return [ToolDelta(ToolCallDelta(index=self._tools[index], arguments=fragment))]
        return []  # reasoningContent, citations: not answer text

    def _exception(self, kind: Any, payload: bytes) -> FleetError:
        try:
            body = _decode(payload) if payload else {}
        except ValueError:
            body = {}
        body = body if isinstance(body, dict) else {}
        message = body.get("message", body.get("Message"))
        info = ErrorInfo(
            message=message if isinstance(message, str) else "",
            type=error_type(kind if isinstance(kind, str) else None) or "InternalFailure",
        )
        original = body.get("originalStatusCode")
        if (
            info.type == "ModelStreamErrorException"
            and isinstance(original, int)
            and 400 <= original <= 599
        ):
            # The model's own failure, relayed with its status: classed by that status.
            return BY_STATUS.from_info(
                self._provider, original, info, self._secret, context="stream error"
            )
        return self._error(info)

    def _error(self, info: ErrorInfo) -> FleetError:
        status = ERRORS.statuses.get(info.type or "", 500)
        return ERRORS.from_info(self._provider, status, info, self._secret, context="stream error")

    def end(self) -> StreamEnd:
        return StreamEnd(finish_reason=self.finish_reason, usage=usage_of(self._usage))


async def event_stream_chat(
    api: ApiClient,
    prepare: Callable[[], tuple[str, Mapping[str, Any]]],
    secret: Secret,
    state: ConverseStreamState,
) -> AsyncGenerator[StreamEvent, None]:
    """POST the body `prepare()` gives to its URL (both made on the first iteration,
    so a request that cannot be mapped fails where the stream is read) and yield
    what `state` makes of each frame."""
    url, body = prepare()
    async with api.stream("POST", url, secret, body, accept=EVENT_STREAM) as response:
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith(EVENT_STREAM):
            # Some fronts answer an unknown operation with a 200 and a JSON error body.
            await response.aread()
            raise api.error(response, secret)
        buffer = EventStreamBuffer()
        # httpx's `aiter_bytes` is an async generator: closed here, not by the GC.
        raw = cast(AsyncGenerator[bytes, None], response.aiter_bytes())
        async with contextlib.aclosing(raw) as chunks:
            async for chunk in chunks:
                buffer.add_data(chunk)
                for message in frames(api.name, buffer):
                    for event in state.feed(message):
                        yield event
                    if state.done:
                        break
                if state.done:
                    break
            else:
                raise ProviderUnavailable(
                    f"{api.name}: stream ended before messageStop and metadata"
                )
            await drain(chunks)
    yield state.end()
