"""A trace end to end: a producer's span, FleetClient, RabbitMQ, a worker process, the provider.

The worker is a real process exporting OTLP over HTTP (as it would to a collector)
to a receiver this test runs, which decodes what arrives with opentelemetry-proto.
The producer's span comes from an SDK provider the test makes (nothing global).
"""

from __future__ import annotations

import asyncio
import gzip
import time
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiohttp import web
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue, KeyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span, Status
from opentelemetry.sdk.trace import TracerProvider

from contracts.client import FleetClient
from contracts.errors import Unauthorized
from contracts.frames import Delta, Final
from contracts.jobs import Message
from providers.mock.server import RunningMock
from tests.integration.conftest import SpawnWorker, sealed_target
from tests.integration.test_fleet import fault_model
from workers.crypto import Keyring

pytestmark = pytest.mark.integration


def _value(value: AnyValue) -> Any:
    kind = value.WhichOneof("value")
    if kind == "array_value":
        return tuple(_value(v) for v in value.array_value.values)
    return getattr(value, kind) if kind else None


def _attributes(pairs: Any) -> dict[str, Any]:
    return {kv.key: _value(kv.value) for kv in pairs if isinstance(kv, KeyValue)}


@dataclass
class Received:
    """One exported span with its resource's attributes."""

    span: Span
    resource: dict[str, Any]

    @property
    def name(self) -> str:
        return self.span.name

    @property
    def attributes(self) -> dict[str, Any]:
        return _attributes(self.span.attributes)


@dataclass
class Collector:
    """An OTLP/HTTP receiver (the traces endpoint only)."""

    url: str = ""
    spans: list[Received] = field(default_factory=list)

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        if request.headers.get("Content-Encoding") == "gzip":
            body = gzip.decompress(body)
        export = ExportTraceServiceRequest()
        export.ParseFromString(body)
        for resource_spans in export.resource_spans:
            resource = _attributes(resource_spans.resource.attributes)
            for scope in resource_spans.scope_spans:
                self.spans.extend(Received(span, resource) for span in scope.spans)
        return web.Response(
            body=ExportTraceServiceResponse().SerializeToString(),
            content_type="application/x-protobuf",
        )

    def trace(self, trace_id: int) -> list[Received]:
        wanted = trace_id.to_bytes(16, "big")
        return [r for r in self.spans if r.span.trace_id == wanted]

    async def wait_for(self, trace_id: int, *names: str, within: float = 20.0) -> list[Received]:
        """The trace's spans once all of `names` have arrived (the exporter batches)."""
        give_up = time.monotonic() + within
        while True:
            spans = self.trace(trace_id)
            if set(names) <= {s.name for s in spans}:
                return spans
            if time.monotonic() > give_up:
                raise AssertionError(f"spans {names} never arrived; got {[s.name for s in spans]}")
            await asyncio.sleep(0.05)


@pytest.fixture
async def collector(free_port: int) -> AsyncIterator[Collector]:
    received = Collector(url=f"http://127.0.0.1:{free_port}")
    app = web.Application()
    app.router.add_post("/v1/traces", received.receive)
    runner = web.AppRunner(app)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", free_port).start()
    yield received
    await runner.cleanup()


@pytest.fixture
def producer() -> Iterator[TracerProvider]:
    made = TracerProvider(shutdown_on_exit=False)
    yield made
    made.shutdown()


async def traced_worker(spawn_worker: SpawnWorker, collector: Collector) -> None:
    await spawn_worker(
        env={
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector.url,
            "OTEL_BSP_SCHEDULE_DELAY": "50",  # ms: spans leave soon after they end
            "OTEL_SERVICE_NAME": "fleet-under-test",
        }
    )


def one(spans: list[Received], name: str) -> Received:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def child_of(span: Received, parent: Received | int) -> bool:
    parent_id = parent if isinstance(parent, int) else int.from_bytes(parent.span.span_id, "big")
    return span.span.parent_span_id == parent_id.to_bytes(8, "big")


