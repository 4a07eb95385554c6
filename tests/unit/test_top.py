"""`llm-fleet top` maths on hand-made metric texts: rates, error shares, TTFT quantiles."""

from __future__ import annotations

import math

import pytest
from prometheus_client import CollectorRegistry, generate_latest

from contracts.frames import Metrics, Usage
from workers.metrics import WorkerMetrics
from workers.outcome import AttemptRecord, TargetRef
from workers.top import (
    QueueRow,
    Scrape,
    build_frame,
    histogram_quantile,
    metrics_url,
    parse_scrape,
    render,
)

INF = math.inf


def ttft(provider: str, model: str, buckets: dict[str, float]) -> str:
    """Prometheus text of one TTFT histogram series, cumulative `{le: count}`."""
    name = "gen_ai_server_time_to_first_token_seconds"
    labels = (
        f'gen_ai_operation_name="chat",gen_ai_provider_name="{provider}",'
        f'gen_ai_request_model="{model}"'
    )
    lines = [f'{name}_bucket{{{labels},le="{le}"}} {n}' for le, n in buckets.items()]
    lines.append(f"{name}_count{{{labels}}} {buckets['+Inf']}")
    lines.append(f"{name}_sum{{{labels}}} 1.0")
    return "\n".join(lines)


# Two scrapes of one worker, 2 s apart. In between: mock-chat settled 8 ok and 2
# unauthorized (on a second kind: summed), claude on bedrock 4 ok; TTFT deltas for
# mock-chat are 10 in (0.1, 0.25] and 10 in (0.25, 0.5].
BEFORE = f"""\
# TYPE llm_fleet_jobs_total counter
llm_fleet_jobs_total{{kind="chat",provider="mock",model="mock-chat",outcome="ok"}} 100.0
llm_fleet_jobs_total{{kind="chat",provider="mock",model="mock-chat",outcome="timeout"}} 1.0
llm_fleet_jobs_total{{kind="chat",provider="bedrock",model="claude",outcome="ok"}} 7.0
# TYPE gen_ai_server_time_to_first_token_seconds histogram
{ttft("mock", "mock-chat", {"0.1": 5.0, "0.25": 5.0, "0.5": 5.0, "+Inf": 5.0})}
# TYPE llm_fleet_jobs_inflight gauge
llm_fleet_jobs_inflight 1.0
# TYPE llm_fleet_dead_lettered_total counter
llm_fleet_dead_lettered_total{{code="bad_request"}} 3.0
"""
AFTER = f"""\
# TYPE llm_fleet_jobs_total counter
llm_fleet_jobs_total{{kind="chat",provider="mock",model="mock-chat",outcome="ok"}} 108.0
llm_fleet_jobs_total{{kind="chat",provider="mock",model="mock-chat",outcome="timeout"}} 1.0
llm_fleet_jobs_total{{kind="embed",provider="mock",model="mock-chat",outcome="unauthorized"}} 2.0
llm_fleet_jobs_total{{kind="chat",provider="bedrock",model="claude",outcome="ok"}} 11.0
# TYPE gen_ai_server_time_to_first_token_seconds histogram
{ttft("mock", "mock-chat", {"0.1": 5.0, "0.25": 15.0, "0.5": 25.0, "+Inf": 25.0})}
{ttft("aws.bedrock", "claude", {"1.0": 4.0, "+Inf": 4.0})}
# TYPE llm_fleet_jobs_inflight gauge
llm_fleet_jobs_inflight 6.0
# TYPE llm_fleet_dead_lettered_total counter
llm_fleet_dead_lettered_total{{code="bad_request"}} 4.0
llm_fleet_dead_lettered_total{{code="expired"}} 1.0
# TYPE llm_fleet_broker_connected gauge
llm_fleet_broker_connected 1.0
"""
W = "http://w1:9004/metrics"


class TestHistogramQuantile:
    def test_interpolates_linearly_within_the_bucket_the_rank_falls_in(self) -> None:
        buckets = [(0.1, 0.0), (0.25, 10.0), (0.5, 20.0), (INF, 20.0)]
        assert histogram_quantile(0.5, buckets) == pytest.approx(0.25)
        assert histogram_quantile(0.25, buckets) == pytest.approx(0.175)
        assert histogram_quantile(0.99, buckets) == pytest.approx(0.495)

    def test_the_lowest_bucket_starts_at_zero(self) -> None:
        assert histogram_quantile(0.5, [(0.2, 4.0), (INF, 4.0)]) == pytest.approx(0.1)

    def test_a_rank_past_the_highest_bound_answers_that_bound(self) -> None:
        assert histogram_quantile(0.99, [(1.0, 1.0), (2.0, 1.0), (INF, 10.0)]) == 2.0

    def test_buckets_in_any_order(self) -> None:
        assert histogram_quantile(0.5, [(INF, 2.0), (1.0, 2.0), (0.5, 0.0)]) == pytest.approx(0.75)

    @pytest.mark.parametrize("buckets", [[], [(0.1, 0.0), (INF, 0.0)], [(0.1, 3.0)], [(INF, 5.0)]])
    def test_no_observations_or_no_inf_bucket_has_no_quantile(
        self, buckets: list[tuple[float, float]]
    ) -> None:
        assert histogram_quantile(0.5, buckets) is None


