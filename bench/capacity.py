"""Stream capacity: concurrent realistic streams one worker sustains within a delivery bound.

The mock stamps every token with `time.time_ns()` as it writes it
(`--stamp-tokens`); the client takes `time.time_ns()` when the delta arrives.
Delivery delay = receipt - stamp, per token. Concurrency steps up until the
fleet's p99 delay passes the bound. Each step also runs the same streams
directly against the mock (the baseline: what the mock plus a Python client
show on this machine). Streams are started over a short stagger window, as
real traffic would be, instead of all in the same millisecond.
"""

from __future__ import annotations

from typing import Any

from bench import charts, report
from bench.harness import (
    CHAT_MODEL,
    MOCK_KEY,
    BenchContext,
    Fleet,
    Proc,
    WorkerSpec,
    broker_process,
    cpu_of,
    realistic,
    start_fleet,
)
from bench.loadgen import LoadSpec, merge, run_loadgens
from bench.stats import summary

NAME = "capacity"
BOUND_MS = 100.0
STAGGER_S = 1.0
STREAMS_PER_CLIENT = 150  # above this a client process gets a sibling (2 cores: keep it few)


def steps(quick: bool) -> list[int]:
    return [10, 20] if quick else [50, 100, 150, 200, 250, 300, 400, 500]


def client_processes(streams: int) -> int:
    return min(3, max(1, -(-streams // STREAMS_PER_CLIENT)))


def _specs(fleet: Fleet, mode: str, streams: int) -> list[LoadSpec]:
    n = client_processes(streams)
    mock = fleet.mocks["mock"]
    shares = [streams // n + (1 if i < streams % n else 0) for i in range(n)]
    return [
        LoadSpec(
            mode=mode,
            streams=k,
            requests=k,
            stagger_s=STAGGER_S,
            stamps=True,
            amqp_url=fleet.amqp_url,
            target=fleet.target("mock"),
            url=mock.url,
            api_key=MOCK_KEY,
            model=CHAT_MODEL,
            offset=i * 100_000,
        )
        for i, k in enumerate(shares)
    ]


async def _run_mode(fleet: Fleet, mode: str, streams: int) -> dict[str, Any]:
    watched: dict[str, Proc] = {"worker": fleet.workers[0], "mock": fleet.mocks["mock"].proc}
    broker = broker_process(fleet.amqp_url)
    before = {k: p.cpu_seconds() for k, p in watched.items()}
    b0 = cpu_of(broker)
    merged = merge(await run_loadgens(_specs(fleet, mode, streams)))
    wall = merged["wall_s"] or 1.0
    cpu_pct = {
        f"{k}_cpu_pct": 100 * (p.cpu_seconds() - before[k]) / wall for k, p in watched.items()
    }
    delays = summary(merged["delays_ms"])
    return {
        "delay_ms": delays,
        "ttft_ms": summary(merged["ttft_ms"]),
        "jobs": merged["jobs"],
        "errors": merged["errors"],
        "tokens": merged["tokens"],
        "tokens_per_s": merged["tokens"] / wall,
        "wall_s": wall,
        "client_processes": merged["processes"],
        "client_cpu_pct_per_process": merged["cpu_pct_per_process"],
        "broker_cpu_pct": 100 * (cpu_of(broker) - b0) / wall,
        **cpu_pct,
        "within_bound": delays["p99"] <= BOUND_MS and merged["errors"] == 0 and delays["n"] > 0,
    }


async def run(ctx: BenchContext) -> dict[str, Any]:
    rows: list[dict[str, Any]] = []
    mock = realistic(200 if not ctx.quick else 10, stamp_tokens=True, processes=2)
    worker = WorkerSpec(concurrency=1000, queues="llm.chat")
    async with start_fleet(ctx, {"mock": mock}, worker=worker) as fleet:
        # Warm-up: connections on both paths, code paths, caches (short answers).
        await run_loadgens(
            [
                LoadSpec(
                    mode=m,
                    streams=50,
                    requests=100,
                    max_tokens=2,
                    amqp_url=fleet.amqp_url,
                    target=fleet.target("mock"),
                    url=fleet.mocks["mock"].url,
                    api_key=MOCK_KEY,
                    model=CHAT_MODEL,
                )
                for m in ("direct", "fleet")
            ]
        )
        for streams in steps(ctx.quick):
            direct = await _run_mode(fleet, "direct", streams)
            via_fleet = await _run_mode(fleet, "fleet", streams)
            rows.append({"streams": streams, "direct": direct, "fleet": via_fleet})
            _print_step(rows[-1])
            if not via_fleet["within_bound"]:
                break
        setup = fleet.describe()
    passing = [r["streams"] for r in rows if r["fleet"]["within_bound"]]
    data = {
        "method": (
            "delivery delay = client time.time_ns() at delta receipt minus the mock's stamp "
            "taken when it wrote the token; one request per stream, streams started over "
            f"{STAGGER_S:g}s; bound p99 <= {BOUND_MS:g} ms and no errors; the direct baseline "
            "runs the same streams with httpx clients; several client processes share the load "
            f"above {STREAMS_PER_CLIENT} streams (see client_processes)"
        ),
        "bound_ms": BOUND_MS,
        "setup": setup,
        "capacity_streams": max(passing, default=0),
        "steps": rows,
    }
    ctx.save(NAME, data)
    print(
        f"\ncapacity within p99 <= {BOUND_MS:g} ms: {data['capacity_streams']} streams per worker"
    )
    _chart(ctx, rows)
    return data


def _print_step(row: dict[str, Any]) -> None:
    d, f = row["direct"], row["fleet"]
    report.print_table(
        f"Capacity step: {row['streams']} realistic streams",
        [
            "path",
            "delay p50",
            "delay p99",
            "max",
            "tokens/s",
            "errors",
            "worker cpu%",
            "mock cpu%",
            "broker cpu%",
            "client cpu%",
            "ok",
        ],
        [
            [
                name,
                m["delay_ms"]["p50"],
                m["delay_ms"]["p99"],
                m["delay_ms"]["max"],
                m["tokens_per_s"],
                m["errors"],
                m["worker_cpu_pct"],
                m["mock_cpu_pct"],
                m["broker_cpu_pct"],
                "/".join(str(c) for c in m["client_cpu_pct_per_process"]),
                "yes" if m["within_bound"] else "NO",
            ]
            for name, m in (("direct", d), ("fleet", f))
        ],
    )


def _chart(ctx: BenchContext, rows: list[dict[str, Any]]) -> None:
    xs = [float(r["streams"]) for r in rows]
    series = {
        f"{mode} p{p}": (xs, [r[mode]["delay_ms"][f"p{p}"] for r in rows])
        for mode in ("fleet", "direct")
        for p in (50, 99)
    }
    charts.lines(
        ctx.out / f"{NAME}.png",
        "Token delivery delay vs concurrent streams (one worker)",
        series,
        "concurrent streams",
        "ms (mock write → client receipt)",
        hline=BOUND_MS,
    )
