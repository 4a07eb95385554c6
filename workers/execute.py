"""Run one decoded job against its target (and fallbacks) and build the final frame fields.

Besides the answer, each target's call leaves in `RunState` what the frames report
about it: the provider's request id and its rate-limit budget, read from the last
response with the target provider's own header reader (`ProviderSpec.rate_limits`).
A job with `wait_on_rate_limit=False` is not retried on a rate-limit refusal: its
producer paces itself and gets the refusal at once, with the provider's wait.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import structlog

from contracts.brokers import BROKER_ERRORS
from contracts.catalog import ProviderInfo
from contracts.errors import (
    BadRequest,
    Cancelled,
    ContractError,
    Expired,
    FleetError,
    RateLimited,
)
from contracts.frames import (
    Answered,
    Embeddings,
    Metrics,
    RateLimit,
    VerifyInfo,
    tool_call_deltas,
)
from contracts.jobs import ChatJob, EmbedJob, Job, Message, RerankJob, Target, ToolCall, VerifyJob
from providers.core.api import forget_last_response, last_rate_limit_headers, last_request_id
from providers.core.rerank import checked_ranking
from providers.core.spec import Capability
from providers.core.types import (
    ChatRequest,
    EmbedRequest,
    RefusalDelta,
    RerankRequest,
    Secret,
    StreamEnd,
    TextDelta,
    ToolDelta,
)
from providers.options import ModelOptions
from providers.registry import Provider, ProviderRegistry
from providers.retry import RetryPolicies, RetryPolicy, call_with_retry, stream_with_retry
from workers.audit_rows import scrubbed_json
from workers.config import ConfigError
from workers.credentials import CredentialResolver
from workers.logs import LIVE_SECRETS
from workers.reply import ReplyQueueGone, ReplyStream
from workers.tracing import JobTracer, note_retry

log = structlog.get_logger("llm_fleet.job")
T = TypeVar("T")


class InputRejected(Exception):
    """The job can never succeed as written (unknown provider, unusable credential…).

    Such jobs are answered with an error frame *and* dead-lettered for operators.
    """

    def __init__(self, error: FleetError) -> None:
        super().__init__(error.message)
        self.error = error


class ProviderCallCrashed(Exception):
    """An unexpected error inside a provider call, reduced to its type name.

    The original was logged while the job's secrets were still registered with the
    log redactor; its message may quote third-party text, so it does not travel on.
    """


# Raised by the reply stream, not the provider: the runtime decides what they mean.
_RUNTIME_ERRORS: tuple[type[BaseException], ...] = (ReplyQueueGone, *BROKER_ERRORS)

# Errors that say nothing about other targets; trying a fallback would not help.
_NO_FALLBACK = (ContractError, Cancelled, Expired)


@dataclass(slots=True)
class RunState:
    """Per-attempt bookkeeping that ends up in the final frame's metrics."""

    started: float = field(default_factory=time.monotonic)
    # The tenant the broker says sent the job (its validated user_id): the only
    # one whose credentials (and those shared with it) the job may use.
    tenant: str = ""
    # Targets tried before the one now running (each failed over to the next).
    tried: list[Target] = field(default_factory=list)
    # The target being tried now, and at the end the one that answered (or failed last).
    target: Target | None = None
    # The provider's id for the last call that failed (x-request-id and the like).
    provider_request_id: str | None = None
    # The budget the target's last response reported (its rate-limit headers), for
    # the final or error frame.
    rate_limit: RateLimit | None = None
    # The job's `wait_on_rate_limit`: False answers a rate-limit refusal at once.
    wait_on_rate_limit: bool = True
    # Scrubbed JSON of the job and of the answer, kept only with FLEET_AUDIT_BODIES.
    request_body: str | None = None
    response_body: str | None = None
    deadline: float | None = None  # time.monotonic() value
    retries: int = 0
    provider_time: float = 0.0
    first_token: float | None = None

    def on_retry(self, exc: FleetError, wait: float) -> None:
        """Before each retry's sleep: count it, or end the retries of a job that does
        not wait out rate limits.

        Raised from here (the retry policy calls this before it sleeps, for calls and
        for streams alike) the refusal ends the call as itself, so the producer gets
        `rate_limited` with the provider's `retry_after` and the slot is free at
        once. Quota errors are never retried anyway; 5xx, timeouts and dropped
        connections keep the policy.
        """
        if not self.wait_on_rate_limit and isinstance(exc, RateLimited):
            raise exc
        self.retries += 1
        note_retry(exc, wait)
        log.warning("provider_retry", code=exc.code.value, wait_s=round(wait, 3), error=exc.message)

    async def call(self, policy: RetryPolicy, fn: Callable[[], Awaitable[T]]) -> T:
        """One provider call under the retry policy; its time counts as provider time."""
        t0 = time.monotonic()
        try:
            return await call_with_retry(policy, fn, deadline=self.deadline, on_retry=self.on_retry)
        finally:
            self.provider_time += time.monotonic() - t0

    def metrics(self, frames: int, queue_ms: float | None) -> Metrics:
        now = time.monotonic()
        return Metrics(
            queue_ms=queue_ms,
            ttft_ms=None if self.first_token is None else (self.first_token - self.started) * 1000,
            provider_ms=self.provider_time * 1000,
            total_ms=(now - self.started) * 1000,
            retries=self.retries,
            frames=frames,
        )


