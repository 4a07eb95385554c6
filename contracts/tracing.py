"""The producer's side of a trace: carry the caller's current span into the job it publishes.

When the producing application has an OpenTelemetry span open, `FleetClient` puts
that span's W3C trace context (`traceparent`, and `tracestate` when there is one)
into `job.trace`, and the worker continues the trace from there (see
workers/tracing.py). Only the W3C trace context travels: baggage is left out, as
it is the application's data and the job's `metadata` is the place for that.

OpenTelemetry is optional for producers. An application that has a span open has
necessarily imported `opentelemetry.trace`, so when that module is not loaded
there is nothing to carry and nothing is imported: the check costs one dict look-up.
"""

from __future__ import annotations

import sys

import msgspec

from contracts.jobs import Job

# The W3C Trace Context headers, as they travel in `job.trace`.
TRACEPARENT = "traceparent"
TRACESTATE = "tracestate"


def current_trace_context() -> dict[str, str]:
    """The current span's W3C trace context, or {} when no span is current."""
    api = sys.modules.get("opentelemetry.trace")
    if api is None:
        return {}
    span_context = api.get_current_span().get_span_context()
    if not span_context.is_valid:
        return {}
    # Imported here: a process that never opened a span never loads the propagator.
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    carrier: dict[str, str] = {}
    TraceContextTextMapPropagator().inject(carrier)
    return carrier


def with_trace_context(job: Job) -> Job:
    """`job` carrying the current span's trace context, unless it carries one already
    (a context the caller set is theirs and is never replaced)."""
    if job.trace:
        return job
    carried = current_trace_context()
    return msgspec.structs.replace(job, trace=carried) if carried else job
