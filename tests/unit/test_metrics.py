"""WorkerMetrics: every per-job metric fed by an AttemptRecord, the hooks, bounded labels."""

from __future__ import annotations

from typing import Any

import pytest
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from contracts.frames import Metrics, Usage
from workers.metric_labels import LabelBounds
from workers.metrics import WorkerMetrics
from workers.outcome import AttemptRecord, TargetRef

REGISTRY = ("openai", "anthropic", "bedrock", "cohere", "mock")
GPT = TargetRef(provider="openai", model="gpt-4o", credential_id="cred-1")
CLAUDE = TargetRef(provider="anthropic", model="claude-sonnet-4-5")


def record(**overrides: Any) -> AttemptRecord:
    """An answered, streamed chat job unless told otherwise."""
    fields: dict[str, Any] = {
        "request_id": "req-7f3a",
        "attempt": 1,
        "producer": "tenant-a",
        "kind": "chat",
        "queue": "llm.chat",
        "worker": "w1",
        "started_at": 1_700_000_000.0,
        "status": "ok",
        "target": GPT,
        "metrics": Metrics(
            queue_ms=2.0, ttft_ms=200.0, provider_ms=1000.0, total_ms=1100.0, cost_usd=0.0125
        ),
        "usage": Usage(input_tokens=100, output_tokens=51, total_tokens=151),
        "reached_provider": True,
    }
    fields.update(overrides)
    return AttemptRecord(**fields)


def observed(*records: AttemptRecord, **kwargs: Any) -> WorkerMetrics:
    metrics = WorkerMetrics(CollectorRegistry(), providers=REGISTRY, **kwargs)
    for r in records:
        metrics.observe(r)
    return metrics


def value(metrics: WorkerMetrics, name: str, **labels: str) -> float | None:
    return metrics.registry.get_sample_value(name, labels)


def series(metrics: WorkerMetrics, name: str) -> list[dict[str, str]]:
    """Label sets of every sample named `name`."""
    return [
        sample.labels
        for family in metrics.registry.collect()
        for sample in family.samples
        if sample.name == name
    ]


GENAI_GPT = {
    "gen_ai_operation_name": "chat",
    "gen_ai_provider_name": "openai",
    "gen_ai_request_model": "gpt-4o",
}


class TestOperationDuration:
    def test_provider_time_by_answering_target_without_error(self) -> None:
        m = observed(record())
        name = "gen_ai_client_operation_duration_seconds"
        assert value(m, f"{name}_sum", **GENAI_GPT, error_type="") == pytest.approx(1.0)
        assert value(m, f"{name}_count", **GENAI_GPT, error_type="") == 1
        assert value(m, f"{name}_bucket", **GENAI_GPT, error_type="", le="1.28") == 1
        assert value(m, f"{name}_bucket", **GENAI_GPT, error_type="", le="0.64") == 0

    def test_a_failure_is_labelled_with_its_error_code(self) -> None:
        m = observed(record(status="rate_limited", usage=None, error="429 from openai"))
        name = "gen_ai_client_operation_duration_seconds_count"
        assert value(m, name, **GENAI_GPT, error_type="rate_limited") == 1
        assert value(m, name, **GENAI_GPT, error_type="") is None

    def test_no_operation_when_no_provider_was_called(self) -> None:
        m = observed(record(status="expired", usage=None, reached_provider=False))
        assert series(m, "gen_ai_client_operation_duration_seconds_count") == []
        outcome = {"kind": "chat", "provider": "openai", "model": "gpt-4o", "outcome": "expired"}
        assert value(m, "llm_fleet_jobs_total", **outcome) == 1

    def test_operation_names_follow_the_conventions(self) -> None:
        m = observed(
            record(kind="embed", metrics=Metrics(provider_ms=10.0, total_ms=12.0)),
            record(kind="rerank", metrics=Metrics(provider_ms=10.0, total_ms=12.0)),
        )
        names = {s["gen_ai_operation_name"] for s in series(m, "gen_ai_client_token_usage_count")}
        assert names == {"embeddings", "rerank"}

    def test_provider_names_are_the_conventions_well_known_values(self) -> None:
        bedrock = TargetRef(provider="bedrock", model="anthropic.claude-3-haiku")
        m = observed(record(target=bedrock))
        (labels,) = series(m, "gen_ai_client_operation_duration_seconds_count")
        assert labels["gen_ai_provider_name"] == "aws.bedrock"
        # The fleet's own metrics keep the registry name operators configure.
        (jobs,) = series(m, "llm_fleet_jobs_total")
        assert jobs["provider"] == "bedrock"


