"""Fault injection for the mock providers: spec grammar, fault book, admin API.

Faults are named by what goes wrong, not by how one provider says it: each
provider's mock renders an `ErrorFault` in its own error shape (status, body,
headers such as `retry-after`), so one fault book serves every dialect.

A request gets at most one fault, taken from the first source that has one:

1. the request header ``x-mock-fault: <spec>``;
2. the admin queue: ``POST /_mock/faults`` with ``{"spec": "<spec>", "times": N,
   "model": "<model>" | null}`` applies the fault to the next N requests whose
   model equals ``model`` (any request when null, so tests using distinct model
   names never steal each other's faults); ``DELETE /_mock/faults`` clears the
   queue and ``GET /_mock/stats`` returns counters as JSON, plus what is open right
   now: ``open_streams`` (streamed answers still being written) and
   ``open_connections`` (client connections, idle keep-alive ones included, not
   counting the one asking);
3. ``MockConfig.fault_rate``: that fraction of requests, drawn from an RNG seeded
   with ``MockConfig.seed``, gets ``MockConfig.fault_kind``.

Spec grammar::

    spec        := error | stall | stall-after | drop-after | stream-error | layout | filter
    error       := "400" | "401" | "403" | "404" | "500" | "502" | "503" | "504"
                 | "quota" | "overloaded" | "context"
                 | "429" [":" option ("," option)*]
    option      := "retry-after=" SECONDS | "retry-after-ms=" MILLISECONDS
    stall       := "stall:" SECONDS          headers sent, then silence before the
                                             first chunk, then a normal answer
    stall-after := "stall-after:" N ":" SECONDS   silence after N content tokens
    drop-after  := "drop-after:" N           TCP connection aborted after N content
                                             tokens: no finish event, no end marker
    stream-error:= "stream-error-after:" N [":" error]   an error event inside a 200
                                             stream after N tokens (default: overloaded)
    layout      := "interleave"              parallel tool calls streamed interleaved
                                             (dialects without the choice ignore it)
    filter      := "filtered"                the provider's safety/content filter
                                             blocks the prompt
                 | "filtered-after:" N       ... or stops the answer after N tokens

``quota`` is a billing error (never retryable), ``overloaded`` a transient
server overload (Anthropic's 529, OpenAI's 503), ``context`` a request past the
model's context window. On non-streaming endpoints a stall delays the whole
response and ``drop-after`` aborts the connection before any response bytes.
"""

from __future__ import annotations

import math
import random
from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Final

from aiohttp import web

FAULT_HEADER: Final = "x-mock-fault"


class FaultSpecError(ValueError):
    """A fault spec that does not follow the grammar in this module's docstring."""


@dataclass(frozen=True, slots=True)
class ErrorFault:
    """Answer with an error instead of the real response.

    `kind` is one of `ERROR_KINDS`; `status` is the usual HTTP status for it,
    which a dialect may replace with its own (Anthropic answers overload with 529).
    """

    kind: str
    status: int
    retry_after: str | None = None
    retry_after_ms: str | None = None

    @property
    def wait(self) -> float | None:
        """The wait the fault asks clients for, in seconds, for dialects that say it
        in the body rather than in headers (Google's `RetryInfo`)."""
        if self.retry_after_ms is not None:
            return float(self.retry_after_ms) / 1000
        if self.retry_after is not None:
            return float(self.retry_after)
        return None


@dataclass(frozen=True, slots=True)
class StallFault:
    """Go silent for `seconds` once `after` content tokens are out (0 = before any chunk)."""

    seconds: float
    after: int = 0


@dataclass(frozen=True, slots=True)
class DropFault:
    """Abort the connection once `after` content tokens are out."""

    after: int


@dataclass(frozen=True, slots=True)
class StreamErrorFault:
    """Send `error` as an in-stream error event after `after` content tokens."""

    after: int
    error: ErrorFault


@dataclass(frozen=True, slots=True)
class LayoutFault:
    """A legal but unusual stream layout (`interleave`: parallel tool calls mixed)."""

    name: str


@dataclass(frozen=True, slots=True)
class FilterFault:
    """The provider's content filter steps in: on the prompt (`after` None), or on
    the answer once `after` content tokens are out. Each dialect says it its own
    way (Azure's 400 `content_filter` or `finish_reason: content_filter`, Gemini's
    `blockReason` or `finishReason: SAFETY`, Bedrock's `guardrail_intervened`)."""

    after: int | None = None


Fault = ErrorFault | StallFault | DropFault | StreamErrorFault | LayoutFault | FilterFault

