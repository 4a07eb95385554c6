"""Traces of the jobs a worker runs: OpenTelemetry spans that continue the producer's trace.

Each delivery attempt is one CONSUMER span ("process llm.chat", the messaging
conventions' push-based "process" span), whose parent is the producer's span
carried in `job.trace` (W3C trace context, see contracts/tracing.py) and which also
*links* to that span, as the conventions ask of every process span. So a redelivered
job shows as sibling attempts under the producer's span, each with its `attempt`
number (the new worker cannot know the dead one's span, so attempts link to the
producer, not to each other). Under it:

    process llm.chat          CONSUMER   request id, attempt, submission, tenant, kind, queue
    ├── queue wait            INTERNAL   x-published-us → the worker took it (explicit times)
    ├── credential open       INTERNAL   per target tried
    ├── chat gpt-4o-mini      CLIENT     per target tried (fallbacks too), GenAI attributes;
    │                                    retries inside it are "retry" events, as the GenAI
    │                                    conventions have one span cover its retries
    └── send                  CLIENT     the final frame published and confirmed

A job without trace context gets a root span of its own. Jobs refused before they
were decoded have no span: their trace context cannot be read.

Off unless an exporter is configured (workers/config.py `TracingSettings`): then
`JobTracer` holds no provider and every method returns a shared do-nothing object
without touching OpenTelemetry. Spans are per attempt and per provider call, never
per token. GenAI names (`gen_ai.operation.name`, `gen_ai.provider.name`) are the
ones /metrics uses (workers/metric_labels.py). Errors set the span status and
`error.type` to the fleet's error code (a closed set); messages are the ones the
producer was sent, never exception text from a provider library (it may quote a key).
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol

import structlog
from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Link, Span, SpanKind, Status, StatusCode, TracerProvider
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from contracts import topology as t
from contracts.errors import FleetError
from contracts.frames import Usage
from contracts.jobs import Job, Target, job_kind
from workers.config import ConfigError, TracingSettings
from workers.metric_labels import OPERATION_NAMES, semconv_provider

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter

__all__ = ["JobSpan", "JobTracer", "note_retry", "open_tracing"]

log = structlog.get_logger("llm_fleet.tracing")

SCOPE = "llm_fleet.worker"
_PROPAGATOR = TraceContextTextMapPropagator()
_MAX_DESCRIPTION = 300  # characters of an error message kept in a span status

Attributes = dict[str, str | bool | int | float | Sequence[str]]


class _Retries(Protocol):
    retries: int


def _fail(span: Span, error: BaseException | str) -> None:
    """Status ERROR with `error.type`: the fleet's code, or an exception's type name only."""
    if isinstance(error, FleetError):
        kind, description = error.code.value, error.message[:_MAX_DESCRIPTION]
    elif isinstance(error, str):
        kind = description = error
    else:
        kind = description = type(error).__qualname__
    span.set_attribute("error.type", kind)
    span.set_status(Status(StatusCode.ERROR, description))


def _usage_attributes(usage: Usage) -> Attributes:
    attributes: Attributes = {
        "gen_ai.usage.input_tokens": usage.input_tokens,
        "gen_ai.usage.output_tokens": usage.output_tokens,
    }
    optional = {
        "gen_ai.usage.cache_read.input_tokens": usage.cached_input_tokens,
        "gen_ai.usage.cache_write.input_tokens": usage.cache_write_tokens,
        "gen_ai.usage.reasoning.output_tokens": usage.reasoning_tokens,
        "llm_fleet.usage.search_units": usage.search_units,
    }
    attributes.update({name: value for name, value in optional.items() if value is not None})
    return attributes


class _Scope:
    """A span made current for a `with` block; an exception leaving it marks it failed."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span
        self._token: object = None

    def __enter__(self) -> _Scope:
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if exc is not None:
            _fail(self._span, exc)
        otel_context.detach(self._token)  # type: ignore[arg-type]
        self._span.end()

    def answered(self, fields: Mapping[str, Any]) -> None:
        """What the provider answered: tokens, finish reason (call inside the block)."""


