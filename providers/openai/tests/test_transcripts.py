"""Real recorded OpenAI, Azure, vLLM and Ollama answers replayed through the adapter.

The recordings live outside the project (shared/reference/transcripts/openai):
each `NAME.body` holds the exact bytes a server sent and `NAME.json` its status,
headers and the result an adapter should produce. They are read where they are,
never copied; without the directory these tests are skipped.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.errors import FleetError
from contracts.jobs import Message
from providers.core.http import HttpClientPool
from providers.core.spec import ProviderContext
from providers.core.types import (
    ChatRequest,
    RefusalDelta,
    Secret,
    StreamEnd,
    TextDelta,
    ToolDelta,
)
from providers.openai.adapter import OpenAICompatible

DIRECTORY = Path(__file__).resolve().parents[3].parent / "shared/reference/transcripts/openai"
SECRET = Secret({"api_key": "sk-transcript-replay-0000"})
REQUEST = ChatRequest(model="gpt-4o", messages=[Message(role="user", content="hi")])


def transcripts() -> list[Any]:
    if not DIRECTORY.is_dir():
        reason = f"recorded transcripts not found at {DIRECTORY}"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="absent")]
    names = sorted(p.stem for p in DIRECTORY.glob("*.json"))
    return [pytest.param(name, id=name) for name in names]


def load(name: str) -> tuple[dict[str, Any], bytes]:
    meta: dict[str, Any] = json.loads((DIRECTORY / f"{name}.json").read_text())
    return meta, (DIRECTORY / meta["body"]).read_bytes()


def replaying(meta: dict[str, Any], body: bytes) -> Callable[[httpx.Request], httpx.Response]:
    """A server answering every request with the recording, in awkward pieces."""

    def handler(request: httpx.Request) -> httpx.Response:
        async def pieces() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 37):
                yield body[i : i + 37]

        return httpx.Response(meta["status"], headers=meta["headers"], content=pieces())

    return handler


@pytest.fixture
async def adapter_for() -> AsyncIterator[Callable[[dict[str, Any], bytes], OpenAICompatible]]:
    pools: list[HttpClientPool] = []

    def make(meta: dict[str, Any], body: bytes) -> OpenAICompatible:
        pool = HttpClientPool(transport=httpx.MockTransport(replaying(meta, body)))
        pools.append(pool)
        return OpenAICompatible(ProviderContext("openai", pool, "https://api.test/v1"))

    yield make
    for pool in pools:
        await pool.aclose()


async def replay_stream(adapter: OpenAICompatible) -> dict[str, Any]:
    """The stream assembled the way a caller does: text, calls by index, end."""
    text: list[str] = []
    refusal: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    ends: list[StreamEnd] = []
    async for event in adapter.stream_chat(REQUEST, SECRET):
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, RefusalDelta):
            refusal.append(event.text)
        elif isinstance(event, ToolDelta):
            d = event.delta
            call = calls.setdefault(
                d.index, {"index": d.index, "id": None, "name": None, "arguments": ""}
            )
            call["id"] = d.id or call["id"]
            call["name"] = d.name or call["name"]
            call["arguments"] += d.arguments
        else:
            ends.append(event)
    (end,) = ends
    # Recordings name a refusal only where there is one.
    refused = {"refusal": "".join(refusal)} if refusal else {}
    return {
        **refused,
        "text": "".join(text),
        "tool_calls": [calls[i] for i in sorted(calls)],
        "finish_reason": end.finish_reason,
        "usage": {
            "input_tokens": end.usage.input_tokens,
            "output_tokens": end.usage.output_tokens,
            "total_tokens": end.usage.total_tokens,
        },
    }


@pytest.mark.parametrize("name", transcripts())
async def test_transcript_gives_the_expected_result(
    name: str, adapter_for: Callable[[dict[str, Any], bytes], OpenAICompatible]
) -> None:
    meta, body = load(name)
    expect = meta["expect"]
    if meta["kind"] == "stream":
        assert await replay_stream(adapter_for(meta, body)) == expect
        return
    assert meta["kind"] == "error"
    for call in (
        adapter_for(meta, body).chat(REQUEST, SECRET),
        replay_stream(adapter_for(meta, body)),
    ):
        with pytest.raises(FleetError) as info:
            await call
        error = info.value
        assert type(error).__name__ == expect["error"]
        assert error.retryable is expect["retryable"]
        assert error.provider_status == expect["provider_status"]
        assert error.provider_request_id == meta["headers"].get("x-request-id")
        assert SECRET.api_key not in str(error)


def test_every_recorded_kind_is_understood() -> None:
    """A new kind of recording must be taught to the replay above, not skipped."""
    if not DIRECTORY.is_dir():
        pytest.skip(f"recorded transcripts not found at {DIRECTORY}")
    kinds = {json.loads(p.read_text())["kind"] for p in DIRECTORY.glob("*.json")}
    assert kinds <= {"stream", "error"}