class TestFallbackLabelsTheAnswer:
    def test_every_target_label_is_the_fallback_that_answered(self) -> None:
        m = observed(record(target=CLAUDE, tried=[GPT]))
        claude = {
            "gen_ai_operation_name": "chat",
            "gen_ai_provider_name": "anthropic",
            "gen_ai_request_model": "claude-sonnet-4-5",
        }
        for name in (
            "gen_ai_client_operation_duration_seconds_count",
            "gen_ai_client_token_usage_count",
            "gen_ai_server_time_to_first_token_seconds_count",
            "gen_ai_server_time_per_output_token_seconds_count",
        ):
            providers = {labels["gen_ai_provider_name"] for labels in series(m, name)}
            assert providers == {"anthropic"}, name
        assert value(m, "gen_ai_server_time_to_first_token_seconds_count", **claude) == 1
        tokens = {(s["provider"], s["model"]) for s in series(m, "llm_fleet_tokens_total")}
        assert tokens == {("anthropic", "claude-sonnet-4-5")}
        cost = {s["provider"] for s in series(m, "llm_fleet_cost_usd_total")}
        assert cost == {"anthropic"}

    def test_the_target_failed_from_counts_a_fallback(self) -> None:
        m = observed(record(target=CLAUDE, tried=[GPT]), record())
        assert value(m, "llm_fleet_fallbacks_total", provider="openai") == 1
        assert value(m, "llm_fleet_fallbacks_total", provider="anthropic") is None


class TestTokenUsage:
    def test_input_and_output_tokens_per_call(self) -> None:
        m = observed(record(), record(usage=Usage(input_tokens=3000, output_tokens=5)))
        name = "gen_ai_client_token_usage"
        assert value(m, f"{name}_sum", **GENAI_GPT, gen_ai_token_type="input") == 3100
        assert value(m, f"{name}_count", **GENAI_GPT, gen_ai_token_type="input") == 2
        assert value(m, f"{name}_sum", **GENAI_GPT, gen_ai_token_type="output") == 56
        # The conventions' buckets: powers of 4.
        assert value(m, f"{name}_bucket", **GENAI_GPT, gen_ai_token_type="input", le="256.0") == 1
        assert value(m, f"{name}_bucket", **GENAI_GPT, gen_ai_token_type="input", le="64.0") == 0

    def test_an_embedding_has_no_output_tokens(self) -> None:
        usage = Usage(input_tokens=40, total_tokens=40)
        m = observed(record(kind="embed", usage=usage, metrics=Metrics(total_ms=5.0)))
        types = {s["gen_ai_token_type"] for s in series(m, "gen_ai_client_token_usage_count")}
        assert types == {"input"}

    def test_a_failed_job_counts_no_tokens(self) -> None:
        m = observed(record(status="internal"))
        assert series(m, "gen_ai_client_token_usage_count") == []
        assert series(m, "llm_fleet_tokens_total") == []

    def test_fleet_token_counter_keeps_each_billed_kind(self) -> None:
        usage = Usage(
            input_tokens=100,
            output_tokens=40,
            total_tokens=140,
            cached_input_tokens=64,
            cache_write_tokens=5,
            reasoning_tokens=12,
        )
        m = observed(record(usage=usage), record(usage=usage))
        counted = {
            s["kind"]: value(m, "llm_fleet_tokens_total", **s)
            for s in series(m, "llm_fleet_tokens_total")
        }
        assert counted == {
            "input": 200,
            "output": 80,
            "cached_input": 128,
            "cache_write": 10,
            "reasoning": 24,
        }

    def test_kinds_the_provider_did_not_report_have_no_series(self) -> None:
        m = observed(record(usage=Usage(input_tokens=3, output_tokens=2, total_tokens=5)))
        kinds = {s["kind"] for s in series(m, "llm_fleet_tokens_total")}
        assert kinds == {"input", "output"}  # None is "not reported", not 0

    def test_a_negative_count_is_ignored_not_raised(self) -> None:
        m = observed(record(usage=Usage(input_tokens=-1, output_tokens=2)))
        kinds = {s["kind"] for s in series(m, "llm_fleet_tokens_total")}
        assert kinds == {"output"}

    def test_search_units_of_a_rerank(self) -> None:
        cohere = TargetRef(provider="cohere", model="rerank-v3.5")
        m = observed(record(kind="rerank", target=cohere, usage=Usage(search_units=2)))
        labels = {"provider": "cohere", "model": "rerank-v3.5", "kind": "search_units"}
        assert value(m, "llm_fleet_tokens_total", **labels) == 2
        assert series(m, "gen_ai_client_token_usage_count") == []  # no tokens reported


