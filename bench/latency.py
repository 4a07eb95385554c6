"""Added latency: streamed chat through the fleet vs a direct httpx call, same mock.

Time to first token is client-observed: from just before publishing (fleet) or
sending (direct) to the first text delta received. Direct and fleet phases
alternate in ABBA order so drift and machine noise hit both equally. Two mock
profiles: instant (pure overhead) and realistic (300 ms TTFT, 50 tokens/s).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import aio_pika
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
        mode=mode,
        streams=c,
        requests=n,
        warmup=2 * c if plan.profile == "instant" else 0,
        amqp_url=fleet.amqp_url,
        target=fleet.target(plan.provider),
        url=mock.url,
        api_key=MOCK_KEY,
        model=CHAT_MODEL,
        offset=round_no * n,
    )
    (res,) = await run_loadgens([spec])
    if res["errors"]:
        raise RuntimeError(f"{mode} loadgen reported {res['errors']} errors")
    return [
        StreamResult(ttft=a / 1000, total=b / 1000, tokens=0, frames=0)
        for a, b in zip(res["ttft_ms"], res["total_ms"], strict=True)
    ]


def _breakdown(results: list[StreamResult], client_ttft_p50: float) -> dict[str, float]:
    """Where a fleet first token's time goes (p50s; the remainder is the reply hop + client)."""
    queue = summary([r.queue_ms for r in results if r.queue_ms is not None])["p50"]
    worker = summary([r.worker_ttft_ms for r in results if r.worker_ttft_ms is not None])["p50"]
    return {
        "publish_to_worker_start": queue,
        "worker_start_to_first_provider_token": worker,
        "reply_hop_and_client": client_ttft_p50 - queue - worker,
    }


async def _hop_ms(channel: aio_pika.abc.AbstractChannel, quorum: bool, samples: int) -> float:
    """p50 publish -> consume latency on one queue kind, one message at a time."""
    args: dict[str, Any] = {"x-queue-type": "quorum"} if quorum else {}
    queue = await channel.declare_queue(
        f"bench.floor.{'quorum' if quorum else 'classic'}",
        durable=quorum,
        exclusive=not quorum,
        arguments=args,
    )
    mode = aio_pika.DeliveryMode.PERSISTENT if quorum else aio_pika.DeliveryMode.NOT_PERSISTENT
    arrived: asyncio.Queue[float] = asyncio.Queue()

    async def on_message(_: aio_pika.abc.AbstractIncomingMessage) -> None:
        arrived.put_nowait(time.perf_counter())

    tag = await queue.consume(on_message, no_ack=True)
    lat = []
    for _ in range(samples):
        t0 = time.perf_counter()
        await channel.default_exchange.publish(
            aio_pika.Message(b"x" * 300, delivery_mode=mode), routing_key=queue.name
        )
        lat.append((await arrived.get() - t0) * 1000)
    await queue.cancel(tag)
    await queue.delete(if_unused=False, if_empty=False)
    p50: float = summary(lat[20:])["p50"]
    return p50


async def broker_floor(amqp_url: str, samples: int = 300) -> dict[str, float]:
    """The least two AMQP hops cost here: a persistent message through a quorum queue (the
    job) and a transient one through an exclusive classic queue (the reply)."""
    conn = await aio_pika.connect(amqp_url)
    try:
        channel = await conn.channel(publisher_confirms=True)
        quorum = await _hop_ms(channel, True, samples)
        classic = await _hop_ms(channel, False, samples)
    finally:
        await conn.close()
    return {
        "quorum_persistent_p50": quorum,
        "classic_transient_p50": classic,
        "two_hops_p50": quorum + classic,
    }


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
    if c == 1:
        f["breakdown_ms"] = _breakdown(got["fleet"], f["ttft_ms"]["p50"])
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
        floor = await broker_floor(fleet.amqp_url)
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
        "broker_floor_ms": floor,
        "results": rows,
    }
    ctx.save(NAME, data)
    _print(rows)
    _print_why(rows, floor)
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


def _print_why(rows: list[dict[str, Any]], floor: dict[str, float]) -> None:
    parts = [r["fleet"]["breakdown_ms"] for r in rows if "breakdown_ms" in r["fleet"]]
    report.print_table(
        "Where a fleet first token's time goes at concurrency 1 (p50 ms)",
        ["profile", "publish->worker", "worker->1st token", "reply hop+client"],
        [
            [r["profile"], *r["fleet"]["breakdown_ms"].values()]
            for r in rows
            if "breakdown_ms" in r["fleet"]
        ],
    )
    if parts:
        report.print_table(
            "Broker floor: one message at a time (p50 ms)",
            list(floor),
            [list(floor.values())],
        )


def _chart(ctx: BenchContext, rows: list[dict[str, Any]]) -> None:
    groups = [f"{r['profile']} c{r['concurrency']}" for r in rows]
    series = {f"+TTFT p{p}": [r["added_ttft_ms"][f"p{p}"] for r in rows] for p in (50, 95, 99)}
    charts.grouped_bars(
        ctx.out / f"{NAME}.png", "Added time to first token (fleet - direct)", groups, series, "ms"
    )
