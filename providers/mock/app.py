"""One mock server for every provider: shared state, the root app, stream helpers.

Each provider's mock is an aiohttp sub-application mounted under `/<prefix>`
(`/openai/v1/chat/completions`, `/anthropic/v1/messages`, …). They share one
`MockShared`: configuration, the fault book, counters, the rate limiter. The
admin API (`/_mock/faults`, `/_mock/stats`) lives at the root.
"""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import time
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from providers.mock.config import MockConfig
from providers.mock.faults import (
    FAULT_HEADER,
    DropFault,
    Fault,
    FaultBook,
    FaultSpecError,
    MockError,
    StallFault,
    Stats,
    add_admin_routes,
)
from providers.mock.ratelimit import RateLimiter

__all__ = [
    "MAX_BODY",
    "SHARED",
    "Dropped",
    "MockCredentials",
    "MockProvider",
    "MockShared",
    "Pacer",
    "abort",
    "bearer_key",
    "build_app",
    "error_gate",
    "json_answer",
    "mock_providers",
    "new_id",
    "shared_state",
    "stamp",
]

# Embedding requests may carry thousands of inputs; aiohttp's 1 MiB default is too small.
MAX_BODY: Final = 64 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class MockShared:
    config: MockConfig
    book: FaultBook
    stats: Stats
    limiter: RateLimiter

    def pick_fault(self, request: web.Request, model: str | None) -> Fault | None:
        """This request's fault; a bad `x-mock-fault` header is a 400 `MockError`."""
        try:
            return self.book.pick(request.headers.get(FAULT_HEADER), model)
        except FaultSpecError as exc:
            raise MockError(400, str(exc), "invalid_request_error", param=FAULT_HEADER) from None

    def knows_model(self, model: str) -> bool:
        # "mock-…" names are always served, so tests can give each case its own
        # model (faults queued per model never cross between tests).
        return model in self.config.models or model.startswith("mock-")


SHARED: Final = web.AppKey("mock_shared", MockShared)


def shared_state(request: web.Request) -> MockShared:
    """The shared state, from any sub-application's request."""
    return request.config_dict[SHARED]


# A well-formed key no default mock accepts; long enough that a provider echoing
# its last 4 characters in an error still hides the rest.
WRONG_KEY: Final = "sk-conformance-wrong-key-5e1f0a9c7d"


@dataclass(frozen=True, slots=True)
class MockCredentials:
    """Credential fields a default-configured mock accepts, and fields it refuses
    the way the provider refuses a wrong key (for tests, the demo and load tests).

    `canaries` are the secret values among them: strings that must never appear
    in an error message, a log line or a frame.
    """

    good: Mapping[str, str]
    wrong: Mapping[str, str]
    canaries: tuple[str, ...]


API_KEY_CREDENTIALS: Final = MockCredentials(
    good={"api_key": "mock-key"},
    wrong={"api_key": WRONG_KEY},
    canaries=("mock-key", WRONG_KEY),
)


@dataclass(frozen=True, slots=True)
class MockProvider:
    """A provider's mock: its path prefix, its app, and where its SDK points.

    `sdk_path` is what follows the prefix in the base URL the provider's official
    SDK takes (`/v1` for OpenAI, empty for Anthropic, whose SDK adds `/v1` itself).
    `token_path`, for providers that trade a credential for a bearer token, is
    where under the prefix the mock's token endpoint is.
    """

    prefix: str
    build: Callable[[], web.Application]
    sdk_path: str = ""
    api_path: str = ""  # what follows the prefix in the fleet adapter's base URL
    credentials: MockCredentials = API_KEY_CREDENTIALS
    token_path: str | None = None
    # Whether the provider says how long to wait when it throttles (Bedrock does not:
    # its SDKs back off on their own).
    retry_hints: bool = True
    # Whether the provider has a content or safety filter that can block a prompt or
    # stop an answer (self-hosted servers such as vLLM and Ollama have none).
    content_filter: bool = True


def mock_providers(modules: Sequence[str] | None = None) -> list[MockProvider]:
    """The `MOCK` of every provider package (default: the registry's built-ins)."""
    if modules is None:
        from providers.registry import BUILTIN

        modules = BUILTIN
    return [importlib.import_module(f"providers.{m}.mock").MOCK for m in modules]


def build_app(
    config: MockConfig, providers: Sequence[MockProvider] | None = None
) -> web.Application:
    stats = Stats()
    book = FaultBook(config.fault_rate, config.fault_kind, config.seed, stats)
    limiter = RateLimiter(config.requests_per_minute, config.tokens_per_minute)
    app = web.Application(client_max_size=MAX_BODY)
    app[SHARED] = MockShared(config, book, stats, limiter)
    add_admin_routes(app, book, stats)
    for provider in mock_providers() if providers is None else providers:
        sub = provider.build()
        app.add_subapp(f"/{provider.prefix}", sub)
    return app


