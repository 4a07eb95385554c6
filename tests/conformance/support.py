"""What every conformance scenario shares: requests, stream collection, the mock's admin API.

Provider-neutral on purpose: nothing here names a provider, so a provider
package added to `providers.registry.BUILTIN` runs the same scenarios.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import json
from collections.abc import AsyncGenerator
from dataclasses import dataclass, field
from typing import Any, Final

import httpx
import pytest

from contracts.errors import FleetError
from contracts.frames import ToolCallDelta
from contracts.jobs import Message, Tool, ToolCall
from providers.core.http import HttpClientPool
from providers.core.spec import Capability, ProviderContext, ProviderSpec
from providers.core.types import (
    ChatRequest,
    ChatResult,
    Secret,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolDelta,
)
from providers.mock.app import MockCredentials, MockProvider
from providers.mock.server import RunningMock
from providers.options import ModelOptions
from providers.registry import Provider, ProviderRegistry

# Short, so stall scenarios cost half a second; the mocks answer in milliseconds.
READ_TIMEOUT: Final = 0.5
# Stalls last longer than READ_TIMEOUT; the mock's handler is cancelled when we hang up.
STALL_SECONDS: Final = 3
PROMPT: Final = "Say hello to the conformance suite"
TOOL_PROMPT: Final = "Please use tools to look this up"

_QUERY_SCHEMA: Final[dict[str, Any]] = {
    "type": "object",
    "properties": {"query": {"type": "string"}},
    "required": ["query"],
}
TOOLS: Final = (
    Tool(name="get_weather", description="Weather for a city", parameters=_QUERY_SCHEMA),
    Tool(name="search_docs", description="Search the documentation", parameters=_QUERY_SCHEMA),
)


def chat_request(
    model: str,
    prompt: str = PROMPT,
    *,
    tools: tuple[Tool, ...] = (),
    max_tokens: int | None = None,
) -> ChatRequest:
    return ChatRequest(
        model=model,
        messages=[Message(role="user", content=prompt)],
        tools=list(tools),
        options=ModelOptions(max_tokens=max_tokens),
    )


# -- providers -----------------------------------------------------------------------


def provider_spec(package: str) -> ProviderSpec:
    """The package's first spec: the provider itself (later ones are aliases)."""
    spec: ProviderSpec = importlib.import_module(f"providers.{package}").SPECS[0]
    return spec


def provider_mock(package: str) -> MockProvider:
    mock: MockProvider = importlib.import_module(f"providers.{package}.mock").MOCK
    return mock


def build_provider(package: str, running: RunningMock, pool: HttpClientPool) -> Provider:
    """The package's adapter pointed at its mock, registered so accessors check capabilities."""
    spec = provider_spec(package)
    mock = provider_mock(package)
    base_url = running.url(mock.prefix)
    token_url = running.token_url(mock.prefix)
    adapter = spec.build(ProviderContext(spec.name, pool, base_url, token_url))
    registry = ProviderRegistry()
    registry.register(spec, adapter, base_url)
    _MOCKS[spec.name] = mock
    return registry.get(spec.name)


# Provider name → its mock, filled in by `build_provider`.
_MOCKS: dict[str, MockProvider] = {}


def _credentials(provider: Provider) -> MockCredentials:
    return _MOCKS[provider.name].credentials


def secret(provider: Provider) -> Secret:
    """A credential the provider's mock accepts."""
    return Secret(_credentials(provider).good)


def wrong_secret(provider: Provider) -> Secret:
    """A well-formed credential the provider's mock refuses as a wrong key."""
    return Secret(_credentials(provider).wrong)


def canaries(provider: Provider) -> tuple[str, ...]:
    return _credentials(provider).canaries


def require_content_filter(provider: Provider) -> None:
    if not _MOCKS[provider.name].content_filter:
        pytest.skip(f"{provider.name} has no content filter")


def gives_retry_hints(provider: Provider) -> bool:
    """Whether the provider says how long to wait when it throttles."""
    return _MOCKS[provider.name].retry_hints


def require(provider: Provider, capability: Capability) -> None:
    if not provider.supports(capability):
        pytest.skip(f"{provider.name} does not offer {capability.names}")


# -- results -----------------------------------------------------------------------


@dataclass(slots=True)
class Collected:
    """Everything a stream yielded, and the error that ended it (if one did)."""

    events: list[StreamEvent] = field(default_factory=list)
    error: FleetError | None = None

    @property
    def texts(self) -> list[str]:
        return [e.text for e in self.events if isinstance(e, TextDelta)]

    @property
    def text(self) -> str:
        return "".join(self.texts)

    @property
    def tool_deltas(self) -> list[ToolCallDelta]:
        return [e.delta for e in self.events if isinstance(e, ToolDelta)]

    @property
    def ends(self) -> list[StreamEnd]:
        return [e for e in self.events if isinstance(e, StreamEnd)]

    def end(self) -> StreamEnd:
        """The one `StreamEnd`, checked to be exactly one and the last event."""
        assert self.error is None, f"stream failed: {self.error!r}"
        assert len(self.ends) == 1, f"expected one StreamEnd, got {len(self.ends)}"
        assert self.events[-1] is self.ends[0], "StreamEnd is not the last event"
        return self.ends[0]


