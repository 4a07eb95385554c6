"""The producer's side of a trace: what FleetClient puts in job.trace, and what it costs."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.trace import format_span_id, format_trace_id

from contracts.codec import decode_job, encode
from contracts.jobs import ChatJob, Credential, Job, Message, Target
from contracts.tracing import TRACEPARENT, TRACESTATE, current_trace_context, with_trace_context

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture
def provider() -> Iterator[TracerProvider]:
    made = TracerProvider(shutdown_on_exit=False)
    yield made
    made.shutdown()


def job(trace: dict[str, str] | None = None) -> Job:
    return ChatJob(
        v=1,
        request_id="r",
        messages=[Message(role="user", content="x")],
        target=Target(provider="mock", model="m", credential=Credential(id="c")),
        trace=trace or {},
    )


def test_the_current_span_travels_as_w3c_trace_context(provider: TracerProvider) -> None:
    with provider.get_tracer("app").start_as_current_span("request") as span:
        carried = with_trace_context(job())
    context = span.get_span_context()
    ids = f"{format_trace_id(context.trace_id)}-{format_span_id(context.span_id)}"
    assert carried.trace == {TRACEPARENT: f"00-{ids}-{context.trace_flags:02x}"}
    assert context.trace_flags.sampled
    # It is part of the job on the wire, as the worker decodes it.
    assert decode_job(encode(carried)).trace == carried.trace


def test_tracestate_travels_too(provider: TracerProvider) -> None:
    from opentelemetry import trace
    from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags, TraceState

    remote = SpanContext(
        trace_id=0x0AF7651916CD43DD8448EB211C80319C,
        span_id=0xB7AD6B7169203331,
        is_remote=True,
        trace_flags=TraceFlags(TraceFlags.SAMPLED),
        trace_state=TraceState([("vendor", "opaque")]),
    )
    with trace.use_span(NonRecordingSpan(remote)):
        carried = current_trace_context()
    assert carried == {
        TRACEPARENT: "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        TRACESTATE: "vendor=opaque",
    }


def test_a_context_the_caller_set_is_kept(provider: TracerProvider) -> None:
    theirs = {TRACEPARENT: "00-0af7651916cd43dd8448eb211c80319c-00f067aa0ba902b7-01"}
    original = job(theirs)
    with provider.get_tracer("app").start_as_current_span("request"):
        assert with_trace_context(original) is original


def test_without_a_span_the_job_is_unchanged() -> None:
    original = job()
    assert with_trace_context(original) is original
    assert current_trace_context() == {}


def test_a_producer_without_opentelemetry_imports_none_of_it() -> None:
    """Contracts must not need OpenTelemetry: a process that never opened a span pays a
    dict look-up, and nothing of OpenTelemetry is imported."""
    code = (
        "import sys\n"
        "from contracts.client import FleetClient\n"
        "from contracts.tracing import with_trace_context\n"
        "from contracts.jobs import VerifyJob, Target, Credential\n"
        "job = VerifyJob(v=1, request_id='r', target=Target(provider='p', model='m', "
        "credential=Credential(id='c')))\n"
        "assert with_trace_context(job) is job\n"
        "loaded = sorted(m for m in sys.modules if m.startswith('opentelemetry'))\n"
        "assert not loaded, loaded\n"
    )
    done = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