class _ProviderScope(_Scope):
    __slots__ = ("_model", "_retries", "_state")

    def __init__(self, span: Span, model: str, state: _Retries) -> None:
        super().__init__(span)
        self._model = model
        self._state = state
        self._retries = state.retries

    def answered(self, fields: Mapping[str, Any]) -> None:
        # The fleet asks for one model and adapters do not report another, so the
        # model that answered is the one the target named.
        attributes: Attributes = {"gen_ai.response.model": self._model}
        usage = fields.get("usage")
        if isinstance(usage, Usage):
            attributes.update(_usage_attributes(usage))
        finish = fields.get("finish_reason")
        if isinstance(finish, str):
            attributes["gen_ai.response.finish_reasons"] = [finish]
        self._span.set_attributes(attributes)

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        retries = self._state.retries - self._retries
        if retries:
            self._span.set_attribute("llm_fleet.retries", retries)
        if isinstance(exc, FleetError):
            if exc.provider_status is not None:
                self._span.set_attribute("http.response.status_code", exc.provider_status)
            if exc.provider_request_id:
                self._span.set_attribute("llm_fleet.provider_request_id", exc.provider_request_id)
        super().__exit__(exc_type, exc, tb)


class _Off:
    """Tracing off: one shared object standing in for every span and scope."""

    __slots__ = ()

    def __enter__(self) -> _Off:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def answered(self, fields: Mapping[str, Any]) -> None:
        return None

    def failed(self, error: BaseException | str) -> None:
        return None

    def end(self) -> None:
        return None


_OFF = _Off()


class JobSpan:
    """One delivery attempt's span, current in the job's task from `start_job` to `end`."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Span) -> None:
        self._span = span
        self._token = otel_context.attach(trace.set_span_in_context(span))

    def failed(self, error: BaseException | str) -> None:
        """The attempt ended in an error (a FleetError, or an outcome such as
        "reply_queue_gone"); the producer's error code becomes `error.type`."""
        _fail(self._span, error)

    def end(self) -> None:
        otel_context.detach(self._token)
        self._span.end()


class JobTracer:
    """Makes the spans of a worker's jobs from the provider it is given; none when off.

    Tests pass a provider of their own (with an in-memory exporter); the worker gets
    one from `open_tracing`. Nothing global is set, so providers never leak between
    tests or into code that did not ask for them.
    """

    def __init__(self, provider: TracerProvider | None = None) -> None:
        self._provider = provider
        self.enabled = provider is not None
        self._tracer = (provider or trace.NoOpTracerProvider()).get_tracer(SCOPE)

    def start_job(
        self,
        job: Job,
        *,
        attempt: int,
        tenant: str,
        queue: str,
        published_us: object = None,
        message_id: str | None = None,
        body_size: int | None = None,
    ) -> JobSpan | _Off:
        """Open the attempt's span (and its queue-wait child) and make it current."""
        if not self.enabled:
            return _OFF
        taken_ns = time.time_ns()
        parent = _PROPAGATOR.extract(job.trace) if job.trace else otel_context.Context()
        producer = trace.get_current_span(parent).get_span_context()
        links = [Link(producer)] if producer.is_valid else []
        attributes: Attributes = {
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "process",
            "messaging.operation.name": "process",
            "messaging.destination.name": t.JOBS_EXCHANGE,
            "messaging.rabbitmq.destination.routing_key": queue,
            "messaging.message.conversation_id": job.request_id,
            "llm_fleet.request_id": job.request_id,
            "llm_fleet.attempt": attempt,
            "llm_fleet.submission": job.submission,
            "llm_fleet.tenant": tenant,
            "llm_fleet.kind": job_kind(job),
            "llm_fleet.queue": queue,
            "gen_ai.request.model": job.target.model,
            "llm_fleet.provider": job.target.provider,
        }
        if message_id:
            attributes["messaging.message.id"] = message_id
        if body_size is not None:
            attributes["messaging.message.body.size"] = body_size
        span = self._tracer.start_span(
            f"process {queue}",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes=attributes,
            links=links,
            start_time=taken_ns,
        )
        if type(published_us) is int:
            # Since the producer published it: for a redelivery that includes the
            # earlier attempts (the same figure as the final frame's queue_ms).
            waited = self._tracer.start_span(
                "queue wait",
                context=trace.set_span_in_context(span),
                attributes={"messaging.rabbitmq.destination.routing_key": queue},
                start_time=min(published_us * 1000, taken_ns),
            )
            waited.end(end_time=taken_ns)
        return JobSpan(span)

    def credential(self, target: Target) -> _Scope | _Off:
        """The span of opening a target's credential (vault or sealed envelope)."""
        if not self.enabled:
            return _OFF
        attributes: Attributes = {
            "llm_fleet.provider": target.provider,
            "llm_fleet.credential.kind": "stored" if target.credential.id else "sealed",
        }
        if target.credential.id:
            attributes["llm_fleet.credential.id"] = target.credential.id
        return _Scope(self._tracer.start_span("credential open", attributes=attributes))

    def provider_call(
        self, job: Job, target: Target, state: _Retries, *, position: int = 0
    ) -> _Scope | _Off:
        """The GenAI client span of one target tried (`position` 0 is the job's own
        target, 1… its fallbacks), covering that target's retries."""
        if not self.enabled:
            return _OFF
        operation = OPERATION_NAMES[job_kind(job)]
        attributes: Attributes = {
            "gen_ai.operation.name": operation,
            "gen_ai.provider.name": semconv_provider(target.provider),
            "gen_ai.request.model": target.model,
            "llm_fleet.provider": target.provider,
            "llm_fleet.target_position": position,
        }
        stream = getattr(job, "stream", None)
        if isinstance(stream, bool):
            attributes["gen_ai.request.stream"] = stream
        span = self._tracer.start_span(
            f"{operation} {target.model}", kind=SpanKind.CLIENT, attributes=attributes
        )
        return _ProviderScope(span, target.model, state)

    def reply(self, reply_to: str) -> _Scope | _Off:
        """The span of publishing the final frame (through the default exchange)."""
        if not self.enabled:
            return _OFF
        attributes: Attributes = {
            "messaging.system": "rabbitmq",
            "messaging.operation.type": "send",
            "messaging.operation.name": "publish",
            "messaging.destination.name": "",
            "messaging.rabbitmq.destination.routing_key": reply_to,
        }
        # Reply queues are per producer instance: the name stays out of the span name.
        return _Scope(self._tracer.start_span("send", kind=SpanKind.CLIENT, attributes=attributes))

    def close(self) -> None:
        """Flush and stop the exporter of a provider from `open_tracing` (blocking)."""
        shutdown = getattr(self._provider, "shutdown", None)
        if shutdown is not None:
            shutdown()


