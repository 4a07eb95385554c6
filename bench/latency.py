"""Added latency: streamed chat through the fleet vs a direct httpx call, same mock.

Time to first token is client-observed: from just before publishing (fleet) or
sending (direct) to the first text delta received. Direct and fleet phases
alternate in ABBA order so drift and machine noise hit both equally. Two mock
profiles: instant (pure overhead) and realistic (300 ms TTFT, 50 tokens/s).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import httpx

from bench import charts, report
from bench.harness import (
    CHAT_MODEL,
    MOCK_KEY,
    BenchContext,
    Fleet,
    MockSpec,
    WorkerSpec,
    instant,
    realistic,
    run_pool,
    start_fleet,
)
from bench.loadgen import LoadSpec, run_loadgens
from bench.stats import added, summary
from bench.streams import StreamResult, direct_client, direct_stream, fleet_stream, prompt

NAME = "latency"
CONCURRENCY = (1, 16, 64)


@dataclass(frozen=True, slots=True)
class Plan:
    profile: str
    provider: str  # which mock (provider name) serves this profile
    mock: MockSpec
    per_phase: dict[int, int]  # concurrency -> requests per phase
    rounds: int  # ABBA pairs: each round is one direct and one fleet phase


def plans(quick: bool) -> list[Plan]:
    if quick:
        return [
            Plan("instant", "mock", instant(50), {1: 10, 16: 32, 64: 64}, 2),
            Plan("realistic", "vllm", realistic(5), {1: 1, 16: 16, 64: 64}, 2),
        ]
    return [
        Plan("instant", "mock", instant(50), {1: 100, 16: 320, 64: 640}, 4),
        # 4.3 s per request: one request per lane per phase, two ABBA rounds.
        Plan("realistic", "vllm", realistic(200), {1: 1, 16: 16, 64: 64}, 2),
    ]


Runner = Callable[[int], Awaitable[StreamResult]]


async def _phase(n: int, c: int, run: Runner, into: list[StreamResult]) -> None:
    async def job(i: int) -> None:
        into.append(await run(i))

    await run_pool(n, c, job)


def _runners(fleet: Fleet, http: httpx.AsyncClient, provider: str) -> tuple[Runner, Runner]:
    mock = fleet.mocks[provider]
    target = fleet.target(provider)

    async def direct(i: int) -> StreamResult:
        return await direct_stream(http, mock.url, MOCK_KEY, CHAT_MODEL, prompt(i))

    async def via_fleet(i: int) -> StreamResult:
        return await fleet_stream(fleet.client, target, prompt(i))

    return direct, via_fleet


async def _warm_up(fleet: Fleet, http: httpx.AsyncClient, plan: Plan) -> None:
    """Open the pooled connections on both paths (64 wide) and warm the code paths.

    Realistic streams are cut to one token here: only the connections matter.
    """
    mock = fleet.mocks[plan.provider]
    target = fleet.target(plan.provider)
    width = max(CONCURRENCY)

    async def direct(i: int) -> None:
        await direct_stream(http, mock.url, MOCK_KEY, CHAT_MODEL, prompt(i), max_tokens=1)

    async def via_fleet(i: int) -> None:
        await fleet_stream(fleet.client, target, prompt(i), max_tokens=1)

    for _ in range(2):
        await run_pool(width, width, direct)
        await run_pool(width, width, via_fleet)


async def _loadgen_phase(
    fleet: Fleet, plan: Plan, mode: str, n: int, c: int, round_no: int
) -> list[StreamResult]:
    mock = fleet.mocks[plan.provider]
    spec = LoadSpec(
        mode=mode, streams=c, requests=n, warmup=2 * c if plan.profile == "instant" else 0,
        amqp_url=fleet.amqp_url, target=fleet.target(plan.provider), url=mock.url,
        api_key=MOCK_KEY, model=CHAT_MODEL, offset=round_no * n,
    )
    (res,) = await run_loadgens([spec])
    if res["errors"]:
        raise RuntimeError(f"{mode} loadgen reported {res['errors']} errors")
    return [
        StreamResult(ttft=a / 1000, total=b / 1000, tokens=0, frames=0)
        for a, b in zip(res["ttft_ms"], res["total_ms"], strict=True)
    ]


def _figures(results: list[StreamResult]) -> dict[str, Any]:
    return {
        "ttft_ms": summary([r.ttft * 1000 for r in results]),
        "total_ms": summary([r.total * 1000 for r in results]),
        "tokens_mean": sum(r.tokens for r in results) / max(1, len(results)),
    }


async def _measure(fleet: Fleet, http: httpx.AsyncClient, plan: Plan, c: int) -> dict[str, Any]:
    got: dict[str, list[StreamResult]] = {"direct": [], "fleet": []}
    n = plan.per_phase[c]
    for r in range(plan.rounds):
        order = ("direct", "fleet") if r % 2 == 0 else ("fleet", "direct")  # ABBA
        for mode in order:
            if c == 1:
                direct, via_fleet = _runners(fleet, http, plan.provider)
                await _phase(n, c, direct if mode == "direct" else via_fleet, got[mode])
            else:
                # Each client in a fresh process of its own: at 16+ streams a client
                # sharing the bench process would measure that process's CPU queue.
                got[mode].extend(await _loadgen_phase(fleet, plan, mode, n, c, r))
    d, f = _figures(got["direct"]), _figures(got["fleet"])
    return {
        "profile": plan.profile,
        "concurrency": c,
        "requests_per_mode": len(got["fleet"]),
        "direct": d,
        "fleet": f,
        "added_ttft_ms": added(f["ttft_ms"], d["ttft_ms"]),
        "added_total_ms": added(f["total_ms"], d["total_ms"]),
    }


async def run(ctx: BenchContext) -> dict[str, Any]:
    ps = plans(ctx.quick)
    worker = WorkerSpec(concurrency=2 * max(CONCURRENCY))
    rows: list[dict[str, Any]] = []
    async with (
        start_fleet(ctx, {p.provider: p.mock for p in ps}, worker=worker) as fleet,
        direct_client() as http,
    ):
        for plan in ps:
            await _warm_up(fleet, http, plan)
            for c in CONCURRENCY:
                rows.append(await _measure(fleet, http, plan, c))
        setup = fleet.describe()
    data = {
        "method": (
            "client-observed TTFT (before publish/send -> first text delta) and total time; "
            "direct = minimal httpx streaming call to the same mock; direct and fleet phases "
            "alternate ABBA; at concurrency > 1 each phase's client runs in a fresh process "
            "of its own (warmed up, warm-up not counted); added = fleet minus direct per "
            "percentile"
        ),
        "setup": setup,
        "profiles": {p.profile: p.mock.describe() for p in ps},
        "results": rows,
    }
    ctx.save(NAME, data)
    _print(rows)
    _chart(ctx, rows)
    return data


def _print(rows: list[dict[str, Any]]) -> None:
    table = [
        [
            r["profile"],
            r["concurrency"],
            r["requests_per_mode"],
            r["direct"]["ttft_ms"]["p50"],
            r["fleet"]["ttft_ms"]["p50"],
            r["added_ttft_ms"]["p50"],
            r["added_ttft_ms"]["p95"],
            r["added_ttft_ms"]["p99"],
            r["direct"]["total_ms"]["p50"],
            r["fleet"]["total_ms"]["p50"],
            r["added_total_ms"]["p50"],
            r["added_total_ms"]["p99"],
        ]
        for r in rows
    ]
    report.print_table(
        "Added latency (ms): fleet minus direct, per percentile",
        [
            "profile",
            "conc",
            "n/mode",
            "ttft d p50",
            "ttft f p50",
            "+ttft p50",
            "+ttft p95",
            "+ttft p99",
            "total d p50",
            "total f p50",
            "+total p50",
            "+total p99",
        ],
        table,
    )


def _chart(ctx: BenchContext, rows: list[dict[str, Any]]) -> None:
    groups = [f"{r['profile']} c{r['concurrency']}" for r in rows]
    series = {f"+TTFT p{p}": [r["added_ttft_ms"][f"p{p}"] for r in rows] for p in (50, 95, 99)}
    charts.grouped_bars(
        ctx.out / f"{NAME}.png", "Added time to first token (fleet - direct)", groups, series, "ms"
    )
