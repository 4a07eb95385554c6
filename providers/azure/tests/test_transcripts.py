"""Real recorded Azure OpenAI answers replayed through the Azure adapter.

The recordings live outside the project (shared/reference/transcripts/openai):
`NAME.body` holds the exact bytes Azure sent and `NAME.json` its status,
headers and the result an adapter should produce. They are read where they are,
never copied; without the directory these tests are skipped.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from contracts.jobs import Message
from providers.azure.adapter import AzureOpenAI
from providers.core.http import HttpClientPool
from providers.core.spec import ProviderContext
from providers.core.types import ChatRequest, Secret, StreamEnd, TextDelta, ToolDelta

DIRECTORY = Path(__file__).resolve().parents[3].parent / "shared/reference/transcripts/openai"
SECRET = Secret({"endpoint": "https://replay.openai.azure.com", "api_key": "azure-replay-0000"})
REQUEST = ChatRequest(model="gpt-4o", messages=[Message(role="user", content="hi")])


def azure_transcripts() -> list[Any]:
    if not DIRECTORY.is_dir():
        reason = f"recorded transcripts not found at {DIRECTORY}"
        return [pytest.param(None, marks=pytest.mark.skip(reason=reason), id="absent")]
    names = sorted(p.stem for p in DIRECTORY.glob("azure-*.json"))
    return [pytest.param(name, id=name) for name in names]


@pytest.fixture
async def pool() -> AsyncIterator[list[HttpClientPool]]:
    pools: list[HttpClientPool] = []
    yield pools
    for created in pools:
        await created.aclose()


@pytest.mark.parametrize("name", azure_transcripts())
async def test_recorded_azure_stream(name: str, pool: list[HttpClientPool]) -> None:
    meta: dict[str, Any] = json.loads((DIRECTORY / f"{name}.json").read_text())
    body = (DIRECTORY / meta["body"]).read_bytes()
    assert meta["kind"] == "stream", "teach this replay the new kind of recording"

    def handler(request: httpx.Request) -> httpx.Response:
        async def pieces() -> AsyncIterator[bytes]:
            for i in range(0, len(body), 29):  # cut anywhere, as sockets do
                yield body[i : i + 29]

        return httpx.Response(meta["status"], headers=meta["headers"], content=pieces())

    created = HttpClientPool(transport=httpx.MockTransport(handler))
    pool.append(created)
    adapter = AzureOpenAI(ProviderContext("azure", created, None))
    text: list[str] = []
    calls: list[ToolDelta] = []
    ends: list[StreamEnd] = []
    async for event in adapter.stream_chat(REQUEST, SECRET):
        if isinstance(event, TextDelta):
            text.append(event.text)
        elif isinstance(event, ToolDelta):
            calls.append(event)
        elif isinstance(event, StreamEnd):
            ends.append(event)
    expect = meta["expect"]
    (end,) = ends
    assert "".join(text) == expect["text"]
    assert calls == [] and expect["tool_calls"] == []
    assert end.finish_reason == expect["finish_reason"]
    usage = {
        "input_tokens": end.usage.input_tokens,
        "output_tokens": end.usage.output_tokens,
        "total_tokens": end.usage.total_tokens,
    }
    assert usage == expect["usage"]
