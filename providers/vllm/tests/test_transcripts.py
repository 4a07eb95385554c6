"""Recorded real vLLM and Ollama (`/v1`) streams replayed through the adapters that serve them.

The recordings live outside the project (shared/reference/transcripts/openai); this test
reads the vLLM ones through `vllm` and the Ollama `/v1` ones through `ollama-openai`, and
skips when they are absent. What each must give is the recording's own `expect`.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.jobs import Message
from providers.core.http import HttpClientPool
from providers.core.spec import ProviderContext, ProviderSpec
from providers.core.types import (
    ChatRequest,
    Secret,
    StreamEnd,
    TextDelta,
    ToolDelta,
)
from providers.ollama import SPECS as OLLAMA_SPECS
from providers.vllm import SPECS as VLLM_SPECS

DIRECTORY = Path(__file__).resolve().parents[3].parent / "shared/reference/transcripts/openai"
SECRET = Secret({"api_key": "sk-transcript-replay-0000"})
REQUEST = ChatRequest(model="served-model", messages=[Message(role="user", content="hi")])
SPEC_FOR_PREFIX: dict[str, ProviderSpec] = {
    "vllm": VLLM_SPECS[0],
    "ollama": next(s for s in OLLAMA_SPECS if s.name == "ollama-openai"),
}


def recordings() -> list[Any]:
    if not DIRECTORY.is_dir():
        reason = f"recorded transcripts not found at {DIRECTORY}"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="absent")]
    names = sorted(
        p.stem for p in DIRECTORY.glob("*.json") if p.stem.split("-")[0] in SPEC_FOR_PREFIX
    )
    return [pytest.param(name, id=name) for name in names]


@pytest.fixture
async def pools() -> AsyncIterator[list[HttpClientPool]]:
    created: list[HttpClientPool] = []
    yield created
    for pool in created:
        await pool.aclose()


@pytest.mark.parametrize("name", recordings())
async def test_recording_replayed_through_its_own_adapter(
    name: str, pools: list[HttpClientPool]
) -> None:
    meta: dict[str, Any] = json.loads((DIRECTORY / f"{name}.json").read_text())
    body = (DIRECTORY / meta["body"]).read_bytes()
    assert meta["kind"] == "stream", "only streams are recorded for these servers"

    def handler(request: httpx.Request) -> httpx.Response:
        async def pieces() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 29):
                yield body[i : i + 29]

        return httpx.Response(meta["status"], headers=meta["headers"], content=pieces())

    pool = HttpClientPool(transport=httpx.MockTransport(handler))
    pools.append(pool)
    spec = SPEC_FOR_PREFIX[name.split("-")[0]]
    adapter = spec.build(ProviderContext(spec.name, pool, "http://server.test/v1"))
    text: list[str] = []
    calls: dict[int, dict[str, Any]] = {}
    ends: list[StreamEnd] = []
    async for event in adapter.stream_chat(REQUEST, SECRET):  # type: ignore[attr-defined]
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, ToolDelta):
            d = event.delta
            call = calls.setdefault(
                d.index, {"index": d.index, "id": None, "name": None, "arguments": ""}
            )
            call["id"] = d.id or call["id"]
            call["name"] = d.name or call["name"]
            call["arguments"] += d.arguments
        elif isinstance(event, StreamEnd):
            ends.append(event)
    (end,) = ends
    expect = meta["expect"]
    assert "".join(text) == expect["text"]
    assert [calls[i] for i in sorted(calls)] == expect["tool_calls"]
    assert end.finish_reason == expect["finish_reason"]
    assert end.usage.input_tokens == expect["usage"]["input_tokens"]
    assert end.usage.output_tokens == expect["usage"]["output_tokens"]
