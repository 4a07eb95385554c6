"""Traces: a producer's span carried in job.trace, continued by the worker's spans.

Every test makes its own SDK provider with an in-memory exporter and passes it in:
nothing global is set, so no span leaks from one test into another.
"""

from __future__ import annotations

import base64
import os
import time
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode

from contracts.errors import RateLimited
from contracts.frames import Usage
from contracts.jobs import ChatJob, Credential, EmbedJob, Job, Message, Target
from contracts.tracing import TRACEPARENT, with_trace_context
from providers.core.types import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    Secret,
    StreamEnd,
    StreamEvent,
    TextDelta,
)
from providers.registry import ProviderRegistry
from providers.retry import RetryPolicy
from workers.credentials import CredentialResolver
from workers.crypto import Keyring, seal
from workers.execute import Executor, ProviderCallCrashed, RunState
from workers.tracing import JobTracer, note_retry

TENANT = "guest"
KEY = "sk-trace-canary-0123456789"
USAGE = Usage(input_tokens=11, output_tokens=7, total_tokens=18, cached_input_tokens=4)


class Answers:
    """A provider that answers every call (streamed or not) with the same usage."""

    async def chat(self, req: ChatRequest, secret: Secret) -> ChatResult:
        return ChatResult(
            message=Message(role="assistant", content="hi"), finish_reason="stop", usage=USAGE
        )

    async def stream_chat(self, req: ChatRequest, secret: Secret) -> AsyncIterator[StreamEvent]:
        yield TextDelta("h")
        yield TextDelta("i")
        yield StreamEnd(finish_reason="stop", usage=USAGE)

    async def embed(self, req: EmbedRequest, secret: Secret) -> EmbedResult:
        return EmbedResult(data=b"\0" * 8, dims=2, count=1, usage=Usage(input_tokens=3))


class Throttled:
    """A provider that is always over its rate limit."""

    def __init__(self) -> None:
        self.calls = 0

    async def chat(self, req: ChatRequest, secret: Secret) -> ChatResult:
        self.calls += 1
        raise RateLimited("slow down", provider_request_id="req_throttled")


class Crashes:
    """A provider library that blows up quoting the key."""

    async def chat(self, req: ChatRequest, secret: Secret) -> ChatResult:
        raise RuntimeError(f"bad header {secret.api_key}")


class Stream:
    """What the executor needs of a reply stream."""

    first_delta_at = None

    def text(self, piece: str) -> None: ...

    def tool(self, delta: Any) -> None: ...

    def refusal(self, piece: str) -> None: ...


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    made = TracerProvider(shutdown_on_exit=False)
    made.add_span_processor(SimpleSpanProcessor(exporter))
    yield made
    made.shutdown()


@pytest.fixture(scope="module")
def ring() -> Keyring:
    return Keyring.from_env({"INTEGRATION_CRYPTO_KEY": base64.b64encode(os.urandom(32)).decode()})


def target(ring: Keyring, provider: str, model: str = "m-1") -> Target:
    envelope = seal(ring, provider, {"api_key": KEY}, tenant=TENANT)
    return Target(provider=provider, model=model, credential=Credential(sealed=envelope))


def chat_job(ring: Keyring, *, stream: bool = False) -> Job:
    return ChatJob(
        v=1,
        request_id="req-1",
        messages=[Message(role="user", content="hello")],
        stream=stream,
        target=target(ring, "openai", "gpt-test"),
    )


def executor(ring: Keyring, tracer: JobTracer, **adapters: object) -> Executor:
    registry = ProviderRegistry()
    for name, adapter in adapters.items():
        registry.register_adapter(name, adapter)
    policy = RetryPolicy(max_attempts=2, backoff_base=0.001, backoff_cap=0.001)
    return Executor(registry, CredentialResolver(ring), policy, tracer=tracer)


def produced(provider: TracerProvider, job: Job) -> tuple[Job, ReadableSpan]:
    """`job` as FleetClient would publish it from inside a producer's span."""
    producer = provider.get_tracer("producer-app")
    with producer.start_as_current_span("handle user request", kind=SpanKind.PRODUCER) as span:
        job = with_trace_context(job)
    assert isinstance(span, ReadableSpan)
    return job, span


def by_name(spans: tuple[ReadableSpan, ...], name: str) -> list[ReadableSpan]:
    return [s for s in spans if s.name == name]


def only(spans: tuple[ReadableSpan, ...], name: str) -> ReadableSpan:
    [span] = by_name(spans, name)
    return span


