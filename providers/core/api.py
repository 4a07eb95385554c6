"""The HTTP half every adapter shares: addresses, auth, JSON in and out, streams.

An adapter says what to send and how to read the answer; `ApiClient` sends it
through the pooled client, turns transport failures and error responses into
`contracts.errors` (through the provider's `ErrorTable`), and owns the life of
streamed responses: they are closed on every way out, and drained after the
end-of-stream marker so the connection can be reused.

It also keeps what the worker reads about the last response after a call,
without every adapter returning it: the provider's request id and its
rate-limit headers (see `LastResponse`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any, Protocol

import httpx

from contracts.errors import BadRequest, FleetError, InternalError, ProviderUnavailable
from providers.core.errors import ErrorTable, request_id_of
from providers.core.http import HttpClientPool, json_body, translate_transport_errors
from providers.core.sse import ServerSentEvent, aiter_sse
from providers.core.types import Secret, StreamEnd, StreamEvent, VerifyResult

__all__ = [
    "USER_AGENT",
    "ApiClient",
    "LastResponse",
    "StreamParser",
    "decode_object",
    "forget_last_response",
    "last_rate_limit_headers",
    "last_request_id",
    "sse_chat_stream",
]

USER_AGENT = "llm-fleet/0.1"
_JSON = "application/json"
# After the end marker, read the (normally empty) rest of the body so the connection
# can go back to the keep-alive pool; give up quickly if the server keeps it open.
_DRAIN_SECONDS = 1.0

AuthFor = Callable[[Secret], httpx.Auth]


def decode_object(provider: str, content: bytes) -> dict[str, Any]:
    """A JSON object from a success body; anything else is the provider's fault."""
    try:
        payload = json.loads(content)
    except ValueError:
        # A 2xx with a broken body is usually a proxy or a cut connection.
        raise ProviderUnavailable(f"{provider}: response is not valid JSON") from None
    if not isinstance(payload, dict):
        raise InternalError(f"{provider}: expected a JSON object, got {type(payload).__name__}")
    return payload