class TestStreamTimings:
    def test_time_to_first_token(self) -> None:
        m = observed(record())
        name = "gen_ai_server_time_to_first_token_seconds"
        assert value(m, f"{name}_sum", **GENAI_GPT) == pytest.approx(0.2)
        assert value(m, f"{name}_bucket", **GENAI_GPT, le="0.25") == 1
        assert value(m, f"{name}_bucket", **GENAI_GPT, le="0.1") == 0

    def test_time_per_output_token_is_decode_time_over_tokens_after_the_first(self) -> None:
        m = observed(record())  # first token at 200 ms, done at 1100 ms, 51 output tokens
        name = "gen_ai_server_time_per_output_token_seconds_sum"
        assert value(m, name, **GENAI_GPT) == pytest.approx(0.9 / 50)

    @pytest.mark.parametrize(
        ("ttft_ms", "output_tokens"),
        [(None, 51), (200.0, 1), (200.0, 0)],
        ids=["not-streamed", "one-token", "no-tokens"],
    )
    def test_no_time_per_output_token_without_a_decode_phase(
        self, ttft_ms: float | None, output_tokens: int
    ) -> None:
        metrics = Metrics(ttft_ms=ttft_ms, provider_ms=1000.0, total_ms=1100.0)
        usage = Usage(input_tokens=10, output_tokens=output_tokens)
        m = observed(record(metrics=metrics, usage=usage))
        assert series(m, "gen_ai_server_time_per_output_token_seconds_count") == []

    def test_failed_streams_have_no_first_token_time(self) -> None:
        m = observed(record(status="provider_unavailable"))
        assert series(m, "gen_ai_server_time_to_first_token_seconds_count") == []


class TestCost:
    def test_known_costs_add_up_per_provider_and_model(self) -> None:
        m = observed(record(), record())
        labels = {"provider": "openai", "model": "gpt-4o"}
        assert value(m, "llm_fleet_cost_usd_total", **labels) == pytest.approx(0.025)
        assert series(m, "llm_fleet_cost_unknown_total") == []

    def test_an_unknown_cost_is_counted_apart_never_as_zero(self) -> None:
        unknown = Metrics(provider_ms=5.0, total_ms=6.0, cost_usd=None)
        m = observed(record(metrics=unknown), record(metrics=unknown))
        labels = {"provider": "openai", "model": "gpt-4o"}
        assert value(m, "llm_fleet_cost_unknown_total", **labels) == 2
        assert series(m, "llm_fleet_cost_usd_total") == []

    def test_a_verify_check_without_a_price_is_not_an_unknown_cost(self) -> None:
        m = observed(record(kind="verify", usage=None, metrics=Metrics(total_ms=3.0)))
        assert series(m, "llm_fleet_cost_unknown_total") == []

    @pytest.mark.parametrize("bad", [float("nan"), float("inf"), -0.5])
    def test_a_broken_cost_is_dropped(self, bad: float) -> None:
        m = observed(record(metrics=Metrics(total_ms=6.0, cost_usd=bad)))
        assert series(m, "llm_fleet_cost_usd_total") == []

    def test_failed_jobs_cost_nothing_here(self) -> None:
        m = observed(record(status="timeout"))
        assert series(m, "llm_fleet_cost_usd_total") == []
        assert series(m, "llm_fleet_cost_unknown_total") == []