async def collect(provider: Provider, req: ChatRequest, key: Secret | None = None) -> Collected:
    """Read a whole stream (with `key`, else the mock's good credential); a
    `FleetError` ends it and is kept, anything else propagates."""
    got = Collected()
    try:
        stream = provider.streamer().stream_chat(req, key or secret(provider))
        # Callers close a stream they leave early (StreamAdapter's contract): it must let them.
        assert isinstance(stream, AsyncGenerator), "stream_chat must return an async generator"
        async with contextlib.aclosing(stream) as events:
            async for event in events:
                got.events.append(event)
    except FleetError as exc:
        got.error = exc
    return got


async def chat_error(provider: Provider, req: ChatRequest, key: Secret | None = None) -> FleetError:
    with pytest.raises(FleetError) as info:
        result: ChatResult = await provider.chat().chat(req, key or secret(provider))
        pytest.fail(f"expected an error, got an answer (finish_reason={result.finish_reason!r})")
    return info.value


async def stream_error(
    provider: Provider, req: ChatRequest, key: Secret | None = None
) -> tuple[FleetError, Collected]:
    got = await collect(provider, req, key)
    assert got.error is not None, f"stream ended without an error: {got.events[-3:]!r}"
    return got.error, got


def assemble(deltas: list[ToolCallDelta]) -> list[ToolCall]:
    """Tool calls from streamed deltas: grouped by index, arguments concatenated."""
    parts: dict[int, dict[str, str]] = {}
    for delta in deltas:
        call = parts.setdefault(delta.index, {"id": "", "name": "", "arguments": ""})
        if delta.id:
            assert call["id"] in ("", delta.id), f"call {delta.index} changed id"
            call["id"] = delta.id
        if delta.name:
            assert call["name"] in ("", delta.name), f"call {delta.index} changed name"
            call["name"] = delta.name
        call["arguments"] += delta.arguments
    return [ToolCall(**parts[index]) for index in sorted(parts)]


def check_tool_calls(calls: list[ToolCall] | None) -> None:
    """Both tools called, with distinct ids and JSON-object arguments."""
    assert calls is not None and len(calls) == 2, f"expected two tool calls, got {calls!r}"
    ids = [c.id for c in calls]
    assert all(ids) and len(set(ids)) == 2, f"tool call ids not distinct and set: {ids}"
    assert sorted(c.name for c in calls) == sorted(t.name for t in TOOLS)
    for call in calls:
        arguments = json.loads(call.arguments)
        assert isinstance(arguments, dict), f"{call.name} arguments are not an object"


def check_error(
    error: FleetError,
    provider: Provider,
    cls: type[FleetError],
    *,
    retryable: bool,
    status: int | None = None,
) -> None:
    """An error the provider reported: `check_failure`, plus its status (`status` if given)."""
    check_failure(error, provider, cls, retryable=retryable)
    assert error.provider_status is not None, f"provider_status not set: {error}"
    if status is not None:
        assert error.provider_status == status, error


def check_failure(
    error: FleetError, provider: Provider, cls: type[FleetError], *, retryable: bool
) -> None:
    """The exact class and retryability, and a message naming the provider, never a key.

    Also for failures with no provider status to report (a cut connection, a timeout).
    """
    assert type(error) is cls, f"expected {cls.__name__}, got {type(error).__name__}: {error}"
    assert error.retryable is retryable, f"retryable={error.retryable}: {error}"
    assert error.message.startswith(provider.name), error.message
    for canary in canaries(provider):
        assert canary not in error.message, "a credential leaked into the error message"


# -- the mock's admin API --------------------------------------------------------------


class MockAdmin:
    """Queues faults on, and reads counters of, one running mock server."""

    def __init__(self, running: RunningMock) -> None:
        self._http = httpx.AsyncClient(base_url=running.root, timeout=5.0)

    async def aclose(self) -> None:
        await self._http.aclose()

    async def fault(self, spec: str, model: str, times: int = 1) -> None:
        """Apply `spec` to the next `times` requests for `model` (unique per test)."""
        body = {"spec": spec, "times": times, "model": model}
        response = await self._http.post("/_mock/faults", json=body)
        assert response.status_code == 201, response.text

    async def stats(self) -> dict[str, Any]:
        response = await self._http.get("/_mock/stats")
        response.raise_for_status()
        stats: dict[str, Any] = response.json()
        return stats

    async def assert_no_open_streams(self, within: float = 2.0) -> None:
        """Every streamed answer has ended server-side: no client left one half-read."""
        open_streams = -1
        for _ in range(round(within / _POLL_SECONDS)):
            open_streams = (await self.stats())["open_streams"]
            if open_streams == 0:
                return
            # The server learns of a hang-up a moment after the client closes.
            await asyncio.sleep(_POLL_SECONDS)
        assert open_streams == 0, f"{open_streams} streams still open on the mock"


_POLL_SECONDS: Final = 0.02
