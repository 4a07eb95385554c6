"""Worker memory: RSS idle, under 100 and 300 realistic streams, and its trend over a churn.

The churn runs short instant-profile jobs back to back for minutes; RSS is
sampled every few seconds and a least-squares slope (MB/min) is fitted after a
warm-up, so start-up growth (imports, pools, caches filling) is not counted as
a leak. Baseline: the peak RSS of one plain httpx client process holding the
same N streams directly (what any Python process carrying those streams needs).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from dataclasses import dataclass
from typing import Any

from bench import charts, report
from bench.harness import (
    CHAT_MODEL,
    MOCK_KEY,
    BenchContext,
    Fleet,
    Proc,
    WorkerSpec,
    instant,
    realistic,
    run_pool,
    start_fleet,
)
from bench.loadgen import LoadSpec, merge, run_loadgens
from bench.stats import slope, summary
from bench.streams import fleet_stream, prompt

NAME = "memory"
STREAM_LEVELS = (100, 300)


@dataclass(frozen=True, slots=True)
class Churn:
    seconds: float
    warmup_s: float
    sample_every_s: float
    concurrency: int = 16


def churn_plan(quick: bool) -> Churn:
    return Churn(4.0, 1.0, 0.25) if quick else Churn(300.0, 60.0, 3.0)


class Sampler:
    """Samples a process's RSS on a timer until stopped."""

    def __init__(self, proc: Proc, every: float) -> None:
        self.proc, self.every = proc, every
        self.t: list[float] = []
        self.mb: list[float] = []
        self._task: asyncio.Task[None] | None = None
        self._t0 = time.monotonic()

    async def _loop(self) -> None:
        while True:
            self.t.append(time.monotonic() - self._t0)
            self.mb.append(self.proc.rss_mb())
            await asyncio.sleep(self.every)

    def __enter__(self) -> Sampler:
        self._t0 = time.monotonic()
        self._task = asyncio.create_task(self._loop())
        return self

    def __exit__(self, *exc: object) -> None:
        if self._task is not None:
            self._task.cancel()