class TestFleetMetrics:
    def test_jobs_by_kind_provider_model_and_outcome(self) -> None:
        m = observed(record(), record(), record(status="timeout"))
        base = {"kind": "chat", "provider": "openai", "model": "gpt-4o"}
        assert value(m, "llm_fleet_jobs_total", **base, outcome="ok") == 2
        assert value(m, "llm_fleet_jobs_total", **base, outcome="timeout") == 1

    def test_queue_wait_and_worker_time_by_kind(self) -> None:
        m = observed(record())
        assert value(m, "llm_fleet_queue_seconds_sum", kind="chat") == pytest.approx(0.002)
        assert value(m, "llm_fleet_queue_seconds_bucket", kind="chat", le="0.0025") == 1
        assert value(m, "llm_fleet_job_seconds_sum", kind="chat") == pytest.approx(1.1)

    def test_a_job_without_a_queue_time_has_none(self) -> None:
        m = observed(record(metrics=Metrics(total_ms=4.0)))
        assert series(m, "llm_fleet_queue_seconds_count") == []

    def test_retries_by_provider(self) -> None:
        m = observed(record(metrics=Metrics(provider_ms=900.0, total_ms=950.0, retries=2)))
        assert value(m, "llm_fleet_provider_retries_total", provider="openai") == 2

    def test_dead_letters_by_code(self) -> None:
        m = observed(
            record(status="bad_request", dead_lettered=True, reached_provider=False),
            record(status="bad_request", dead_lettered=False, reached_provider=False),
        )
        assert value(m, "llm_fleet_dead_lettered_total", code="bad_request") == 1

    def test_a_message_refused_before_decoding(self) -> None:
        refused = record(
            request_id="",
            producer=None,
            kind="unknown",
            status="bad_request",
            target=None,
            metrics=None,
            usage=None,
            reached_provider=False,
            dead_lettered=True,
        )
        m = observed(refused)
        labels = {"kind": "unknown", "provider": "", "model": "", "outcome": "bad_request"}
        assert value(m, "llm_fleet_jobs_total", **labels) == 1
        assert value(m, "llm_fleet_dead_lettered_total", code="bad_request") == 1
        assert series(m, "llm_fleet_job_seconds_count") == []
        assert series(m, "gen_ai_client_operation_duration_seconds_count") == []


class TestHooks:
    def test_broker_sessions_after_the_first_are_reconnects(self) -> None:
        m = WorkerMetrics(CollectorRegistry())
        m.broker_up()
        assert value(m, "llm_fleet_broker_connected") == 1
        assert value(m, "llm_fleet_broker_reconnects_total") == 0
        m.broker_down()
        assert value(m, "llm_fleet_broker_connected") == 0
        m.broker_up()
        m.broker_down()
        m.broker_up()
        assert value(m, "llm_fleet_broker_reconnects_total") == 2

    def test_reply_messages_frames_and_bytes(self) -> None:
        m = WorkerMetrics(CollectorRegistry())
        m.reply_published(frames=3, nbytes=1200)
        m.reply_published(frames=1, nbytes=80)
        assert value(m, "llm_fleet_reply_messages_total") == 2
        assert value(m, "llm_fleet_frames_total") == 4
        assert value(m, "llm_fleet_reply_bytes_total") == 1280

    def test_in_flight_jobs(self) -> None:
        m = WorkerMetrics(CollectorRegistry())
        m.inflight.inc()
        m.inflight.inc()
        m.inflight.dec()
        assert value(m, "llm_fleet_jobs_inflight") == 1

    def test_audit_writes_pending_rows_and_outages(self) -> None:
        m = WorkerMetrics(CollectorRegistry())
        m.audit_written(rows=40, seconds=0.002)
        m.audit_written(rows=2, seconds=0.0004)
        m.audit_pending(17)
        assert value(m, "llm_fleet_audit_rows_total") == 42
        assert value(m, "llm_fleet_audit_write_seconds_count") == 2
        assert value(m, "llm_fleet_audit_write_seconds_bucket", le="0.0005") == 1
        assert value(m, "llm_fleet_audit_pending_rows") == 17
        m.audit_database(down=True)
        m.audit_database(down=True)  # still the same outage
        assert value(m, "llm_fleet_audit_outage") == 1
        m.audit_database(down=False)
        assert value(m, "llm_fleet_audit_outage") == 0
        m.audit_database(down=True)
        assert value(m, "llm_fleet_audit_outages_total") == 2


