"""Embeddings: vectors per second and bytes on the wire, fleet vs direct.

Batches of 64 texts at 1,536 dimensions. The direct call asks the mock for
`encoding_format: "base64"`, as the fleet's OpenAI-compatible adapter does, and
decodes the vectors to packed float32 bytes (what the fleet's client receives),
so both sides end with the same bytes in hand. Bytes per vector: all reply
message bodies the client received during the fleet phases (start + final
frames) / vectors, vs the direct HTTP response bodies / vectors.
"""

from __future__ import annotations

import base64
import json
import time
from typing import Any

import httpx

from bench import charts, report
from bench.harness import (
    EMBED_MODEL,
    MOCK_KEY,
    BenchContext,
    Fleet,
    WorkerSpec,
    instant,
    run_pool,
    start_fleet,
)
from bench.stats import summary
from bench.streams import direct_client

NAME = "embeddings"
BATCH = 64
DIMS = 1536
CONCURRENCY = 4


def _texts(i: int) -> list[str]:
    return [f"document {i}-{k}: the quick brown fox jumps over the lazy dog" for k in range(BATCH)]


async def _direct(http: httpx.AsyncClient, url: str, i: int, sizes: list[int]) -> float:
    body = {
        "model": EMBED_MODEL,
        "input": _texts(i),
        "dimensions": DIMS,
        "encoding_format": "base64",
    }
    started = time.perf_counter()
    response = await http.post(
        f"{url}/embeddings", json=body, headers={"Authorization": f"Bearer {MOCK_KEY}"}
    )
    response.raise_for_status()
    data = json.loads(response.content)["data"]
    packed = b"".join(base64.b64decode(item["embedding"]) for item in data)
    if len(packed) != BATCH * DIMS * 4:
        raise RuntimeError(f"direct: expected {BATCH} x {DIMS} float32, got {len(packed)} bytes")
    sizes.append(len(response.content))
    return time.perf_counter() - started


async def _fleet(fleet: Fleet, i: int) -> float:
    target = fleet.target("mock", EMBED_MODEL)
    started = time.perf_counter()
    final = await fleet.client.embed(target, _texts(i), dimensions=DIMS)
    took = time.perf_counter() - started
    emb = final.embeddings
    if emb is None or emb.count != BATCH or emb.dims != DIMS:
        raise RuntimeError("fleet: wrong embedding shape")
    return took


async def _phase(n: int, fn: Any, into: list[float]) -> float:
    async def job(i: int) -> None:
        into.append(await fn(i))

    return await run_pool(n, CONCURRENCY, job)


async def run(ctx: BenchContext) -> dict[str, Any]:
    per_phase, rounds = (4, 2) if ctx.quick else (40, 4)
    lat: dict[str, list[float]] = {"direct": [], "fleet": []}
    sizes: dict[str, list[int]] = {"direct": [], "fleet": []}
    wall = {"direct": 0.0, "fleet": 0.0}
    async with (
        start_fleet(
            ctx, {"mock": instant(embed_dims=DIMS)}, worker=WorkerSpec(queues="llm.embed")
        ) as fleet,
        direct_client() as http,
    ):
        url = fleet.mocks["mock"].url
        runners = {
            "direct": lambda i: _direct(http, url, i, sizes["direct"]),
            "fleet": lambda i: _fleet(fleet, i),
        }
        for mode in ("direct", "fleet"):  # warm-up, not counted
            await _phase(CONCURRENCY * 2, runners[mode], [])
        sizes = {"direct": [], "fleet": []}
        for r in range(rounds):
            for mode in ("direct", "fleet") if r % 2 == 0 else ("fleet", "direct"):  # ABBA
                before = fleet.client.bytes
                wall[mode] += await _phase(per_phase, runners[mode], lat[mode])
                if mode == "fleet":
                    # Reply messages may carry frames of several jobs: count the
                    # phase's bytes as a whole (only this phase's jobs are running).
                    sizes["fleet"].append(fleet.client.bytes - before)
        setup = fleet.describe()
    rows: dict[str, dict[str, Any]] = {}
    for mode in ("direct", "fleet"):
        vectors = len(lat[mode]) * BATCH
        rows[mode] = {
            "batches": len(lat[mode]),
            "vectors": vectors,
            "vectors_per_s": vectors / wall[mode] if wall[mode] else 0.0,
            "batch_ms": summary([v * 1000 for v in lat[mode]]),
            "bytes_per_vector": sum(sizes[mode]) / vectors if vectors else 0.0,
        }
    data = {
        "method": (
            f"batches of {BATCH} texts at {DIMS} dims, {CONCURRENCY} in flight; direct = httpx "
            "POST /embeddings with encoding_format=base64 (as the fleet's adapter asks), JSON "
            "parse + base64 decode to packed float32; fleet = FleetClient.embed (packed float32 "
            "in the final frame); bytes = HTTP response bodies vs reply message bodies "
            "(start + final frames)"
        ),
        "setup": setup,
        "batch": BATCH,
        "dims": DIMS,
        "concurrency": CONCURRENCY,
        "raw_float32_bytes_per_vector": DIMS * 4,
        "direct": rows["direct"],
        "fleet": rows["fleet"],
        "fleet_vs_direct_throughput": (
            rows["fleet"]["vectors_per_s"] / rows["direct"]["vectors_per_s"]
            if rows["direct"]["vectors_per_s"]
            else 0.0
        ),
    }
    ctx.save(NAME, data)
    report.print_table(
        f"Embeddings ({BATCH} x {DIMS} dims per batch, {CONCURRENCY} batches in flight)",
        ["path", "batches", "vectors/s", "batch p50 ms", "batch p99 ms", "bytes/vector"],
        [
            [
                m,
                r["batches"],
                r["vectors_per_s"],
                r["batch_ms"]["p50"],
                r["batch_ms"]["p99"],
                r["bytes_per_vector"],
            ]
            for m, r in rows.items()
        ],
    )
    charts.grouped_bars(
        ctx.out / f"{NAME}.png",
        "Embeddings: vectors per second",
        ["vectors/s"],
        {m: [r["vectors_per_s"]] for m, r in rows.items()},
        "vectors/s",
    )
    return data