async def test_a_trace_runs_from_the_producers_span_to_the_provider_call(
    spawn_worker: SpawnWorker,
    client: FleetClient,
    keyring: Keyring,
    mock: RunningMock,
    collector: Collector,
    producer: TracerProvider,
) -> None:
    await traced_worker(spawn_worker, collector)
    # The provider is rate limited once: the retry is an event on the provider's span.
    model = await fault_model(mock, "traced", "429:retry-after=0.05", 1)
    with producer.get_tracer("assistant-api").start_as_current_span("answer user") as root:
        events = [
            event
            async for event in client.stream_chat(
                sealed_target(keyring, model=model), [Message(role="user", content="hello")]
            )
        ]
    final = events[-1]
    assert isinstance(final, Final) and any(isinstance(e, Delta) for e in events)
    assert final.metrics.retries == 1 and final.usage is not None
    context = root.get_span_context()

    names = ("process llm.chat", "queue wait", "credential open", f"chat {model}", "send")
    spans = await collector.wait_for(context.trace_id, *names)
    process = one(spans, "process llm.chat")
    assert child_of(process, context.span_id)  # the producer's span is the parent
    assert [link.span_id for link in process.span.links] == [context.span_id.to_bytes(8, "big")]
    assert process.span.kind == Span.SPAN_KIND_CONSUMER
    assert process.attributes["llm_fleet.request_id"] == final.request_id
    assert process.attributes["llm_fleet.attempt"] == 1
    assert process.attributes["llm_fleet.kind"] == "chat"
    assert process.attributes["llm_fleet.queue"] == "llm.chat"
    assert process.attributes["llm_fleet.tenant"]  # the producer's broker login
    assert process.span.status.code == Status.STATUS_CODE_UNSET
    assert process.resource["service.name"] == "fleet-under-test"
    assert process.resource["service.instance.id"].startswith("test-worker-")

    call = one(spans, f"chat {model}")
    assert child_of(call, process) and call.span.kind == Span.SPAN_KIND_CLIENT
    assert call.attributes["gen_ai.operation.name"] == "chat"
    assert call.attributes["gen_ai.provider.name"] == "mock"
    assert call.attributes["gen_ai.request.model"] == model
    assert call.attributes["gen_ai.response.model"] == model
    assert call.attributes["gen_ai.request.stream"] is True
    assert call.attributes["gen_ai.usage.input_tokens"] == final.usage.input_tokens
    assert call.attributes["gen_ai.usage.output_tokens"] == final.usage.output_tokens
    assert call.attributes["llm_fleet.retries"] == 1
    [retry] = call.span.events
    assert retry.name == "retry"
    assert _attributes(retry.attributes)["error.type"] == "rate_limited"

    for name in ("queue wait", "credential open", "send"):
        assert child_of(one(spans, name), process), name


async def test_a_failed_job_marks_its_spans(
    spawn_worker: SpawnWorker,
    client: FleetClient,
    keyring: Keyring,
    collector: Collector,
    producer: TracerProvider,
) -> None:
    await traced_worker(spawn_worker, collector)
    tracer = producer.get_tracer("assistant-api")
    with tracer.start_as_current_span("answer user") as root, pytest.raises(Unauthorized):
        await client.chat(
            sealed_target(keyring, key="sk-not-a-key-the-mock-knows"),
            [Message(role="user", content="hello")],
        )
    spans = await collector.wait_for(
        root.get_span_context().trace_id, "process llm.chat", "chat mock-chat"
    )
    process = one(spans, "process llm.chat")
    assert process.attributes["error.type"] == "unauthorized"
    assert process.span.status.code == Status.STATUS_CODE_ERROR
    call = one(spans, "chat mock-chat")
    assert child_of(call, process)
    assert call.attributes["error.type"] == "unauthorized"
    assert call.attributes["http.response.status_code"] == 401
    assert call.span.status.code == Status.STATUS_CODE_ERROR
    assert "send" not in {s.name for s in spans}  # no final frame was published
    assert not any("sk-not-a-key" in str(s.span) for s in spans)
