"""One streamed chat through the fleet, and the same through a direct httpx call.

The direct call is deliberately minimal (httpx `aiter_lines` + one `json.loads`
per SSE event): the least any Python caller pays for the same stream, so
"fleet minus direct" is what the fleet adds.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import httpx
from aiormq.abc import DeliveredMessage

from contracts.client import FleetClient, Restart
from contracts.frames import Delta, Final
from contracts.jobs import Message, Target

OnText = Callable[[str], None]


@dataclass(slots=True)
class StreamResult:
    ttft: float  # seconds from just before publish/send to the first text received
    total: float  # seconds until the final frame / [DONE]
    tokens: int  # completion tokens (the provider's usage)
    frames: int = 0  # frames the worker published for this job: Final.metrics.frames
    queue_ms: float | None = None  # fleet only: publish -> worker start (Final.metrics)
    worker_ttft_ms: float | None = None  # fleet only: worker start -> first provider token


class CountingClient(FleetClient):
    """A FleetClient that also counts the reply messages it receives and their bytes.

    Counted per client, not per request: a worker may pack frames of several
    requests bound for one reply queue into one message, so "AMQP messages per
    token" is the client's message count over the tokens of the same period.
    Counting `len(body)` costs nothing measurable; nothing is decoded twice.
    """

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.messages = 0
        self.bytes = 0

    async def _on_reply(self, message: DeliveredMessage) -> None:
        self.messages += 1
        self.bytes += len(message.body)
        await super()._on_reply(message)


def prompt(i: int) -> str:
    return f"benchmark request {i}: say something"


def direct_limits() -> httpx.Limits:
    # Enough keep-alive slots that high concurrency never reconnects per request
    # (httpx's default keeps 20), matching the worker's pooled client.
    return httpx.Limits(max_connections=2000, max_keepalive_connections=2000)


def direct_client() -> httpx.AsyncClient:
    return httpx.AsyncClient(timeout=httpx.Timeout(60.0), limits=direct_limits())


async def direct_stream(
    http: httpx.AsyncClient,
    base_url: str,
    api_key: str,
    model: str,
    text: str,
    *,
    max_tokens: int | None = None,
    on_text: OnText | None = None,
) -> StreamResult:
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": text}],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if max_tokens is not None:
        body["max_tokens"] = max_tokens
    headers = {"Authorization": f"Bearer {api_key}"}
    first = math.nan
    tokens = 0
    started = time.perf_counter()
    async with http.stream(
        "POST", f"{base_url}/chat/completions", json=body, headers=headers
    ) as response:
        response.raise_for_status()
        async for line in response.aiter_lines():
            if not line.startswith("data:"):
                continue
            data = line[5:].strip()
            if data == "[DONE]":
                break
            chunk = json.loads(data)
            for choice in chunk.get("choices") or ():
                content = (choice.get("delta") or {}).get("content")
                if content:
                    if first != first:  # NaN: no text yet
                        first = time.perf_counter()
                    if on_text is not None:
                        on_text(content)
            usage = chunk.get("usage")
            if usage:
                tokens = int(usage.get("completion_tokens", 0))
    total = time.perf_counter() - started
    return StreamResult(first - started, total, tokens)


async def fleet_stream(
    client: FleetClient,
    target: Target,
    text: str,
    *,
    max_tokens: int | None = None,
    on_text: OnText | None = None,
) -> StreamResult:
    options = {"max_tokens": max_tokens} if max_tokens is not None else None
    first = math.nan
    final: Final | None = None
    started = time.perf_counter()
    async for event in client.stream_chat(
        target, [Message(role="user", content=text)], options=options
    ):
        if type(event) is Delta:
            if event.text:
                if first != first:
                    first = time.perf_counter()
                if on_text is not None:
                    on_text(event.text)
        elif type(event) is Final:
            final = event
        elif type(event) is Restart:
            first = math.nan  # a worker died mid-answer; time the attempt that finished
    total = time.perf_counter() - started
    if final is None:
        raise RuntimeError("stream ended without a final frame")
    m = final.metrics
    return StreamResult(
        first - started, total, final.usage.output_tokens, m.frames, m.queue_ms, m.ttft_ms
    )


def stamp_delays_ms(text: str, now_ns: int, out: list[float]) -> None:
    """Append one delay per `t<ns>` stamp (mock `--stamp-tokens`) found in `text`."""
    for word in text.split():
        if word[:1] == "t" and word[1:].isdigit():
            out.append((now_ns - int(word[1:])) / 1e6)