async def _under_streams(fleet: Fleet, streams: int, quick: bool) -> dict[str, Any]:
    mock = fleet.mocks["mock"]
    stagger = 0.2 if quick else 1.0
    (direct,) = await run_loadgens(
        [
            LoadSpec(
                mode="direct",
                streams=streams,
                requests=streams,
                stagger_s=stagger,
                url=mock.url,
                api_key=MOCK_KEY,
                model=CHAT_MODEL,
            )
        ]
    )
    per = 150
    n = max(1, -(-streams // per))
    specs = [
        LoadSpec(
            mode="fleet",
            streams=streams // n + (1 if i < streams % n else 0),
            requests=streams // n + (1 if i < streams % n else 0),
            stagger_s=stagger,
            amqp_url=fleet.amqp_url,
            target=fleet.target("mock"),
            offset=i * 100_000,
        )
        for i in range(n)
    ]
    worker = fleet.workers[0]
    with Sampler(worker, 0.25) as s:
        merged = merge(await run_loadgens(specs))
    mid = [
        mb for t, mb in zip(s.t, s.mb, strict=True) if stagger + 0.5 <= t <= merged["wall_s"] - 0.5
    ]
    return {
        "streams": streams,
        "client_processes": n,
        "jobs": merged["jobs"],
        "errors": merged["errors"] + direct["errors"],
        "worker_rss_peak_mb": max(s.mb, default=0.0),
        "direct_client_rss_peak_mb": direct["rss_peak_mb"],
        "fleet_client_rss_peak_mb_per_process": merged["rss_peak_mb_per_process"],
        "worker_rss_steady_median_mb": summary(mid or s.mb)["p50"],
        "mock_rss_mb": fleet.mocks["mock"].proc.rss_mb(),
        "short_answers": quick,
    }


async def _churn(fleet: Fleet, plan: Churn) -> dict[str, Any]:
    target = fleet.target("vllm")
    deadline = time.monotonic() + plan.seconds
    done = 0

    async def lane(k: int) -> None:
        nonlocal done
        i = k
        while time.monotonic() < deadline:
            await fleet_stream(fleet.client, target, prompt(i))
            done += 1
            i += plan.concurrency

    with Sampler(fleet.workers[0], plan.sample_every_s) as s:
        await asyncio.gather(*(lane(k) for k in range(plan.concurrency)))
    fit = [(t, mb) for t, mb in zip(s.t, s.mb, strict=True) if t >= plan.warmup_s]
    per_min = slope([t / 60 for t, _ in fit], [mb for _, mb in fit])
    return {
        "seconds": plan.seconds,
        "warmup_excluded_s": plan.warmup_s,
        "sample_every_s": plan.sample_every_s,
        "concurrency": plan.concurrency,
        "jobs": done,
        "jobs_per_s": done / plan.seconds if plan.seconds else 0.0,
        "rss_start_mb": s.mb[0] if s.mb else 0.0,
        "rss_after_warmup_mb": fit[0][1] if fit else 0.0,
        "rss_end_mb": s.mb[-1] if s.mb else 0.0,
        "rss_max_mb": max(s.mb, default=0.0),
        "slope_mb_per_min": per_min,
        "samples": [[round(t, 2), round(mb, 2)] for t, mb in zip(s.t, s.mb, strict=True)],
    }


async def run(ctx: BenchContext) -> dict[str, Any]:
    mocks = {
        "mock": realistic(10 if ctx.quick else 200, processes=2),
        "vllm": instant(50),
    }
    worker = WorkerSpec(concurrency=1000, queues="llm.chat")
    plan = churn_plan(ctx.quick)
    async with start_fleet(ctx, mocks, worker=worker) as fleet:
        w = fleet.workers[0]
        pause = 0.3 if ctx.quick else 1.0
        await asyncio.sleep(pause)
        idle_cold = w.rss_mb()
        await run_pool(
            32, 16, lambda i: _discard(fleet_stream(fleet.client, fleet.target("vllm"), prompt(i)))
        )
        idle_warm = w.rss_mb()
        # Churn before the wide stream levels: 300 streams raise the allocator's
        # high-water mark, and a slow leak would hide in that free space for a while.
        churn = await _churn(fleet, plan)
        await asyncio.sleep(pause)
        after_churn = w.rss_mb()
        counts = (10, 30) if ctx.quick else STREAM_LEVELS
        levels = [await _under_streams(fleet, n, ctx.quick) for n in counts]
        await asyncio.sleep(pause)
        after_streams = w.rss_mb()
        setup = fleet.describe()
    data = {
        "method": (
            "worker RSS via psutil; idle = after readiness before any job, and again after 32 "
            "warm-up jobs; churn (run first) = short instant jobs back to back, RSS sampled on "
            "a timer, least-squares slope after the warm-up; under N streams = peak and steady "
            "median while N realistic streams run (after the churn)"
        ),
        "setup": setup,
        "worker_rss_idle_mb": idle_cold,
        "worker_rss_idle_warm_mb": idle_warm,
        "under_streams": levels,
        "worker_rss_after_streams_mb": after_streams,
        "churn": churn,
        "worker_rss_after_churn_mb": after_churn,
    }
    ctx.save(NAME, data)
    _print(data)
    _chart(ctx, churn)
    return data


async def _discard(coro: Any) -> None:
    with contextlib.suppress(Exception):
        await coro


def _print(d: dict[str, Any]) -> None:
    rows: list[list[object]] = [
        ["idle (cold)", d["worker_rss_idle_mb"]],
        ["idle (after 32 jobs)", d["worker_rss_idle_warm_mb"]],
    ]
    for lvl in d["under_streams"]:
        rows.append([f"{lvl['streams']} streams (peak)", lvl["worker_rss_peak_mb"]])
        rows.append(
            [f"{lvl['streams']} streams (steady median)", lvl["worker_rss_steady_median_mb"]]
        )
        rows.append(
            [
                f"{lvl['streams']} streams: direct httpx client peak",
                lvl["direct_client_rss_peak_mb"],
            ]
        )
    c = d["churn"]
    rows += [
        ["after churn, idle", d["worker_rss_after_churn_mb"]],
        ["after streams, idle", d["worker_rss_after_streams_mb"]],
        [f"churn start ({c['jobs']} jobs, {c['jobs_per_s']:.0f}/s)", c["rss_start_mb"]],
        ["churn end", c["rss_end_mb"]],
        ["churn slope after warm-up (MB/min)", c["slope_mb_per_min"]],
    ]
    report.print_table("Worker memory (RSS, MB)", ["when", "MB"], rows)


def _chart(ctx: BenchContext, churn: dict[str, Any]) -> None:
    ts = [s[0] for s in churn["samples"]]
    mbs = [s[1] for s in churn["samples"]]
    charts.lines(
        ctx.out / f"{NAME}.png",
        f"Worker RSS over the churn (slope {churn['slope_mb_per_min']:+.2f} MB/min after warm-up)",
        {"worker RSS": (ts, mbs)},
        "seconds",
        "MB",
    )