class _ToolAssembler:
    """Concatenate streamed tool-call fragments by index (parallel calls interleave)."""

    def __init__(self) -> None:
        self._calls: dict[int, list[str]] = {}
        self._meta: dict[int, dict[str, str]] = {}

    def add(self, index: int, id_: str | None, name: str | None, arguments: str) -> None:
        meta = self._meta.setdefault(index, {"id": "", "name": ""})
        if id_:
            meta["id"] = id_
        if name:
            meta["name"] = name
        self._calls.setdefault(index, []).append(arguments)

    def calls(self) -> list[ToolCall] | None:
        if not self._calls:
            return None
        return [
            ToolCall(id=self._meta[i]["id"], name=self._meta[i]["name"], arguments="".join(parts))
            for i, parts in sorted(self._calls.items())
        ]


@dataclass(frozen=True, slots=True)
class _Call:
    """What a handler needs for one target: who to call, with what, and where to report."""

    target: Target
    provider: Provider
    secret: Secret
    stream: ReplyStream
    state: RunState
    policy: RetryPolicy

    async def run(self, fn: Callable[[], Awaitable[T]]) -> T:
        return await self.state.call(self.policy, fn)


Handler = Callable[[Any, _Call], Awaitable[dict[str, Any]]]


async def _chat(job: ChatJob, call: _Call) -> dict[str, Any]:
    req = ChatRequest(
        model=call.target.model,
        messages=job.messages,
        tools=job.tools,
        options=ModelOptions.from_mapping(job.options),
    )
    if job.tools:
        call.provider.require(Capability.TOOLS)
    if job.stream and call.provider.supports(Capability.STREAM):
        return await _stream_chat(req, call)
    adapter = call.provider.chat()
    res = await call.run(lambda: adapter.chat(req, call.secret))
    if job.stream:
        # The API cannot stream: the whole answer goes out as one delta, so a
        # streaming producer reads it the way it reads every other answer.
        if res.message.content:
            call.stream.text(res.message.text())
        if res.message.refusal:
            call.stream.refusal(res.message.refusal)
        for delta in tool_call_deltas(res.message):
            call.stream.tool(delta)
    return {"message": res.message, "finish_reason": res.finish_reason, "usage": res.usage}


