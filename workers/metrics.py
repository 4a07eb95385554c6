"""Prometheus metrics for one worker process (served on /metrics by workers.health).

Per-job figures come from one place, `observe(record)`, fed the `AttemptRecord` the
runtime settles every delivery with, so metrics, the audit trail and the final frame
agree. The GenAI ones follow the OpenTelemetry GenAI semantic conventions (names,
label keys, well-known values, bucket boundaries) and are labelled with the target
that *answered*, a fallback maybe, not the one the job asked for first. The rest
are fleet metrics, plus a few hooks for what is not per job (in-flight jobs, the
broker connection, reply messages, the audit writer). Label values are bounded by
`workers.metric_labels`. Bucket choices are explained where they are defined.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Final, Generic, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from contracts.frames import Metrics, Usage
from workers.metric_labels import (
    MODELS_PER_PROVIDER,
    OPERATION_NAMES,
    LabelBounds,
    semconv_provider,
)
from workers.outcome import AttemptRecord

# gen_ai.client.operation.duration: the conventions' boundaries (0.01 s doubling to
# 81.92 s) with two more at each end: calls to a local or mock server take a few ms,
# and long reasoning answers take minutes.
OPERATION_BUCKETS: Final = (
    0.0025, 0.005,
    0.01, 0.02, 0.04, 0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24, 20.48, 40.96, 81.92,
    163.84, 327.68,
)  # fmt: skip
# gen_ai.client.token.usage: the conventions' boundaries, powers of 4 from 1 to 4^13.
TOKEN_BUCKETS: Final = tuple(float(4**i) for i in range(14))
# gen_ai.server.time_to_first_token: the conventions' boundaries (1 ms to 10 s), plus
# 20/40/80 s because reasoning models often think longer than 10 s before answering.
TTFT_BUCKETS: Final = (
    0.001, 0.005, 0.01, 0.02, 0.04, 0.06, 0.08, 0.1, 0.25, 0.5, 0.75, 1.0, 2.5, 5.0, 7.5, 10.0,
    20.0, 40.0, 80.0,
)  # fmt: skip
# gen_ai.server.time_per_output_token: the conventions' boundaries (10 ms to 2.5 s),
# plus 1, 2.5 and 5 ms: hosted models decode at 200 to 1,000 tokens a second.
TPOT_BUCKETS: Final = (
    0.001, 0.0025, 0.005,
    0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.75, 1.0, 2.5,
)  # fmt: skip
# Worker time per job: from a few ms (embeddings against a local server) to the
# longest generations.
JOB_BUCKETS: Final = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300)
# Queue wait: about a millisecond when workers keep up, minutes when a backlog builds.
QUEUE_BUCKETS: Final = (
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 300,
)  # fmt: skip
# One audit batch round trip: under a millisecond on a local database; seconds
# means PostgreSQL is struggling (an outage shows as the outage gauge instead).
AUDIT_BUCKETS: Final = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5)

# Kinds whose answers the price table should know; a verify check may well be free.
_BILLED_KINDS: Final = frozenset({"chat", "embed", "rerank"})


M = TypeVar("M", Counter, Histogram)


class _Series(Generic[M]):
    """A labelled metric whose children are remembered by their label values.

    prometheus_client checks the values and takes a lock on every `labels()` call:
    remembering the children halves what observe() costs a job. The values are
    bounded (workers.metric_labels), so this dict is too.
    """

    __slots__ = ("_children", "metric")

    def __init__(self, metric: M) -> None:
        self.metric: M = metric
        self._children: dict[tuple[str, ...], M] = {}

    def __call__(self, *values: str) -> M:
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.metric.labels(*values)
        return child


class WorkerMetrics:
    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        providers: Iterable[str] | None = None,
        models_per_provider: int = MODELS_PER_PROVIDER,
    ) -> None:
        """`providers`: the registry's names, the only provider labels allowed (others
        are `other`); without it provider names are capped like model names."""
        self.registry = registry or CollectorRegistry()
        self.bounds = LabelBounds(providers, models_per_provider=models_per_provider)
        self._genai(self.registry)
        self._fleet(self.registry)
        self._hooks(self.registry)
        self._broker_sessions = 0
        self._audit_down = False

    def _genai(self, r: CollectorRegistry) -> None:
        target = ["gen_ai_operation_name", "gen_ai_provider_name", "gen_ai_request_model"]
        self.operation_duration = _Series(
            Histogram(
                "gen_ai_client_operation_duration_seconds",
                "Time in provider calls per job (retries and failed fallbacks included), by the "
                "target that answered or failed last; error_type is the error code, or empty.",
                [*target, "error_type"],
                buckets=OPERATION_BUCKETS,
                registry=r,
            )
        )
        self.token_usage = _Series(
            Histogram(
                "gen_ai_client_token_usage",
                "Input and output tokens per answered job, as the provider reported them.",
                [*target, "gen_ai_token_type"],
                buckets=TOKEN_BUCKETS,
                registry=r,
            )
        )
        self.time_to_first_token = _Series(
            Histogram(
                "gen_ai_server_time_to_first_token_seconds",
                "Worker start to the first token of an answered stream.",
                target,
                buckets=TTFT_BUCKETS,
                registry=r,
            )
        )
        self.time_per_output_token = _Series(
            Histogram(
                "gen_ai_server_time_per_output_token_seconds",
                "Time per output token after the first of an answered stream: "
                "(first token to the end of the answer) / (output tokens - 1).",
                target,
                buckets=TPOT_BUCKETS,
                registry=r,
            )
        )

    def _fleet(self, r: CollectorRegistry) -> None:
        self.jobs_total = _Series(
            Counter(
                "llm_fleet_jobs_total",
                "Jobs settled, by kind, the target that answered or failed last (empty when "
                "none was reached) and outcome (ok, an error code, or reply_queue_gone).",
                ["kind", "provider", "model", "outcome"],
                registry=r,
            )
        )
        self.job_time = _Series(
            Histogram(
                "llm_fleet_job_seconds",
                "Worker start to the final or error frame, per job.",
                ["kind"],
                buckets=JOB_BUCKETS,
                registry=r,
            )
        )
        self.queue_time = _Series(
            Histogram(
                "llm_fleet_queue_seconds",
                "Publish to worker start, per job.",
                ["kind"],
                buckets=QUEUE_BUCKETS,
                registry=r,
            )
        )
        self.provider_retries = _Series(
            Counter(
                "llm_fleet_provider_retries_total",
                "Provider calls retried, by the provider that answered or failed last.",
                ["provider"],
                registry=r,
            )
        )
        self.fallbacks = _Series(
            Counter(
                "llm_fleet_fallbacks_total",
                "Jobs moved on to their next target, by the provider that failed.",
                ["provider"],
                registry=r,
            )
        )
        self.dead_letters = _Series(
            Counter(
                "llm_fleet_dead_lettered_total",
                "Jobs this worker moved to llm.dead, by error code.",
                ["code"],
                registry=r,
            )
        )
        self.tokens = _Series(
            Counter(
                "llm_fleet_tokens_total",
                "Tokens of answered jobs by the target that answered, by kind: input, output, and "
                "the differently billed parts cached_input and cache_write (of input) and "
                "reasoning (of output), counted only when the provider reports them; a "
                "rerank billed by searches counts search_units (not tokens).",
                ["provider", "model", "kind"],
                registry=r,
            )
        )
        self.cost = _Series(
            Counter(
                "llm_fleet_cost_usd_total",
                "What answered jobs cost by the fleet's price table, in US dollars "
                "(known costs only: see llm_fleet_cost_unknown_total).",
                ["provider", "model"],
                registry=r,
            )
        )
        self.cost_unknown = _Series(
            Counter(
                "llm_fleet_cost_unknown_total",
                "Answered chat, embed and rerank jobs whose cost the price table does not know.",
                ["provider", "model"],
                registry=r,
            )
        )

    def _hooks(self, r: CollectorRegistry) -> None:
        self.inflight = Gauge("llm_fleet_jobs_inflight", "Jobs being processed now.", registry=r)
        self.broker_connected = Gauge(
            "llm_fleet_broker_connected", "1 while connected to RabbitMQ.", registry=r
        )
        self.broker_reconnects = Counter(
            "llm_fleet_broker_reconnects_total",
            "Broker sessions opened after the first (each follows a lost connection).",
            registry=r,
        )
        self.frames = Counter("llm_fleet_frames_total", "Reply frames published.", registry=r)
        self.reply_messages = Counter(
            "llm_fleet_reply_messages_total",
            "AMQP messages carrying reply frames (frames are batched per reply queue).",
            registry=r,
        )
        self.reply_bytes = Counter(
            "llm_fleet_reply_bytes_total", "Bytes of reply message bodies published.", registry=r
        )
        self.audit_write_seconds = Histogram(
            "llm_fleet_audit_write_seconds",
            "One audit batch written: the round trip to PostgreSQL.",
            buckets=AUDIT_BUCKETS,
            registry=r,
        )
        self.audit_rows = Counter("llm_fleet_audit_rows_total", "Audit rows written.", registry=r)
        self.audit_pending_rows = Gauge(
            "llm_fleet_audit_pending_rows",
            "Audit rows waiting to be written (their jobs wait for their ack).",
            registry=r,
        )
        self.audit_outage = Gauge(
            "llm_fleet_audit_outage",
            "1 while the audit database cannot be written (acks wait; nothing is dropped).",
            registry=r,
        )
        self.audit_outages = Counter(
            "llm_fleet_audit_outages_total", "Audit database outages begun.", registry=r
        )

    # -- per job -------------------------------------------------------------

    def observe(self, record: AttemptRecord) -> None:
        """Count one settled delivery (call once per record, after it is recorded)."""
        b = self.bounds
        kind, outcome = b.kind(record.kind), b.outcome(record.status)
        provider = model = ""
        if record.target is not None:
            provider = b.provider(record.target.provider)
            model = b.model(provider, record.target.model)
        self.jobs_total(kind, provider, model, outcome).inc()
        for tried in record.tried:
            self.fallbacks(b.provider(tried.provider)).inc()
        if record.dead_lettered:
            self.dead_letters(outcome).inc()
        m = record.metrics
        if m is None:  # refused before it was decoded: there is nothing timed
            return
        self.job_time(kind).observe(m.total_ms / 1000)
        if m.queue_ms is not None:
            self.queue_time(kind).observe(m.queue_ms / 1000)
        if record.target is None or kind not in OPERATION_NAMES:
            return
        if m.retries > 0:
            self.provider_retries(provider).inc(m.retries)
        target = (OPERATION_NAMES[kind], semconv_provider(provider), model)
        if record.reached_provider:
            error_type = "" if outcome == "ok" else outcome
            self.operation_duration(*target, error_type).observe(m.provider_ms / 1000)
        if outcome == "ok":
            self._answered(kind, provider, model, target, m, record.usage)

    def _answered(
        self,
        kind: str,
        provider: str,
        model: str,
        target: tuple[str, str, str],
        m: Metrics,
        usage: Usage | None,
    ) -> None:
        if usage is not None:
            self._count_tokens(provider, model, usage)
            # Only counts the provider reported: an unreported 0 is not a data point.
            if usage.input_tokens > 0:
                self.token_usage(*target, "input").observe(usage.input_tokens)
            if usage.output_tokens > 0:
                self.token_usage(*target, "output").observe(usage.output_tokens)
        if m.ttft_ms is not None:
            self.time_to_first_token(*target).observe(m.ttft_ms / 1000)
            if usage is not None and usage.output_tokens > 1 and m.total_ms > m.ttft_ms:
                decode = (m.total_ms - m.ttft_ms) / 1000
                self.time_per_output_token(*target).observe(decode / (usage.output_tokens - 1))
        cost = m.cost_usd
        if cost is not None and math.isfinite(cost) and cost >= 0:
            self.cost(provider, model).inc(cost)
        elif cost is None and kind in _BILLED_KINDS:
            self.cost_unknown(provider, model).inc()

    def _count_tokens(self, provider: str, model: str, usage: Usage) -> None:
        for kind, count in (
            ("input", usage.input_tokens),
            ("output", usage.output_tokens),
            ("cached_input", usage.cached_input_tokens),
            ("cache_write", usage.cache_write_tokens),
            ("reasoning", usage.reasoning_tokens),
            ("search_units", usage.search_units),
        ):
            # None: not reported, which is not the same as none spent. A negative
            # count (an adapter bug) must not fail a job that was already answered.
            if count is not None and count >= 0:
                self.tokens(provider, model, kind).inc(count)

    # -- hooks: what is not per job ------------------------------------------
    # In-flight jobs: `inflight.inc()` when a job starts, `inflight.dec()` when it ends.

    def broker_up(self) -> None:
        """A broker session opened; every one after the first is a reconnect."""
        if self._broker_sessions:
            self.broker_reconnects.inc()
        self._broker_sessions += 1
        self.broker_connected.set(1)

    def broker_down(self) -> None:
        self.broker_connected.set(0)

    def reply_published(self, frames: int, nbytes: int) -> None:
        """One AMQP message of `frames` reply frames, `nbytes` long, confirmed."""
        self.reply_messages.inc()
        self.frames.inc(frames)
        self.reply_bytes.inc(nbytes)

    def audit_written(self, rows: int, seconds: float) -> None:
        """One audit batch of `rows` rows committed in `seconds`."""
        self.audit_rows.inc(rows)
        self.audit_write_seconds.observe(seconds)

    def audit_pending(self, rows: int) -> None:
        """Rows waiting to be written now (the writer calls this as its queue changes)."""
        self.audit_pending_rows.set(rows)

    def audit_database(self, *, down: bool) -> None:
        """The writer's view of PostgreSQL: `down=True` when a write failed and it is
        retrying, `down=False` once one succeeds again."""
        if down and not self._audit_down:
            self.audit_outages.inc()
        self._audit_down = down
        self.audit_outage.set(1 if down else 0)