def parent_id(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


@pytest.mark.parametrize("stream", [False, True])
async def test_worker_spans_continue_the_producers_trace(
    ring: Keyring, provider: TracerProvider, exporter: InMemorySpanExporter, stream: bool
) -> None:
    job, producer_span = produced(provider, chat_job(ring, stream=stream))
    assert job.trace[TRACEPARENT].startswith("00-")
    tracer = JobTracer(provider)
    published_us = time.time_ns() // 1000 - 5_000  # five ms in the queue

    # The worker's side runs outside the producer's span: only job.trace links them.
    traced = tracer.start_job(
        job,
        attempt=1,
        tenant=TENANT,
        queue="llm.chat",
        published_us=published_us,
        message_id="req-1/0",
        body_size=123,
    )
    fields = await executor(ring, tracer, openai=Answers()).run(
        job,
        Stream(),  # type: ignore[arg-type]
        RunState(tenant=TENANT),
    )
    with tracer.reply("llm.reply.guest.abc"):
        pass
    traced.end()
    assert fields["usage"] == USAGE

    spans = exporter.get_finished_spans()
    process = only(spans, "process llm.chat")
    assert {trace_id(s) for s in spans} == {trace_id(producer_span)}
    assert process.kind is SpanKind.CONSUMER
    assert parent_id(process) == span_id(producer_span)
    assert [link.context.span_id for link in process.links] == [span_id(producer_span)]
    attributes = dict(process.attributes or {})
    assert attributes["llm_fleet.request_id"] == "req-1"
    assert attributes["llm_fleet.attempt"] == 1
    assert attributes["llm_fleet.tenant"] == TENANT
    assert attributes["llm_fleet.kind"] == "chat"
    assert attributes["llm_fleet.queue"] == "llm.chat"
    assert attributes["messaging.system"] == "rabbitmq"
    assert attributes["messaging.operation.type"] == "process"
    assert attributes["messaging.message.id"] == "req-1/0"
    assert process.status.status_code is StatusCode.UNSET

    waited = only(spans, "queue wait")
    assert parent_id(waited) == span_id(process)
    assert waited.start_time == published_us * 1000
    assert waited.end_time == process.start_time

    credential = only(spans, "credential open")
    assert parent_id(credential) == span_id(process)
    assert dict(credential.attributes or {})["llm_fleet.credential.kind"] == "sealed"

    call = only(spans, "chat gpt-test")
    assert call.kind is SpanKind.CLIENT and parent_id(call) == span_id(process)
    assert dict(call.attributes or {}) == {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": "openai",
        "gen_ai.request.model": "gpt-test",
        "gen_ai.request.stream": stream,
        "gen_ai.response.model": "gpt-test",
        "gen_ai.response.finish_reasons": ("stop",),
        "gen_ai.usage.input_tokens": 11,
        "gen_ai.usage.output_tokens": 7,
        "gen_ai.usage.cache_read.input_tokens": 4,
        "llm_fleet.provider": "openai",
        "llm_fleet.target_position": 0,
    }

    reply = only(spans, "send")
    assert parent_id(reply) == span_id(process)
    assert dict(reply.attributes or {})["messaging.operation.type"] == "send"


async def test_embeddings_are_named_as_the_conventions_name_them(
    ring: Keyring, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = JobTracer(provider)
    job = EmbedJob(v=1, request_id="e", inputs=["x"], target=target(ring, "mistral", "embed-1"))
    traced = tracer.start_job(job, attempt=1, tenant=TENANT, queue="llm.embed")
    await executor(ring, tracer, mistral=Answers()).run(
        job,
        Stream(),  # type: ignore[arg-type]
        RunState(tenant=TENANT),
    )
    traced.end()
    spans = exporter.get_finished_spans()
    call = only(spans, "embeddings embed-1")
    attributes = dict(call.attributes or {})
    assert attributes["gen_ai.operation.name"] == "embeddings"
    assert attributes["gen_ai.provider.name"] == "mistral_ai"  # the conventions' name
    assert attributes["llm_fleet.provider"] == "mistral"  # the fleet's
    # No trace context in the job: the attempt is a root of its own, linked to nothing.
    process = only(spans, "process llm.embed")
    assert process.parent is None and not process.links
    assert "queue wait" not in {s.name for s in spans}  # no x-published-us: no wait known


async def test_redelivered_attempts_are_siblings_under_the_producer(
    ring: Keyring, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    job, producer_span = produced(provider, chat_job(ring))
    tracer = JobTracer(provider)
    for attempt in (1, 2):  # the first worker died; the broker redelivered the job
        tracer.start_job(job, attempt=attempt, tenant=TENANT, queue="llm.chat").end()
    attempts = by_name(exporter.get_finished_spans(), "process llm.chat")
    assert [dict(s.attributes or {})["llm_fleet.attempt"] for s in attempts] == [1, 2]
    assert len({span_id(s) for s in attempts}) == 2
    for span in attempts:
        assert parent_id(span) == span_id(producer_span)
        assert [link.context.span_id for link in span.links] == [span_id(producer_span)]


async def test_a_failing_provider_attempt_records_its_error_and_the_fallback_answers(
    ring: Keyring, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = JobTracer(provider)
    throttled = Throttled()
    job = ChatJob(
        v=1,
        request_id="req-2",
        messages=[Message(role="user", content="x")],
        stream=False,
        target=target(ring, "bedrock", "titan-test"),
        fallbacks=[target(ring, "anthropic", "claude-test")],
    )
    traced = tracer.start_job(job, attempt=1, tenant=TENANT, queue="llm.chat")
    fields = await executor(ring, tracer, bedrock=throttled, anthropic=Answers()).run(
        job,
        Stream(),  # type: ignore[arg-type]
        RunState(tenant=TENANT),
    )
    traced.end()
    assert fields["target"].provider == "anthropic" and throttled.calls == 2

    spans = exporter.get_finished_spans()
    failed = only(spans, "chat titan-test")
    attributes = dict(failed.attributes or {})
    assert attributes["error.type"] == "rate_limited"
    assert attributes["gen_ai.provider.name"] == "aws.bedrock"
    assert attributes["http.response.status_code"] == 429
    assert attributes["llm_fleet.provider_request_id"] == "req_throttled"
    assert attributes["llm_fleet.retries"] == 1
    assert "gen_ai.response.model" not in attributes
    assert failed.status.status_code is StatusCode.ERROR
    assert failed.status.description == "slow down"
    [retry] = failed.events
    assert retry.name == "retry" and dict(retry.attributes or {})["error.type"] == "rate_limited"

    answered = only(spans, "chat claude-test")
    attributes = dict(answered.attributes or {})
    assert attributes["llm_fleet.target_position"] == 1 and "error.type" not in attributes
    assert answered.status.status_code is StatusCode.UNSET
    # Both targets' calls belong to the one attempt; so do both credential opens.
    process = only(spans, "process llm.chat")
    for span in [failed, answered, *by_name(spans, "credential open")]:
        assert parent_id(span) == span_id(process)
    assert len(by_name(spans, "credential open")) == 2


async def test_a_crash_is_recorded_by_its_type_only(
    ring: Keyring, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = JobTracer(provider)
    job = chat_job(ring)
    traced = tracer.start_job(job, attempt=1, tenant=TENANT, queue="llm.chat")
    with pytest.raises(ProviderCallCrashed):
        await executor(ring, tracer, openai=Crashes()).run(
            job,
            Stream(),  # type: ignore[arg-type]
            RunState(tenant=TENANT),
        )
    traced.failed("internal")
    traced.end()
    spans = exporter.get_finished_spans()
    call = only(spans, "chat gpt-test")
    assert dict(call.attributes or {})["error.type"] == "RuntimeError"
    assert call.status.description == "RuntimeError"
    process = only(spans, "process llm.chat")
    assert dict(process.attributes or {})["error.type"] == "internal"
    assert process.status.status_code is StatusCode.ERROR
    for span in spans:  # the key the library quoted is nowhere in the trace
        assert KEY not in repr(span.to_json())


async def test_an_attempt_that_failed_says_why(
    ring: Keyring, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    tracer = JobTracer(provider)
    traced = tracer.start_job(chat_job(ring), attempt=3, tenant=TENANT, queue="llm.chat")
    traced.failed(RateLimited("provider said slow down"))
    traced.end()
    [process] = exporter.get_finished_spans()
    assert dict(process.attributes or {})["error.type"] == "rate_limited"
    assert process.status.status_code is StatusCode.ERROR
    assert process.status.description == "provider said slow down"


async def test_nothing_is_made_or_exported_when_off(
    ring: Keyring, provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    job, _ = produced(provider, chat_job(ring))
    exporter.clear()  # the producer's own span
    tracer = JobTracer()  # off: no provider given
    assert not tracer.enabled
    traced = tracer.start_job(job, attempt=1, tenant=TENANT, queue="llm.chat", published_us=1)
    await executor(ring, tracer, openai=Answers()).run(
        job,
        Stream(),  # type: ignore[arg-type]
        RunState(tenant=TENANT),
    )
    with tracer.reply("q"):
        note_retry(RateLimited("x"), 0.1)  # no span current: nothing to note it on
    traced.failed("internal")
    traced.end()
    assert exporter.get_finished_spans() == ()