# Error kinds and the HTTP status each usually has.
ERROR_KINDS: Final[Mapping[str, int]] = {
    "bad_request": 400,
    "unauthorized": 401,
    "forbidden": 403,
    "not_found": 404,
    "rate_limited": 429,
    "quota": 429,
    "context": 400,
    "overloaded": 503,
    "server": 500,
}
_BY_STATUS: Final[Mapping[str, str]] = {
    "400": "bad_request",
    "401": "unauthorized",
    "403": "forbidden",
    "404": "not_found",
    "500": "server",
    "502": "server",
    "503": "server",
    "504": "server",
}


class MockError(Exception):
    """An error a mock answers with; its provider's middleware renders the body.

    `type` and `code` use the provider's own vocabulary (the dialect chooses them);
    `kind` is the neutral name from `ERROR_KINDS`, for dialects that map it.
    """

    def __init__(
        self,
        status: int,
        message: str,
        type_: str,
        code: str | None = None,
        param: str | None = None,
        headers: Mapping[str, str] | None = None,
        kind: str = "bad_request",
    ) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.type = type_
        self.code = code
        self.param = param
        self.headers = dict(headers or {})
        self.kind = kind


def bad_request(message: str, param: str | None = None, code: str | None = None) -> MockError:
    return MockError(400, message, "invalid_request_error", code, param)


def mask_key(key: str) -> str:
    """What a 401 may show of a presented key: never more than its last 4 characters."""
    # Short keys would be mostly revealed by their tail, so they get no tail at all.
    return "****" + key[-4:] if len(key) >= 12 else "****"


def retry_headers(fault: ErrorFault) -> dict[str, str]:
    headers = {}
    if fault.retry_after is not None:
        headers["retry-after"] = fault.retry_after
    if fault.retry_after_ms is not None:
        headers["retry-after-ms"] = fault.retry_after_ms
    return headers


