"""Load generator in its own process: fleet (FleetClient) or direct (httpx) streams.

Why a subprocess: the CPU benchmark needs the direct client's own CPU time
(`time.process_time()`, nothing of the bench process mixed in), and at hundreds
of streams one client process on 2 cores can itself become the bottleneck, so
capacity runs several of these side by side.

Protocol: the child connects, prints `ready`, waits for `go` on stdin, runs,
then prints one JSON line with its figures.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import msgspec

from bench.streams import (
    CountingClient,
    StreamResult,
    direct_client,
    direct_stream,
    fleet_stream,
    prompt,
    stamp_delays_ms,
)
from contracts.jobs import Target


@dataclass(frozen=True, slots=True)
class LoadSpec:
    mode: str  # "fleet" | "direct"
    streams: int  # concurrent streams
    requests: int  # total requests (streams run them one after another)
    stagger_s: float = 0.0  # spread the streams' first starts over this many seconds
    stamps: bool = False
    max_tokens: int | None = None
    amqp_url: str = ""
    target: Target | None = None
    url: str = ""
    api_key: str = ""
    model: str = ""
    offset: int = 0  # request index offset, so prompts differ across processes
    warmup: int = 0  # requests run before measuring (opens connections), not counted

    def argv(self) -> list[str]:
        args = [
            "--mode",
            self.mode,
            "--streams",
            str(self.streams),
            "--requests",
            str(self.requests),
            "--warmup",
            str(self.warmup),
            "--stagger",
            str(self.stagger_s),
            "--offset",
            str(self.offset),
        ]
        if self.stamps:
            args.append("--stamps")
        if self.max_tokens is not None:
            args += ["--max-tokens", str(self.max_tokens)]
        if self.mode == "fleet":
            assert self.target is not None
            args += [
                "--amqp-url",
                self.amqp_url,
                "--target",
                msgspec.json.encode(self.target).decode(),
            ]
        else:
            args += ["--url", self.url, "--api-key", self.api_key, "--model", self.model]
        return args


@dataclass(slots=True)
class _Tally:
    ttft_ms: list[float] = field(default_factory=list)
    total_ms: list[float] = field(default_factory=list)
    delays_ms: list[float] = field(default_factory=list)
    tokens: int = 0
    frames: int = 0
    jobs: int = 0
    errors: int = 0

    def add(self, r: StreamResult) -> None:
        self.ttft_ms.append(r.ttft * 1000)
        self.total_ms.append(r.total * 1000)
        self.tokens += r.tokens
        self.frames += r.frames
        self.jobs += 1


def _rss_mb() -> float:
    """Current resident set (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except (OSError, ValueError, IndexError):
        return 0.0


async def _peak_rss(into: list[float]) -> None:
    # Sampled during the run only: ru_maxrss would report the import-time peak.
    while True:
        into[0] = max(into[0], _rss_mb())
        await asyncio.sleep(0.25)


async def _run(args: argparse.Namespace) -> dict[str, Any]:
    tally = _Tally()
    on_text = None
    if args.stamps:

        def on_text(text: str) -> None:
            stamp_delays_ms(text, time.time_ns(), tally.delays_ms)

    fleet: CountingClient | None = None
    http = direct_client()
    if args.mode == "fleet":
        fleet = CountingClient(args.amqp_url, default_timeout=120, name="bench loadgen")
        await fleet.connect()
        target = msgspec.json.decode(args.target, type=Target)
    counter = iter(range(args.requests))

    async def one(i: int) -> StreamResult:
        text = prompt(args.offset + i)
        if fleet is not None:
            return await fleet_stream(
                fleet, target, text, max_tokens=args.max_tokens, on_text=on_text
            )
        return await direct_stream(
            http,
            args.url,
            args.api_key,
            args.model,
            text,
            max_tokens=args.max_tokens,
            on_text=on_text,
        )

    async def lane(k: int) -> None:
        if args.stagger:
            await asyncio.sleep(args.stagger * k / max(1, args.streams))
        for i in counter:
            try:
                tally.add(await one(i))
            except Exception as exc:  # counted and reported, never hidden
                tally.errors += 1
                print(f"loadgen error: {exc!r}", file=sys.stderr)

    if args.warmup:
        # Open this process's connections and warm its code paths, uncounted.
        lanes = min(args.streams, args.warmup)
        per_lane = range(max(1, args.warmup // lanes))
        await asyncio.gather(
            *(one(10_000_000 + k * 1000 + j) for k in range(lanes) for j in per_lane)
        )
    print("ready", flush=True)
    await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)
    m0, b0 = (fleet.messages, fleet.bytes) if fleet is not None else (0, 0)
    peak = [0.0]
    sampler = asyncio.create_task(_peak_rss(peak))
    cpu0, wall0 = time.process_time(), time.perf_counter()
    await asyncio.gather(*(lane(k) for k in range(min(args.streams, args.requests))))
    sampler.cancel()
    cpu, wall = time.process_time() - cpu0, time.perf_counter() - wall0
    messages, size = (fleet.messages - m0, fleet.bytes - b0) if fleet is not None else (0, 0)
    await http.aclose()
    if fleet is not None:
        await fleet.close()
    return {
        "mode": args.mode,
        "cpu_s": cpu,
        "wall_s": wall,
        "cpu_pct": 100 * cpu / wall if wall else 0.0,
        "rss_peak_mb": max(peak[0], _rss_mb()),
        "jobs": tally.jobs,
        "errors": tally.errors,
        "tokens": tally.tokens,
        "frames": tally.frames,
        "reply_messages": messages,
        "reply_bytes": size,
        "ttft_ms": [round(v, 3) for v in tally.ttft_ms],
        "total_ms": [round(v, 3) for v in tally.total_ms],
        "delays_ms": [round(v, 3) for v in tally.delays_ms],
    }


def _parse(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--mode", choices=["fleet", "direct"], required=True)
    p.add_argument("--streams", type=int, required=True)
    p.add_argument("--requests", type=int, required=True)
    p.add_argument("--stagger", type=float, default=0.0)
    p.add_argument("--offset", type=int, default=0)
    p.add_argument("--warmup", type=int, default=0)
    p.add_argument("--stamps", action="store_true")
    p.add_argument("--max-tokens", type=int)
    p.add_argument("--amqp-url", default="")
    p.add_argument("--target", default="")
    p.add_argument("--url", default="")
    p.add_argument("--api-key", default="")
    p.add_argument("--model", default="")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> None:
    args = _parse(argv)
    try:
        import uvloop
    except ImportError:  # pragma: no cover
        result = asyncio.run(_run(args))
    else:
        result = uvloop.run(_run(args))
    print(json.dumps(result), flush=True)


# -- parent side ---------------------------------------------------------------


async def run_loadgens(specs: Sequence[LoadSpec], limit_s: float = 600.0) -> list[dict[str, Any]]:
    """Start one child per spec, release them together, collect their results."""
    children = [
        await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "bench.loadgen",
            *s.argv(),
            stdin=asyncio.subprocess.PIPE,
            stdout=asyncio.subprocess.PIPE,
        )
        for s in specs
    ]
    try:
        for c in children:
            assert c.stdout is not None
            line = await asyncio.wait_for(c.stdout.readline(), 60)
            if line.strip() != b"ready":
                raise RuntimeError(f"loadgen did not start (said {line!r})")
        for c in children:
            assert c.stdin is not None
            c.stdin.write(b"go\n")
            await c.stdin.drain()
        outs = await asyncio.wait_for(asyncio.gather(*(c.communicate() for c in children)), limit_s)
    finally:
        for c in children:
            if c.returncode is None:
                c.kill()
                await c.wait()
    results: list[dict[str, Any]] = []
    for (stdout, _), c in zip(outs, children, strict=True):
        if c.returncode != 0 or not stdout.strip():
            raise RuntimeError(f"loadgen exited with {c.returncode}")
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    return results


def merge(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """Sum counters and concatenate samples across client processes."""
    out: dict[str, Any] = {"processes": len(results)}
    for key in ("cpu_s", "jobs", "errors", "tokens", "frames", "reply_messages", "reply_bytes"):
        out[key] = sum(r[key] for r in results)
    out["wall_s"] = max((r["wall_s"] for r in results), default=0.0)
    out["cpu_pct_per_process"] = [round(r["cpu_pct"], 1) for r in results]
    out["rss_peak_mb_per_process"] = [round(r["rss_peak_mb"], 1) for r in results]
    for key in ("ttft_ms", "total_ms", "delays_ms"):
        out[key] = [v for r in results for v in r[key]]
    return out


if __name__ == "__main__":
    main()
