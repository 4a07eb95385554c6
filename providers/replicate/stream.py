"""A prediction's output stream: `GET urls.stream` as server-sent events.

Events: `output` (data is plain text, not JSON: a piece of the answer, lines
joined with "\\n"), `logs` (ignored), `error` (`{"detail": …}`: the prediction
failed) and `done` (`{}`, or `{"reason": "canceled" | "error"}`). Usage and the
final status are not in the stream: once `done` arrives, the prediction is read
once more (polled if it is not marked finished yet) for its `metrics`.

`prediction_stream` keeps `sse_chat_stream`'s guarantees over its two requests:
the adapter returns it as its `stream_chat`, the request is built on the first
iteration, the stream's response is closed on every way out, the `StreamEnd`
comes after it is closed, and a body that ends before `done` is a dropped stream.
A prediction left unfinished (the reader closed the generator, the task was
cancelled, the stream failed) is cancelled. A prediction without a stream URL the
credential may go to is waited for and its whole output is one delta.
"""

from __future__ import annotations

import contextlib
import json
from collections.abc import AsyncGenerator, Callable
from typing import Any

from contracts.errors import ProviderUnavailable
from providers.core.api import drain
from providers.core.sse import ServerSentEvent, aiter_sse
from providers.core.types import ChatResult, Secret, StreamEnd, StreamEvent, TextDelta
from providers.replicate.errors import canceled_error, failed_prediction_error, stream_error
from providers.replicate.mapping import Target, result_of
from providers.replicate.predictions import PredictionApi, Predictions

__all__ = ["OutputReader", "prediction_stream", "settle"]

_STREAM_HEADERS = {"Cache-Control": "no-store"}


def settle(
    provider: str, prediction: dict[str, Any], secret: Secret, max_tokens: int | None
) -> ChatResult:
    """A finished prediction as a result, or the error it ended with."""
    status = prediction.get("status")
    if status == "failed":
        raise failed_prediction_error(provider, prediction, secret)
    if status == "canceled":
        raise canceled_error(provider, prediction)
    return result_of(provider, prediction, max_tokens)


class OutputReader:
    """One output stream's events; `finished` once the prediction said it ended."""

    __slots__ = ("_provider", "_secret", "finished", "reason")

    def __init__(self, provider: str, secret: Secret) -> None:
        self._provider = provider
        self._secret = secret
        self.finished = False
        self.reason: str | None = None  # the `done` event's reason, when it gave one

    def feed(self, sse: ServerSentEvent) -> TextDelta | None:
        kind = sse.event
        if kind == "output":
            return TextDelta(sse.data) if sse.data else None
        if kind == "done":
            self.finished = True
            reason = _object(sse.data).get("reason")
            self.reason = reason if isinstance(reason, str) and reason else None
        elif kind == "error":
            self.finished = True
            raise stream_error(self._provider, _object(sse.data), self._secret)
        return None  # `logs`, and event types added later


def _object(data: str) -> dict[str, Any]:
    try:
        value = json.loads(data) if data else {}
    except ValueError:
        return {"detail": data}  # plain text where JSON was expected: keep its words
    return value if isinstance(value, dict) else {"detail": value}


async def prediction_stream(
    api: PredictionApi,
    predictions: Predictions,
    prepare: Callable[[], tuple[Target, dict[str, Any]]],
    secret: Secret,
    max_tokens: int | None,
) -> AsyncGenerator[StreamEvent, None]:
    """Create a streamed prediction and yield its output; see the module docstring."""
    provider = api.name
    target, model_input = prepare()
    prediction = await predictions.create(target, model_input, secret, stream=True)
    prediction_id = predictions.id_of(prediction)
    reader = OutputReader(provider, secret)
    url = predictions.stream_url(prediction, secret)
    try:
        if url is None:
            result = settle(
                provider,
                await predictions.until_finished(prediction, secret),
                secret,
                max_tokens,
            )
            reader.finished = True
            text = result.message.text()
            if text:
                yield TextDelta(text)
            yield StreamEnd(result.finish_reason, result.usage)
            return
        async with (
            api.stream("GET", url, secret, None, headers=_STREAM_HEADERS) as response,
            contextlib.aclosing(aiter_sse(response.aiter_bytes())) as events,
        ):
            async for sse in events:
                delta = reader.feed(sse)
                if delta is not None:
                    yield delta
                if reader.finished:
                    break
            else:
                raise ProviderUnavailable(f"{provider}: stream ended before its done event")
            await drain(events)
    except BaseException as exc:
        if not reader.finished:
            await predictions.cancel_quietly(prediction_id, secret, exc)
        raise
    if reader.reason == "canceled":
        raise canceled_error(provider, prediction)
    final = await predictions.until_finished(await predictions.get(prediction_id, secret), secret)
    if reader.reason == "error" and final.get("status") != "failed":
        raise failed_prediction_error(provider, final, secret)
    result = settle(provider, final, secret, max_tokens)
    yield StreamEnd(result.finish_reason, result.usage)
