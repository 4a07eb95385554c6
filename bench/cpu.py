"""CPU per token and per job: the worker's CPU vs a direct client's for the same streams.

Worker CPU is read with psutil (user+sys, before/after) around a fleet run; the
direct client runs in a separate process that reports its own
`time.process_time()`, so nothing of the bench process is counted on either
side. The fleet's producer (FleetClient) also runs in its own process and its
CPU is reported too. AMQP messages per token = `Final.metrics.frames` / tokens.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench import charts, report
from bench.harness import (
    CHAT_MODEL,
    MOCK_KEY,
    BenchContext,
    Fleet,
    MockSpec,
    WorkerSpec,
    broker_process,
    cpu_of,
    instant,
    realistic,
    start_fleet,
)
from bench.loadgen import LoadSpec, run_loadgens

NAME = "cpu"


@dataclass(frozen=True, slots=True)
class Plan:
    profile: str
    provider: str
    mock: MockSpec
    streams: int
    requests: int


def plans(quick: bool) -> list[Plan]:
    if quick:
        return [
            Plan("instant", "mock", instant(50), 16, 64),
            Plan("realistic", "vllm", realistic(10), 16, 16),
        ]
    return [
        Plan("instant", "mock", instant(50), 16, 2000),
        Plan("realistic", "vllm", realistic(200), 64, 64),
    ]


def _spec(fleet: Fleet, plan: Plan, mode: str, requests: int) -> LoadSpec:
    mock = fleet.mocks[plan.provider]
    return LoadSpec(
        mode=mode,
        streams=plan.streams,
        requests=requests,
        amqp_url=fleet.amqp_url,
        target=fleet.target(plan.provider),
        url=mock.url,
        api_key=MOCK_KEY,
        model=CHAT_MODEL,
    )


def _per(cpu_s: float, tokens: int, jobs: int) -> dict[str, float]:
    return {
        "cpu_s": cpu_s,
        "us_per_token": 1e6 * cpu_s / tokens if tokens else 0.0,
        "ms_per_job": 1e3 * cpu_s / jobs if jobs else 0.0,
    }


async def _measure(fleet: Fleet, plan: Plan) -> dict[str, Any]:
    # Warm-up: connections, imports and caches on both paths, not counted.
    warm = min(plan.requests, plan.streams * 2)
    await run_loadgens([_spec(fleet, plan, "direct", warm), _spec(fleet, plan, "fleet", warm)])

    (direct,) = await run_loadgens([_spec(fleet, plan, "direct", plan.requests)])

    worker, mock = fleet.workers[0], fleet.mocks[plan.provider].proc
    broker = broker_process(fleet.amqp_url)
    w0, m0, b0 = worker.cpu_seconds(), mock.cpu_seconds(), cpu_of(broker)
    (client,) = await run_loadgens([_spec(fleet, plan, "fleet", plan.requests)])
    w, m, b = worker.cpu_seconds() - w0, mock.cpu_seconds() - m0, cpu_of(broker) - b0

    tokens, jobs = client["tokens"], client["jobs"]
    worker_fig = _per(w, tokens, jobs)
    direct_fig = _per(direct["cpu_s"], direct["tokens"], direct["jobs"])
    return {
        "profile": plan.profile,
        "streams": plan.streams,
        "jobs": jobs,
        "tokens": tokens,
        "errors": client["errors"] + direct["errors"],
        "worker": worker_fig,
        "direct_client": direct_fig,
        "worker_vs_direct_per_token": (
            worker_fig["us_per_token"] / direct_fig["us_per_token"]
            if direct_fig["us_per_token"]
            else 0.0
        ),
        "fleet_client": _per(client["cpu_s"], tokens, jobs),
        "mock_cpu_s_fleet_run": m,
        "broker_cpu_s_fleet_run": b,
        "fleet_wall_s": client["wall_s"],
        "direct_wall_s": direct["wall_s"],
        # Frames: the worker's own count (Final.metrics.frames: start + deltas + final).
        # Messages: AMQP messages the client received; a worker may pack several
        # frames (of several requests) into one message, so the two can differ.
        "frames": client["frames"],
        "frames_per_token": client["frames"] / tokens if tokens else 0.0,
        "frames_per_job": client["frames"] / jobs if jobs else 0.0,
        "amqp_messages": client["reply_messages"],
        "amqp_messages_per_token": client["reply_messages"] / tokens if tokens else 0.0,
        "reply_bytes_per_token": client["reply_bytes"] / tokens if tokens else 0.0,
    }


async def run(ctx: BenchContext) -> dict[str, Any]:
    ps = plans(ctx.quick)
    rows: list[dict[str, Any]] = []
    async with start_fleet(
        ctx, {p.provider: p.mock for p in ps}, worker=WorkerSpec(concurrency=128)
    ) as fleet:
        for plan in ps:
            rows.append(await _measure(fleet, plan))
        setup = fleet.describe()
    data = {
        "method": (
            "worker CPU = psutil user+sys of the worker process around the fleet run; direct = "
            "time.process_time() of a separate httpx client process running the same streams; "
            "fleet client = the FleetClient process (producer side); frames = Final.metrics."
            "frames (start + deltas + final) summed over jobs; AMQP messages = reply messages "
            "the client received during the run"
        ),
        "setup": setup,
        "profiles": {p.profile: p.mock.describe() for p in ps},
        "results": rows,
    }
    ctx.save(NAME, data)
    _print(rows)
    charts.grouped_bars(
        ctx.out / f"{NAME}.png",
        "CPU per streamed token",
        [r["profile"] for r in rows],
        {
            "worker": [r["worker"]["us_per_token"] for r in rows],
            "direct client": [r["direct_client"]["us_per_token"] for r in rows],
            "fleet client": [r["fleet_client"]["us_per_token"] for r in rows],
        },
        "µs CPU / token",
    )
    return data


def _print(rows: list[dict[str, Any]]) -> None:
    report.print_table(
        "CPU per token and per job (worker vs direct client)",
        [
            "profile",
            "streams",
            "jobs",
            "tokens",
            "worker µs/tok",
            "direct µs/tok",
            "ratio",
            "worker ms/job",
            "direct ms/job",
            "client µs/tok",
            "frames/tok",
            "frames/job",
            "AMQP msgs/tok",
        ],
        [
            [
                r["profile"],
                r["streams"],
                r["jobs"],
                r["tokens"],
                r["worker"]["us_per_token"],
                r["direct_client"]["us_per_token"],
                r["worker_vs_direct_per_token"],
                r["worker"]["ms_per_job"],
                r["direct_client"]["ms_per_job"],
                r["fleet_client"]["us_per_token"],
                r["frames_per_token"],
                r["frames_per_job"],
                r["amqp_messages_per_token"],
            ]
            for r in rows
        ],
    )