class TestFrame:
    def frame(self, before: str = BEFORE, after: str = AFTER) -> dict[str, object]:
        frame = build_frame(
            {W: parse_scrape(before, 10.0)},
            {W: parse_scrape(after, 12.0)},
            [QueueRow("llm.chat", 7, 2), QueueRow("llm.dead", 3, 0)],
            2.0,
        )
        return frame.as_json()

    def rows(self, frame: dict[str, object]) -> dict[tuple[str, str], dict[str, object]]:
        models = frame["models"]
        assert isinstance(models, list)
        return {(r["provider"], r["model"]): r for r in models}

    def test_rates_errors_and_ttft_come_from_the_deltas(self) -> None:
        mock = self.rows(self.frame())["mock", "mock-chat"]
        assert mock["jobs"] == 10  # 8 ok + 2 unauthorized (a new series: all of it is new)
        assert mock["jobs_per_s"] == pytest.approx(5.0)
        assert mock["error_rate"] == pytest.approx(0.2)
        # Absolute counts would give p50 0.2125: only this interval's observations count.
        assert mock["ttft_p50_s"] == pytest.approx(0.25)
        assert mock["ttft_p99_s"] == pytest.approx(0.495)

    def test_ttft_joins_the_row_under_the_registry_name(self) -> None:
        rows = self.rows(self.frame())
        assert set(rows) == {("mock", "mock-chat"), ("bedrock", "claude")}
        claude = rows["bedrock", "claude"]
        assert (claude["jobs_per_s"], claude["error_rate"]) == (2.0, 0.0)
        assert claude["ttft_p50_s"] == pytest.approx(0.5)

    def test_busiest_model_first(self) -> None:
        models = self.frame()["models"]
        assert isinstance(models, list)
        assert [r["model"] for r in models] == ["mock-chat", "claude"]

    def test_inflight_dead_letters_and_queues(self) -> None:
        frame = self.frame()
        assert frame["workers"] == [
            {"url": W, "up": True, "inflight": 6.0, "broker_connected": True, "error": None}
        ]
        assert (frame["dead_lettered"], frame["dead_lettered_per_s"]) == (2.0, 1.0)
        assert frame["dead_queued"] == 3

    def test_a_counter_that_went_down_was_reset(self) -> None:
        restarted = AFTER.replace('outcome="ok"} 108.0', 'outcome="ok"} 3.0')
        mock = self.rows(self.frame(after=restarted))["mock", "mock-chat"]
        assert mock["jobs"] == 5  # 3 ok since the restart + 2 unauthorized

    def test_nothing_settled_means_no_rate_and_no_quantile(self) -> None:
        mock = self.rows(self.frame(before=AFTER))["mock", "mock-chat"]
        assert (mock["jobs"], mock["error_rate"], mock["ttft_p50_s"]) == (0.0, None, None)

    def test_a_worker_down_is_shown_and_one_seen_once_adds_no_rate(self) -> None:
        w2 = "http://w2:9004/metrics"
        frame = build_frame(
            {W: "ConnectError"},
            {W: parse_scrape(AFTER, 12.0), w2: "ConnectError"},
            [],
            2.0,
        )
        assert [(w.url, w.up, w.error) for w in frame.workers] == [
            (W, True, None),
            (w2, False, "ConnectError"),
        ]
        assert {r.jobs for r in frame.models} == {0.0}
        text = render(frame)
        assert "down (ConnectError)" in text
        assert "mock-chat" in text

    def test_workers_add_up(self) -> None:
        w2 = "http://w2:9004/metrics"
        frame = build_frame(
            {W: parse_scrape(BEFORE, 10.0), w2: parse_scrape(BEFORE, 10.0)},
            {W: parse_scrape(AFTER, 12.0), w2: parse_scrape(AFTER, 14.0)},
            [],
            2.0,
        )
        mock = next(r for r in frame.models if r.model == "mock-chat")
        assert mock.jobs == 20
        assert mock.jobs_per_s == pytest.approx(5.0 + 2.5)  # each over its own interval
        assert mock.ttft_p50_s == pytest.approx(0.25)


def test_render_shows_every_section() -> None:
    frame = build_frame(
        {W: parse_scrape(BEFORE, 10.0)},
        {W: parse_scrape(AFTER, 12.0)},
        [QueueRow("llm.chat", 7, 2), QueueRow("llm.dead", None, None, "access refused")],
        2.0,
    )
    text = render(frame)
    assert "mock-chat" in text and "20.0%" in text and "250ms" in text and "495ms" in text
    assert "n/a (access refused)" in text
    assert "llm.dead holds n/a" in text


def test_parses_what_a_worker_really_serves() -> None:
    """The names top reads are the ones workers.metrics writes."""
    metrics = WorkerMetrics(CollectorRegistry(), providers=["bedrock"])
    for ttft_ms in (100.0, 300.0):
        metrics.observe(
            AttemptRecord(
                request_id="r1",
                attempt=1,
                producer="tenant-a",
                kind="chat",
                queue="llm.chat",
                worker="w1",
                started_at=1_700_000_000.0,
                status="ok",
                target=TargetRef(provider="bedrock", model="claude"),
                metrics=Metrics(total_ms=500.0, provider_ms=400.0, ttft_ms=ttft_ms),
                usage=Usage(input_tokens=3, output_tokens=5),
                reached_provider=True,
            )
        )
    metrics.inflight.inc()
    scrape = parse_scrape(generate_latest(metrics.registry).decode(), 0.0)
    assert isinstance(scrape, Scrape)
    assert scrape.jobs == {("bedrock", "claude", "ok"): 2.0}
    assert scrape.ttft_buckets["bedrock", "claude", INF] == 2.0
    assert scrape.inflight == 1.0


@pytest.mark.parametrize(
    ("given", "url"),
    [
        ("w1", "http://w1:9004/metrics"),
        ("w1:9100", "http://w1:9100/metrics"),
        ("http://10.0.0.5:9004", "http://10.0.0.5:9004/metrics"),
        ("https://w1/custom", "https://w1/custom"),
        ("http://[::1]:9004/metrics", "http://[::1]:9004/metrics"),
    ],
)
def test_metrics_url(given: str, url: str) -> None:
    assert metrics_url(given) == url
