"""A prediction's output stream, as `GET urls.stream` sends it.

Each token is `event: output` with the text as plain `data:` (one `data:` line per
line of text), then `event: done` with `{}`; a canceled prediction ends with
`done` `{"reason": "canceled"}`, a failed one with `event: error`
(`{"detail": …}`, plus the problem's `status` and `title`) and `done`
`{"reason": "error"}`. Every event has an `id:` (the SDK's decoder drops events
without one). Tokens are written when the prediction's timeline makes them (so a
stream opened late catches up at once); stall and drop faults apply after N
tokens, as in every dialect.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any, Final

from aiohttp import web

from providers.mock.app import interrupt, stamp
from providers.mock.config import MockConfig
from providers.mock.faults import Fault
from providers.replicate.mock_predictions import MockPrediction

__all__ = ["SSE_HEADERS", "write_stream"]

SSE_HEADERS: Final = {
    "Content-Type": "text/event-stream",
    "Cache-Control": "no-store",
}


def _event(name: str, event_id: str, text: str) -> bytes:
    data = "".join(f"data: {line}\n" for line in text.split("\n"))
    return f"event: {name}\nid: {event_id}\n{data}\n".encode()


def _json(value: dict[str, Any]) -> str:
    return json.dumps(value, separators=(",", ":"))


async def _until(when: float) -> None:
    delay = when - asyncio.get_running_loop().time()
    if delay > 0:
        await asyncio.sleep(delay)


async def write_stream(
    request: web.Request,
    resp: web.StreamResponse,
    prediction: MockPrediction,
    fault: Fault | None,
    config: MockConfig,
) -> None:
    """Write the prediction's events as they happen; see the module docstring."""
    stamp_base = f"{int(prediction.created_wall)}"
    loop = asyncio.get_running_loop()
    total = prediction.fail_after if prediction.fail_after is not None else len(prediction.pieces)
    for index in range(total):
        await interrupt(request, fault, index, total)
        await _until(prediction.ready_at(index))
        if prediction.canceled_at is not None and prediction.written(loop.time()) <= index:
            break
        text = stamp() if config.stamp_tokens else prediction.pieces[index]
        await resp.write(_event("output", f"{stamp_base}:{index}", text))
    else:
        await interrupt(request, fault, total, total)
        await _until(prediction.ends_at)
    event_id = f"{stamp_base}:{total}"
    # A sleep may wake a clock tick early: the timeline, not the clock, says it ended.
    status = prediction.status(max(loop.time(), prediction.ends_at))
    if status == "canceled":
        await resp.write(_event("done", event_id, _json({"reason": "canceled"})))
    elif status == "failed":
        await resp.write(
            _event("error", event_id, _json(prediction.error_event))
            + _event("done", event_id + "e", _json({"reason": "error"}))
        )
    else:
        await resp.write(_event("done", event_id, "{}"))