def note_retry(exc: FleetError, wait: float) -> None:
    """A provider call is about to be retried: an event on the provider's span."""
    span = trace.get_current_span()
    if not span.is_recording():
        return
    attributes: Attributes = {"error.type": exc.code.value, "llm_fleet.retry.wait_s": wait}
    if exc.provider_status is not None:
        attributes["http.response.status_code"] = exc.provider_status
    span.add_event("retry", attributes)


def _exporter(name: str, settings: TracingSettings) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError:
        raise ConfigError(
            "an OTLP trace exporter is configured but not installed: pip install 'llm-fleet[otel]'"
        ) from None
    return OTLPSpanExporter(endpoint=settings.endpoint or None)


def open_tracing(settings: TracingSettings, *, instance_id: str) -> JobTracer:
    """The worker's tracer: exporting as `settings` say, or off (no provider at all)."""
    if not settings.exporters:
        return JobTracer()
    try:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError:
        raise ConfigError(
            "tracing is configured (OTEL_EXPORTER_OTLP_ENDPOINT / OTEL_TRACES_EXPORTER) but "
            "the OpenTelemetry SDK is not installed: pip install 'llm-fleet[otel]'"
        ) from None
    resource = Resource.create(
        {"service.name": settings.service_name, "service.instance.id": instance_id}
    )
    # The sampler (OTEL_TRACES_SAMPLER, parent-based by default: a producer's "not
    # sampled" is honoured) and the batch limits (OTEL_BSP_*) are the SDK's own settings.
    provider = SdkTracerProvider(resource=resource, shutdown_on_exit=False)
    for name in settings.exporters:
        provider.add_span_processor(BatchSpanProcessor(_exporter(name, settings)))
    log.info(
        "tracing_on",
        exporters=list(settings.exporters),
        endpoint=settings.endpoint or None,
        service_name=settings.service_name,
    )
    return JobTracer(provider)