async def _stream_chat(req: ChatRequest, call: _Call) -> dict[str, Any]:
    state, stream = call.state, call.stream
    parts: list[str] = []
    refusal: list[str] = []
    tools = _ToolAssembler()
    end: StreamEnd | None = None
    t0 = time.monotonic()
    adapter = call.provider.streamer()
    events = stream_with_retry(
        call.policy,
        lambda: adapter.stream_chat(req, call.secret),
        deadline=state.deadline,
        on_retry=state.on_retry,
    )
    try:
        # When the reply stream raises (its queue is gone, the broker failed), the
        # provider response must close now: left to the garbage collector, the
        # provider keeps generating for nobody and the connection stays taken.
        async with contextlib.aclosing(events):
            async for ev in events:
                # Exact type checks: this loop runs once per token.
                if type(ev) is TextDelta:
                    if state.first_token is None:
                        state.first_token = time.monotonic()
                    parts.append(ev.text)
                    stream.text(ev.text)
                elif type(ev) is ToolDelta:
                    if state.first_token is None:
                        state.first_token = time.monotonic()
                    d = ev.delta
                    tools.add(d.index, d.id, d.name, d.arguments)
                    stream.tool(d)
                elif type(ev) is RefusalDelta:
                    refusal.append(ev.text)
                    stream.refusal(ev.text)
                elif type(ev) is StreamEnd:
                    end = ev
    finally:
        state.provider_time += time.monotonic() - t0
    message = Message(
        role="assistant",
        content="".join(parts) or None,
        tool_calls=tools.calls(),
        refusal="".join(refusal) or None,
    )
    return {
        "message": message,
        "finish_reason": end.finish_reason if end else None,
        **({"usage": end.usage} if end else {}),
    }


async def _embed(job: EmbedJob, call: _Call) -> dict[str, Any]:
    req = EmbedRequest(
        model=call.target.model,
        inputs=job.inputs,
        input_type=job.input_type,
        dimensions=job.dimensions,
    )
    adapter = call.provider.embedder()
    res = await call.run(lambda: adapter.embed(req, call.secret))
    embeddings = Embeddings(dims=res.dims, count=res.count, data=res.data)
    return {"embeddings": embeddings, "usage": res.usage}


async def _rerank(job: RerankJob, call: _Call) -> dict[str, Any]:
    req = RerankRequest(
        model=call.target.model, query=job.query, documents=job.documents, top_n=job.top_n
    )
    adapter = call.provider.reranker()
    res = await call.run(lambda: adapter.rerank(req, call.secret))
    items = checked_ranking(call.provider.name, res.items, len(job.documents), job.top_n)
    return {"rerank": items, "usage": res.usage}


async def _verify(job: VerifyJob, call: _Call) -> dict[str, Any]:
    adapter = call.provider.verifier()
    res = await call.run(lambda: adapter.verify(call.secret))
    return {"verify": VerifyInfo(ok=res.ok, detail=res.detail)}


HANDLERS: dict[type[Any], Handler] = {
    ChatJob: _chat,
    EmbedJob: _embed,
    RerankJob: _rerank,
    VerifyJob: _verify,
}


def _response_of(fields: dict[str, Any]) -> dict[str, Any]:
    """The answer as the audit keeps it: vectors are summarised, not stored."""
    out = {k: v for k, v in fields.items() if k not in ("embeddings", "metrics")}
    vectors = fields.get("embeddings")
    if isinstance(vectors, Embeddings):
        out["embeddings"] = {"count": vectors.count, "dims": vectors.dims}
    return out


def _rate_limit_of(provider: Provider) -> RateLimit | None:
    """The budget the last response's headers report, read in the provider's dialect."""
    headers = last_rate_limit_headers()
    if not headers:
        return None
    try:
        return provider.spec.rate_limits(headers)
    except Exception:
        # The built-in readers never raise; a custom spec's that does must not fail a
        # job the provider answered.
        log.exception("rate_limit_headers_unreadable", provider=provider.name)
        return None


