"""What tracing costs a job: `python -m bench.tracing [--quick] [--out DIR]`.

A micro benchmark (no broker, no provider): it times the tracing calls the worker
makes for one job attempt (workers/runtime.py and workers/execute.py: the attempt's
span, its queue wait, a credential open, one provider call with its answer, the
final frame's publish) and the producer's `with_trace_context`, for:

- off: what a worker runs with no exporter configured (`JobTracer()`);
- api-noop: the OpenTelemetry API's no-op provider driven as if on, i.e. what
  "off" would cost without the worker's own guard;
- sdk: the SDK recording every span into a batch processor whose exporter drops
  them (the cost of tracing on, short of the network).

Each figure is the median over rounds of the mean time per job. Spans are per
attempt and per provider call, never per token, so nothing here grows with the
answer's length. Prints a table and writes `<out>/tracing.json`.
"""

from __future__ import annotations

import argparse
import functools
import statistics
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter, SpanExportResult

from bench import charts, report
from bench.harness import BenchContext
from contracts.frames import Usage
from contracts.jobs import ChatJob, Credential, Job, Message, Target
from contracts.tracing import with_trace_context
from workers.execute import RunState
from workers.tracing import JobTracer

NAME = "tracing"
DEFAULT_OUT = Path(__file__).resolve().parent / "results"
FIELDS: dict[str, Any] = {
    "usage": Usage(input_tokens=120, output_tokens=50, total_tokens=170),
    "finish_reason": "stop",
}


class _Drop(SpanExporter):
    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        return SpanExportResult.SUCCESS


def _job(trace_context: dict[str, str]) -> Job:
    return ChatJob(
        v=1,
        request_id="bench-1",
        messages=[Message(role="user", content="hi")],
        target=Target(provider="openai", model="gpt-bench", credential=Credential(id="c-1")),
        trace=trace_context,
    )


def _one_attempt(tracer: JobTracer, job: Job, published_us: int, state: RunState) -> None:
    """The calls one job attempt makes, in the worker's order."""
    traced = tracer.start_job(
        job,
        attempt=1,
        tenant="bench",
        queue="llm.chat",
        published_us=published_us,
        message_id="bench-1/0",
        body_size=300,
    )
    with tracer.credential(job.target):
        pass
    with tracer.provider_call(job, job.target, state) as call:
        call.answered(FIELDS)
    with tracer.reply("llm.reply.bench.x"):
        pass
    traced.end()


def _nothing(job: Job, published_us: int) -> None:
    return None


def _per_call_ns(fn: Callable[[], object], loops: int, rounds: int) -> float:
    means = []
    for _ in range(rounds):
        started = time.perf_counter_ns()
        for _ in range(loops):
            fn()
        means.append((time.perf_counter_ns() - started) / loops)
    return statistics.median(means)


def measure(quick: bool) -> dict[str, Any]:
    loops, rounds = (500, 3) if quick else (20_000, 7)
    sdk = TracerProvider(shutdown_on_exit=False)
    # Large enough that the batch never blocks the loop: drops are the exporter's job.
    sdk.add_span_processor(BatchSpanProcessor(_Drop(), max_queue_size=1 << 16))
    producer = sdk.get_tracer("bench-producer")
    with producer.start_as_current_span("producer"):
        carried = with_trace_context(_job({}))
    published_us = time.time_ns() // 1000
    tracers = {
        "off": JobTracer(),
        "api-noop": JobTracer(trace.NoOpTracerProvider()),
        "sdk": JobTracer(sdk),
    }
    state = RunState(tenant="bench")
    worker = {
        name: _per_call_ns(
            functools.partial(_one_attempt, tracer, carried, published_us, state), loops, rounds
        )
        for name, tracer in tracers.items()
    }
    # The loop and call alone, to read the figures above against.
    worker["baseline"] = _per_call_ns(lambda: _nothing(carried, published_us), loops, rounds)
    plain = _job({})
    no_span = _per_call_ns(lambda: with_trace_context(plain), loops, rounds)
    with producer.start_as_current_span("producer"):
        in_span = _per_call_ns(lambda: with_trace_context(plain), loops, rounds)
    sdk.shutdown()
    return {
        "method": (
            "median over rounds of the mean wall time per call, one thread, no broker: "
            "worker = the tracing calls of one job attempt (start_job, credential, "
            "provider_call + answered, reply, end); producer = with_trace_context"
        ),
        "loops": loops,
        "rounds": rounds,
        "worker_ns_per_attempt": worker,
        "producer_ns_per_job": {"no_span": no_span, "in_span": in_span},
    }


def _print(data: dict[str, Any]) -> None:
    worker = data["worker_ns_per_attempt"]
    producer = data["producer_ns_per_job"]
    report.print_table(
        "Tracing cost per job attempt (worker)",
        ["tracer", "µs per attempt"],
        [(name, ns / 1000) for name, ns in worker.items()],
    )
    report.print_table(
        "Trace context per job (producer)",
        ["producer", "µs per job"],
        [(name, ns / 1000) for name, ns in producer.items()],
    )


async def run(ctx: BenchContext) -> dict[str, Any]:
    """For bench/run.py's suite (needs no broker)."""
    data = measure(ctx.quick)
    ctx.save(NAME, data)
    _print(data)
    worker = data["worker_ns_per_attempt"]
    charts.grouped_bars(
        ctx.out / f"{NAME}.png",
        "Tracing cost per job attempt (worker)",
        list(worker),
        {"µs per attempt": [ns / 1000 for ns in worker.values()]},
        "µs",
    )
    return data


def main(argv: Sequence[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.tracing", description=__doc__)
    p.add_argument("--quick", action="store_true", help="fewer loops (a smoke run)")
    p.add_argument("--out", type=Path, default=DEFAULT_OUT, help="where tracing.json goes")
    args = p.parse_args(argv)
    data = measure(args.quick)
    report.write_json(args.out, NAME, {"benchmark": NAME, "quick": args.quick, **data})
    _print(data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