class TestBoundedLabels:
    def test_model_names_past_the_cap_count_as_other(self) -> None:
        m = observed(
            *(record(target=TargetRef(provider="openai", model=f"m{i}")) for i in range(5)),
            record(target=TargetRef(provider="openai", model="m0")),
            record(target=TargetRef(provider="anthropic", model="m4")),  # its own budget
            models_per_provider=3,
        )
        models = {(s["provider"], s["model"]) for s in series(m, "llm_fleet_jobs_total")}
        assert models == {
            ("openai", "m0"),
            ("openai", "m1"),
            ("openai", "m2"),
            ("openai", "other"),
            ("anthropic", "m4"),
        }
        other = {"kind": "chat", "provider": "openai", "model": "other", "outcome": "ok"}
        assert value(m, "llm_fleet_jobs_total", **other) == 2
        assert value(m, "llm_fleet_jobs_total", **{**other, "model": "m0"}) == 2

    def test_the_default_cap_is_200_models_per_provider(self) -> None:
        records = [record(target=TargetRef(provider="openai", model=f"m{i}")) for i in range(260)]
        m = observed(*records)
        for name in ("llm_fleet_jobs_total", "gen_ai_client_operation_duration_seconds_count"):
            labels = series(m, name)
            models = {s.get("model") or s["gen_ai_request_model"] for s in labels}
            assert len(models) == 201 and "other" in models, name

    def test_a_provider_outside_the_registry_is_other(self) -> None:
        typo = TargetRef(provider="opnai", model="gpt-4o")
        m = observed(record(target=typo, status="bad_request", reached_provider=False))
        (jobs,) = series(m, "llm_fleet_jobs_total")
        assert (jobs["provider"], jobs["model"]) == ("other", "other")

    def test_without_a_registry_provider_names_are_capped_too(self) -> None:
        bounds = LabelBounds()
        names = {bounds.provider(f"p{i}") for i in range(100)}
        assert len(names) == 65 and "other" in names

    def test_outcomes_and_kinds_come_from_closed_sets(self) -> None:
        m = observed(record(status="Traceback (most recent call last)", kind="chatty"))
        (jobs,) = series(m, "llm_fleet_jobs_total")
        assert (jobs["kind"], jobs["outcome"]) == ("other", "other")

    def test_no_request_id_tenant_or_error_text_reaches_a_label(self) -> None:
        m = observed(
            record(status="rate_limited", error="slow down, key sk-abc", tried=[CLAUDE]),
            record(dead_lettered=True, status="forbidden", metadata={"user": "u-991"}),
        )
        text = generate_latest(m.registry).decode()
        for private in ("req-7f3a", "tenant-a", "slow down", "sk-abc", "u-991", "cred-1", "w1"):
            assert private not in text


def test_exposition_names_parse_as_prometheus_text() -> None:
    m = observed(record())
    m.reply_published(frames=2, nbytes=100)
    families = {
        f.name for f in text_string_to_metric_families(generate_latest(m.registry).decode())
    }
    assert {
        "gen_ai_client_operation_duration_seconds",
        "gen_ai_client_token_usage",
        "gen_ai_server_time_to_first_token_seconds",
        "gen_ai_server_time_per_output_token_seconds",
        "llm_fleet_jobs",
        "llm_fleet_cost_usd",
        "llm_fleet_tokens",
        "llm_fleet_reply_bytes",
        "llm_fleet_broker_reconnects",
        "llm_fleet_audit_outage",
    } <= families