class Executor:
    """Resolves provider and credential per target and walks the fallback list."""

    def __init__(
        self,
        registry: ProviderRegistry,
        credentials: CredentialResolver,
        retry: RetryPolicy | RetryPolicies,
        *,
        store_wait: float = 30.0,
        tracer: JobTracer | None = None,
        keep_bodies: bool = False,
    ) -> None:
        self._registry = registry
        self._tracer = tracer or JobTracer()
        # FLEET_AUDIT_BODIES: the audit trail keeps each attempt's request and answer.
        self._keep_bodies = keep_bodies
        self._credentials = credentials
        self._retry = retry if isinstance(retry, RetryPolicies) else RetryPolicies(retry)
        unknown = sorted(set(self._retry.by_provider) - set(registry.names()))
        if unknown:  # a misspelt name would leave that provider on the default policy
            raise ConfigError(
                f"FLEET_PROVIDER_RETRY_* name unknown providers: {', '.join(unknown)} "
                f"(known: {', '.join(registry.names())})"
            )
        self._store_wait = store_wait
        # While the credential store is unreachable, keep trying (within the job's
        # deadline) rather than failing every job the moment PostgreSQL blinks.
        self._store_retry = RetryPolicy(max_attempts=1000, backoff_base=0.2, backoff_cap=2.0)

    def catalog(self) -> list[ProviderInfo]:
        """The providers this worker can call, as producers see them."""
        return self._registry.describe()

    async def _open_secret(self, target: Target, state: RunState) -> Secret:
        give_up = time.monotonic() + self._store_wait
        deadline = give_up if state.deadline is None else min(state.deadline, give_up)
        with self._tracer.credential(target):
            return await call_with_retry(
                self._store_retry,
                lambda: self._credentials.open(target.provider, target.credential, state.tenant),
                deadline=deadline,
                on_retry=lambda exc, wait: log.warning(
                    "credential_store_unavailable", error=exc.message, wait_s=round(wait, 2)
                ),
            )

    async def _prepare(self, target: Target, state: RunState) -> tuple[Provider, Secret]:
        try:
            provider = self._registry.get(target.provider)
            secret = await self._open_secret(target, state)
        except (BadRequest, ContractError) as exc:
            raise InputRejected(exc) from None
        except FleetError as exc:
            if exc.retryable:  # e.g. the credential store is briefly unreachable
                raise
            raise InputRejected(exc) from None
        return provider, secret

    async def run(self, job: Job, stream: ReplyStream, state: RunState) -> dict[str, Any]:
        handler = HANDLERS[type(job)]
        targets = [job.target, *job.fallbacks]
        state.wait_on_rate_limit = job.wait_on_rate_limit
        for i, target in enumerate(targets):
            if state.target is not None:
                state.tried.append(state.target)
            state.target = target
            state.rate_limit = None  # an earlier target's budget says nothing of this one
            provider, secret = await self._prepare(target, state)
            with LIVE_SECRETS.holding(secret.values()):
                if self._keep_bodies:
                    # Scrubbed while the key is open, so every form of it is known.
                    state.request_body = scrubbed_json(job, secret.values())
                forget_last_response()
                try:
                    policy = self._retry.for_provider(target.provider)
                    with self._tracer.provider_call(job, target, state, position=i) as traced:
                        fields = await handler(
                            job, _Call(target, provider, secret, stream, state, policy)
                        )
                        traced.answered(fields)
                    state.provider_request_id = last_request_id()
                    if self._keep_bodies:
                        state.response_body = scrubbed_json(_response_of(fields), secret.values())
                except ContractError as exc:  # e.g. an option value that cannot be mapped
                    raise InputRejected(exc) from None
                except FleetError as exc:
                    state.provider_request_id = exc.provider_request_id
                    last = i == len(targets) - 1
                    if last or isinstance(exc, _NO_FALLBACK) or stream.first_delta_at is not None:
                        raise
                    log.warning(
                        "fallback",
                        failed=target.provider,
                        model=target.model,
                        code=exc.code.value,
                        next=targets[i + 1].provider,
                    )
                    continue
                except _RUNTIME_ERRORS:
                    raise  # the runtime's to handle: nothing here involves the provider's text
                except Exception as exc:
                    # Logged here, while this job's secrets are registered with the log
                    # redactor; what travels on carries only the exception's type.
                    log.exception("provider_call_crashed")
                    raise ProviderCallCrashed(type(exc).__name__) from None
                finally:
                    # However the call ended (answered, refused, cut by the deadline),
                    # its last response's budget goes with the frame that reports it.
                    state.rate_limit = _rate_limit_of(provider)
            fields["target"] = Answered(provider=target.provider, model=target.model)
            return fields
        raise AssertionError("unreachable: the loop returns or raises")
