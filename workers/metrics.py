"""Prometheus metrics for one worker process (served on /metrics by workers.health)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

from contracts.frames import Usage


class WorkerMetrics:
    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.jobs = Counter(
            "llm_fleet_jobs_total",
            "Jobs finished, by kind and outcome (error code or ok).",
            ["kind", "outcome"],
            registry=r,
        )
        self.dead_lettered = Counter(
            "llm_fleet_dead_lettered_total",
            "Jobs this worker moved to llm.dead, by error code.",
            ["code"],
            registry=r,
        )
        self.inflight = Gauge("llm_fleet_jobs_inflight", "Jobs being processed now.", registry=r)
        self.retries = Counter(
            "llm_fleet_provider_retries_total", "Provider calls retried.", ["provider"], registry=r
        )
        self.frames = Counter("llm_fleet_frames_total", "Reply frames published.", registry=r)
        self.reply_messages = Counter(
            "llm_fleet_reply_messages_total",
            "AMQP messages carrying reply frames (frames are batched per reply queue).",
            registry=r,
        )
        buckets = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
        self.job_seconds = Histogram(
            "llm_fleet_job_seconds", "Worker time per job.", ["kind"], buckets=buckets, registry=r
        )
        self.ttft_seconds = Histogram(
            "llm_fleet_time_to_first_token_seconds",
            "Worker start to first provider token.",
            ["provider"],
            buckets=buckets,
            registry=r,
        )
        self.queue_seconds = Histogram(
            "llm_fleet_queue_seconds", "Publish to worker start.", buckets=buckets, registry=r
        )
        self.broker_connected = Gauge(
            "llm_fleet_broker_connected", "1 while connected to RabbitMQ.", registry=r
        )
        self.tokens = Counter(
            "llm_fleet_tokens_total",
            "Tokens of answered jobs by the target that answered, by kind: input, output, and "
            "the differently billed parts cached_input and cache_write (of input) and "
            "reasoning (of output), counted only when the provider reports them; a "
            "rerank billed by searches counts search_units (not tokens).",
            ["provider", "model", "kind"],
            registry=r,
        )

    def count_tokens(self, provider: str, model: str, usage: Usage) -> None:
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
                self.tokens.labels(provider, model, kind).inc(count)