def _seconds(text: str, spec: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise FaultSpecError(f"bad number of seconds in fault spec {spec!r}") from None
    if not math.isfinite(value) or value < 0:
        raise FaultSpecError(f"seconds must be finite and >= 0 in fault spec {spec!r}")
    return value


def _count(text: str, spec: str) -> int:
    if not text.isdigit():
        raise FaultSpecError(f"bad token count in fault spec {spec!r}")
    return int(text)


def _rate_limit(options: str, spec: str) -> ErrorFault:
    retry_after: str | None = None
    retry_after_ms: str | None = None
    for option in filter(None, options.split(",")):
        name, _, value = option.partition("=")
        _seconds(value, spec)  # validates; the header keeps the caller's spelling
        if name == "retry-after":
            retry_after = value
        elif name == "retry-after-ms":
            retry_after_ms = value
        else:
            raise FaultSpecError(f"unknown 429 option {name!r} in fault spec {spec!r}")
    return ErrorFault("rate_limited", 429, retry_after=retry_after, retry_after_ms=retry_after_ms)


def _error(spec: str) -> ErrorFault | None:
    head, _, rest = spec.strip().partition(":")
    if head == "429":
        return _rate_limit(rest, spec)
    if rest:
        return None
    if head in _BY_STATUS:
        return ErrorFault(_BY_STATUS[head], int(head))
    if head in ("quota", "overloaded", "context"):
        return ErrorFault(head, ERROR_KINDS[head])
    return None


def parse_fault(spec: str) -> Fault:
    """Parse one spec of the grammar above; raises `FaultSpecError` otherwise."""
    error = _error(spec)
    if error is not None:
        return error
    head, _, rest = spec.strip().partition(":")
    if head == "stall":
        return StallFault(_seconds(rest, spec))
    if head == "stall-after":
        count, _, seconds = rest.partition(":")
        return StallFault(_seconds(seconds, spec), after=_count(count, spec))
    if head == "drop-after":
        return DropFault(_count(rest, spec))
    if head == "stream-error-after":
        count, _, inner = rest.partition(":")
        error = _error(inner) if inner else ErrorFault("overloaded", 503)
        if error is None:
            raise FaultSpecError(f"unknown error {inner!r} in fault spec {spec!r}")
        return StreamErrorFault(_count(count, spec), error)
    if head == "interleave" and not rest:
        return LayoutFault(head)
    if head == "filtered" and not rest:
        return FilterFault()
    if head == "filtered-after":
        return FilterFault(_count(rest, spec))
    raise FaultSpecError(f"unknown fault spec {spec!r}")


def fault_label(fault: Fault) -> str:
    if isinstance(fault, ErrorFault):
        return fault.kind if fault.kind in ("quota", "overloaded", "context") else str(fault.status)
    if isinstance(fault, DropFault):
        return "drop-after"
    if isinstance(fault, StreamErrorFault):
        return "stream-error"
    if isinstance(fault, LayoutFault):
        return fault.name
    if isinstance(fault, FilterFault):
        return "filtered" if fault.after is None else "filtered-after"
    return "stall-after" if fault.after else "stall"


@dataclass(slots=True)
class Stats:
    """Counters behind `GET /_mock/stats` (per process).

    `open_streams` is a gauge, so a test can check that no client left a stream
    half-read. `connections` lists the server's live connections; the server
    installs it once it exists (see `providers.mock.server.start_mock`).
    """

    requests: Counter[str] = field(default_factory=Counter)
    faults: Counter[str] = field(default_factory=Counter)
    streams_started: int = 0
    streams_completed: int = 0
    streams_dropped: int = 0
    streams_abandoned: int = 0
    open_streams: int = 0
    connections: Callable[[], Sequence[object]] | None = None

    def snapshot(self, asking: object = None) -> dict[str, Any]:
        """Counters as JSON; the connection `asking` (the admin request's) is not counted."""
        live = self.connections() if self.connections is not None else []
        return {
            "requests": dict(self.requests),
            "faults_injected": sum(self.faults.values()),
            "faults_by_kind": dict(self.faults),
            "streams_started": self.streams_started,
            "streams_completed": self.streams_completed,
            "streams_dropped": self.streams_dropped,
            "streams_abandoned": self.streams_abandoned,
            "open_streams": self.open_streams,
            "open_connections": sum(1 for c in live if c is not asking),
        }


@dataclass(slots=True)
class _Queued:
    fault: Fault
    remaining: int
    model: str | None


class FaultBook:
    """Chooses the fault, if any, for each request (see the module docstring)."""

    def __init__(self, rate: float, kind: str, seed: int, stats: Stats) -> None:
        self._rate = rate
        self._random_fault = parse_fault(kind)
        self._rng = random.Random(seed)
        self._queue: list[_Queued] = []
        self._stats = stats

    def queue(self, fault: Fault, times: int, model: str | None) -> None:
        self._queue.append(_Queued(fault, times, model))

    def clear(self) -> int:
        cleared = len(self._queue)
        self._queue.clear()
        return cleared

    @property
    def pending(self) -> list[dict[str, Any]]:
        return [
            {"kind": fault_label(q.fault), "remaining": q.remaining, "model": q.model}
            for q in self._queue
        ]

    def pick(self, header: str | None, model: str | None) -> Fault | None:
        """The fault for one request; raises `FaultSpecError` for a bad header spec."""
        fault = parse_fault(header) if header else self._take_queued(model)
        # Draw on every request so the random sequence does not depend on the others.
        if self._rate and self._rng.random() < self._rate and fault is None:
            fault = self._random_fault
        if fault is not None:
            self._stats.faults[fault_label(fault)] += 1
        return fault

    def _take_queued(self, model: str | None) -> Fault | None:
        for entry in self._queue:
            if entry.model is None or entry.model == model:
                entry.remaining -= 1
                if entry.remaining <= 0:
                    self._queue.remove(entry)
                return entry.fault
        return None


def add_admin_routes(app: web.Application, book: FaultBook, stats: Stats) -> None:
    """Mount `/_mock/faults` and `/_mock/stats` (unauthenticated: a test-only surface)."""

    async def queue_fault(request: web.Request) -> web.Response:
        try:
            body = await request.json()
        except ValueError:
            return _admin_error("Body must be JSON.")
        if not isinstance(body, dict) or not isinstance(body.get("spec"), str):
            return _admin_error("'spec' (a fault spec string) is required.")
        times, model = body.get("times", 1), body.get("model")
        if not isinstance(times, int) or isinstance(times, bool) or times < 1:
            return _admin_error("'times' must be an integer >= 1.")
        if model is not None and not isinstance(model, str):
            return _admin_error("'model' must be a string or null.")
        try:
            fault = parse_fault(body["spec"])
        except FaultSpecError as exc:
            return _admin_error(str(exc))
        book.queue(fault, times, model)
        return web.json_response({"queued": book.pending}, status=201)

    async def clear_faults(request: web.Request) -> web.Response:
        return web.json_response({"cleared": book.clear()})

    async def get_stats(request: web.Request) -> web.Response:
        snapshot = stats.snapshot(asking=request.protocol)
        return web.json_response({**snapshot, "queued_faults": book.pending})

    app.router.add_post("/_mock/faults", queue_fault)
    app.router.add_delete("/_mock/faults", clear_faults)
    app.router.add_get("/_mock/stats", get_stats)


def _admin_error(message: str) -> web.Response:
    return web.json_response({"error": {"message": message}}, status=400)