class ApiClient:
    """Requests to one provider's API.

    `base_url` is the operator's (or the spec's default); a credential's own
    `base_url` replaces it. `auth` builds the `httpx.Auth` for an opened credential.
    """

    def __init__(
        self,
        name: str,
        http: HttpClientPool,
        base_url: str | None,
        auth: AuthFor,
        errors: ErrorTable,
        *,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        self.name = name
        self.errors = errors
        self._http = http
        self._base_url = base_url
        self._auth = auth
        self._headers = {"User-Agent": USER_AGENT, **(headers or {})}

    def url(self, secret: Secret, path: str) -> str:
        base = secret.get("base_url") or self._base_url
        if not base:
            raise BadRequest(f"{self.name}: no base_url configured")
        return base.rstrip("/") + path

    def _request(
        self,
        method: str,
        path: str,
        secret: Secret,
        body: Mapping[str, Any] | None,
        *,
        accept: str,
        params: Mapping[str, str] | None,
        headers: Mapping[str, str] | None,
    ) -> httpx.Request:
        all_headers = {**self._headers, "Accept": accept, **(headers or {})}
        content = None
        if body is not None:
            all_headers["Content-Type"] = _JSON
            content = json_body(body)
        return self._http.client.build_request(
            method, self.url(secret, path), content=content, headers=all_headers, params=params
        )

    async def send(
        self,
        method: str,
        path: str,
        secret: Secret,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> httpx.Response:
        """The whole response, whatever its status."""
        # Building the request is inside: httpx refuses a bad credential `base_url` there.
        with translate_transport_errors(self.name, secret=secret):
            request = self._request(
                method, path, secret, body, accept=_JSON, params=params, headers=headers
            )
            response = await self._http.client.send(request, auth=self._auth(secret))
        _note(response.headers)
        return response

    async def json(
        self,
        method: str,
        path: str,
        secret: Secret,
        body: Mapping[str, Any] | None = None,
        *,
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """The decoded JSON object of a 2xx answer; any other answer is raised."""
        response = await self.send(method, path, secret, body, params=params, headers=headers)
        if not 200 <= response.status_code < 300:
            raise self.error(response, secret)
        return decode_object(self.name, response.content)

    async def verify(
        self,
        path: str,
        secret: Secret,
        describe: Callable[[dict[str, Any]], str],
        *,
        params: Mapping[str, str] | None = None,
    ) -> VerifyResult:
        """A credential check by one cheap GET: a refused credential (401/403) is an
        answer (`ok=False` with the provider's reason), any other failure is raised
        like every other provider error. `describe` words a success body."""
        response = await self.send("GET", path, secret, params=params)
        if response.status_code == 200:
            return VerifyResult(
                ok=True, detail=describe(decode_object(self.name, response.content))
            )
        error = self.error(response, secret)
        if response.status_code in (401, 403):
            return VerifyResult(ok=False, detail=error.message)
        raise error

    def error(self, response: httpx.Response, secret: Secret) -> FleetError:
        """The exception for a read, non-success response."""
        return self.errors.from_response(
            self.name, response.status_code, response.headers, response.content, secret
        )

    @contextlib.asynccontextmanager
    async def stream(
        self,
        method: str,
        path: str,
        secret: Secret,
        body: Mapping[str, Any] | None,
        *,
        accept: str = "text/event-stream",
        params: Mapping[str, str] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> AsyncGenerator[httpx.Response, None]:
        """A 200 response whose body is still to be read; closed when the block ends.

        Transport errors inside the block become `FleetError`s too. Closed here on
        every way out rather than by `client.stream()`: that context manager is one
        more generator, and one left for loop shutdown to close raised "generator
        didn't stop after athrow()".
        """
        with translate_transport_errors(self.name, secret=secret):
            request = self._request(
                method, path, secret, body, accept=accept, params=params, headers=headers
            )
            response = await self._http.client.send(request, auth=self._auth(secret), stream=True)
        _note(response.headers)
        try:
            with translate_transport_errors(self.name, secret=secret):
                if response.status_code != 200:
                    await response.aread()
                    raise self.error(response, secret)
                yield response
        finally:
            await close_quietly(response)


@dataclass(slots=True)
class LastResponse:
    """What the worker reads about the last response a job's calls received.

    Held in a context variable as one mutable box per job: `forget_last_response()`
    puts a fresh box in the job's task before each target is called, and tasks an
    adapter starts (several requests for one job, `providers/core/fanout.py`)
    inherit the context and so write into that same box, which setting the
    variable itself from those tasks would not do.
    """

    request_id: str | None = None
    # Headers whose name holds "ratelimit", names in lowercase: a handful of the
    # response's, read only when the worker parses them with the provider's spec.
    rate_limit_headers: dict[str, str] = field(default_factory=dict)


_LAST_RESPONSE: ContextVar[LastResponse | None] = ContextVar("last_response", default=None)


def _note(headers: httpx.Headers) -> None:
    seen = _LAST_RESPONSE.get()
    if seen is None:
        seen = LastResponse()
        _LAST_RESPONSE.set(seen)
    seen.request_id = request_id_of(headers)
    # httpx.Headers yields lowercase names.
    seen.rate_limit_headers = {k: v for k, v in headers.items() if "ratelimit" in k}


def forget_last_response() -> None:
    """Before a call: what an earlier call (another target's, another job's) left must
    not be taken for this one's."""
    _LAST_RESPONSE.set(LastResponse())


def last_request_id() -> str | None:
    """The provider's request id of the last response this job received, if any."""
    seen = _LAST_RESPONSE.get()
    return None if seen is None else seen.request_id


def last_rate_limit_headers() -> Mapping[str, str]:
    """The rate-limit headers of the last response this job received (maybe none)."""
    seen = _LAST_RESPONSE.get()
    return {} if seen is None else seen.rate_limit_headers


class StreamParser(Protocol):
    """One provider's reading of one SSE stream: events in, stream events out."""

    done: bool  # the provider's end-of-stream marker was seen

    def feed(self, sse: ServerSentEvent) -> list[StreamEvent]: ...

    def end(self) -> StreamEnd: ...


async def sse_chat_stream(
    api: ApiClient,
    path: str,
    secret: Secret,
    body: Callable[[], Mapping[str, Any]],
    parser: StreamParser,
    *,
    end_marker: str | None,
    raw_json: bool = False,
) -> AsyncGenerator[StreamEvent, None]:
    """POST `body()` and yield what `parser` makes of each server-sent event.

    An adapter returns this generator as its `stream_chat` (no generator of its
    own around it, which would cost a hop per token and need closing itself);
    `body` is called on the first iteration, so a request that cannot be mapped
    fails where the caller consumes the stream, like any other stream error.

    A body that ends before the end marker is a dropped stream (retryable). A
    provider without an end marker (Gemini closes the body) passes `end_marker=None`:
    the end of the body ends the stream, and `parser.end()` must raise if what came
    was not whole (no finish reason seen). The `StreamEnd` is yielded after the
    response is closed, so its connection is back in the pool however long the
    caller holds this generator open. `raw_json` passes bare JSON objects written
    between events on to `parser` (see `SSEDecoder`).
    """
    async with (
        api.stream("POST", path, secret, body()) as response,
        contextlib.aclosing(aiter_sse(response.aiter_bytes(), raw_json=raw_json)) as events,
    ):
        async for sse in events:
            for event in parser.feed(sse):
                yield event
            if parser.done:
                break
        else:
            if end_marker is not None:
                raise ProviderUnavailable(f"{api.name}: stream ended before {end_marker}")
        if parser.done:
            await drain(events)
    yield parser.end()


async def close_quietly(response: httpx.Response) -> None:
    # What ended the stream (its end, its error, a consumer that left or was
    # cancelled) is what the caller must see: a failure to close adds nothing, and
    # must not turn a cancellation into a provider error.
    with contextlib.suppress(httpx.HTTPError):
        await response.aclose()


async def drain(events: AsyncIterator[object]) -> None:
    """Read what follows the end marker; failing only means no connection reuse."""
    with contextlib.suppress(TimeoutError, httpx.HTTPError):
        async with asyncio.timeout(_DRAIN_SECONDS):
            async for _ in events:
                pass