def mock_stats(app: web.Application) -> Stats:
    return app[SHARED].stats


def new_id(prefix: str) -> str:
    return prefix + os.urandom(12).hex()


def stamp() -> str:
    """A `MockConfig.stamp_tokens` token: the time it is written, as bench/ parses it."""
    return f" t{time.time_ns()}"


class Dropped(Exception):
    """The connection was aborted on purpose by a `drop-after` fault."""


async def abort(request: web.Request) -> None:
    """Cut the connection once what was written has left; raises `Dropped`."""
    transport = request.transport
    if transport is not None:
        # Let the tokens already written reach the client, so it sees exactly N of them.
        for _ in range(1000):  # at most about a second
            if not transport.get_write_buffer_size():
                break
            await asyncio.sleep(0.001)
        transport.abort()
    raise Dropped


async def interrupt(request: web.Request, fault: Fault | None, index: int, total: int) -> None:
    """Apply a stall/drop fault when `index` content tokens have been written."""
    if isinstance(fault, StallFault) and index == min(fault.after, total):
        await asyncio.sleep(fault.seconds)
    elif isinstance(fault, DropFault) and index == min(fault.after, total):
        await abort(request)


async def delay_whole_response(
    request: web.Request, config: MockConfig, fault: Fault | None, tokens: int
) -> None:
    """What a non-streaming caller waits: stall faults, TTFT, then the token time."""
    if isinstance(fault, StallFault):
        await asyncio.sleep(fault.seconds)
    elif isinstance(fault, DropFault):
        await abort(request)
    delay = config.ttft_ms / 1000
    if config.tokens_per_sec:
        delay += max(tokens - 1, 0) / config.tokens_per_sec
    if delay:
        await asyncio.sleep(delay)


class Pacer:
    """Spaces writes `1/rate` apart on an absolute schedule (no drift from sleep overshoot)."""

    __slots__ = ("_due", "_interval")

    def __init__(self, rate: float) -> None:
        self._interval = 1.0 / rate if rate > 0 else 0.0
        self._due = 0.0

    async def wait(self) -> None:
        if not self._interval:
            return
        now = asyncio.get_running_loop().time()
        if self._due > now:
            await asyncio.sleep(self._due - now)
            now = self._due
        self._due = now + self._interval


class StreamCounter:
    """Counts one streamed answer in `Stats` however it ends (use as `with`)."""

    __slots__ = ("_stats",)

    def __init__(self, stats: Stats) -> None:
        self._stats = stats

    def __enter__(self) -> StreamCounter:
        self._stats.streams_started += 1
        self._stats.open_streams += 1
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: object, tb: object) -> bool:
        self._stats.open_streams -= 1
        if exc_type is None:
            self._stats.streams_completed += 1
            return False
        if exc_type is Dropped:
            self._stats.streams_dropped += 1
            return True  # the transport is gone: nothing more to send
        if issubclass(exc_type, ConnectionError | asyncio.CancelledError):
            # The client went away (aiohttp cancels the handler when it does).
            self._stats.streams_abandoned += 1
            return issubclass(exc_type, ConnectionError)
        return False


Authorize = Callable[[web.Request, MockConfig], None]
RenderError = Callable[[MockError, web.Request], web.Response]
UrlError = Callable[[web.Request, web.HTTPException], MockError]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def error_gate(authorize: Authorize, render: RenderError, url_error: UrlError) -> Any:
    """The middleware every provider mock puts first: it counts the request, lets
    `authorize` check the credential, and renders every `MockError` (and aiohttp's
    own 404/405 for unknown routes, through `url_error`) in the provider's shape."""

    @web.middleware
    async def gate(request: web.Request, handler: Handler) -> web.StreamResponse:
        state = shared_state(request)
        route = request.match_info.route.resource
        state.stats.requests[route.canonical if route is not None else "<unmatched>"] += 1
        try:
            authorize(request, state.config)
            return await handler(request)
        except MockError as exc:
            return render(exc, request)
        except web.HTTPException as exc:
            if exc.status < 400:
                raise
            return render(url_error(request, exc), request)

    return gate


def bearer_key(request: web.Request) -> str:
    """The key of an `Authorization: Bearer <key>` header ("" when there is none)."""
    scheme, _, key = request.headers.get("Authorization", "").partition(" ")
    return key.strip() if scheme.lower() == "bearer" else ""


def json_answer(
    payload: Any, *, status: int = 200, headers: Mapping[str, str] | None = None
) -> web.Response:
    """A compact JSON answer, non-ASCII text as it is (as most providers send it)."""
    body = json.dumps(payload, separators=(",", ":"), ensure_ascii=False).encode()
    return web.Response(body=body, status=status, content_type="application/json", headers=headers)
