"""Profile a worker's hot path with py-spy while the fleet carries load (opt-in).

`python -m bench.run --only profile` samples the worker during (1) the instant
profile at 16 concurrent streams and (2) 300 concurrent realistic streams, and
writes `profile-<scenario>.txt` (top functions by own and total time, and own
time grouped by layer) plus the raw collapsed stacks for flame-graph tools.
Not part of the default suite: sampling (even non-blocking) costs the worker CPU.
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import sys
from collections import Counter
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from bench.harness import (
    CHAT_MODEL,
    MOCK_KEY,
    BenchContext,
    Fleet,
    MockSpec,
    WorkerSpec,
    instant,
    realistic,
    start_fleet,
)
from bench.loadgen import LoadSpec, merge, run_loadgens

NAME = "profile"
RATE = 200  # samples per second

# Own time is grouped by the file of the innermost Python frame; C code (msgspec,
# json's scanner, socket calls) is charged to the Python function that called it.
# Own time in `Runner.run` is time inside uvloop's C loop with no Python frame
# above it: epoll, socket reads/writes, callback dispatch.
LAYERS: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("AMQP client (aiormq, pamqp)", ("aiormq/", "pamqp/")),
    ("aio-pika", ("aio_pika/",)),
    (
        "HTTP client (httpx, httpcore, h11, anyio, aiohttp transport)",
        ("httpx", "httpcore/", "h11/", "anyio/", "aiohttp/", "aiohappyeyeballs/", "yarl/"),
    ),
    ("SSE decode (providers/sse.py)", ("providers/sse.py",)),
    ("JSON decode (stdlib json)", ("json/",)),
    ("provider adapter (providers/openai_compat.py)", ("providers/openai_compat.py",)),
    ("retry (providers/retry.py, tenacity)", ("providers/retry.py", "tenacity/")),
    ("reply stream (workers/reply.py)", ("workers/reply.py",)),
    ("contracts + msgpack (contracts/, msgspec)", ("contracts/", "msgspec/")),
    ("worker runtime (workers/ other)", ("workers/",)),
    ("providers/ other", ("providers/",)),
    ("logging (structlog, logging)", ("structlog/", "logging/")),
    ("metrics (prometheus_client)", ("prometheus_client/",)),
    ("event loop C code (uvloop: epoll, sockets)", ("asyncio/runners.py",)),
    ("asyncio Python (tasks, locks, queues, timeouts)", ("asyncio/", "uvloop/")),
    ("imports at run time (importlib)", ("<frozen importlib", "_distutils_hack/")),
    ("stdlib other (contextlib, enum, ...)", ("contextlib.py", "enum.py", "functools.py")),
)


# Inclusive time of the steps on a job's path, matched by function name.
PATHS: tuple[tuple[str, str], ...] = (
    ("provider call, whole (OpenAICompatible.stream_chat)", "OpenAICompatible.stream_chat "),
    ("  send request + pool checkout (AsyncClient._send_single_request)", "_send_single_request "),
    ("  pool bookkeeping (_assign_requests_to_connections)", "_assign_requests_to_connections "),
    ("  byte stream reads (httpx Response.aiter_raw)", "Response.aiter_raw "),
    ("  SSE events incl. reads (aiter_sse)", "aiter_sse "),
    ("  SSE line decoding (SSEDecoder.feed)", "SSEDecoder.feed "),
    ("  chunk JSON + mapping (_StreamState.feed)", "_StreamState.feed "),
    ("  drain + close after [DONE] (openai_compat._drain)", "_drain (providers"),
    ("  anyio cancel scopes per read (fail_after)", "fail_after "),
    ("  sniffio lookup in httpcore (current_async_library)", "current_async_library "),
    ("retry wrapper (tenacity AsyncRetrying)", "AsyncRetrying.__call__ "),
    ("reply frames: batching loop (_Outbox._send_loop)", "_Outbox._send_loop "),
    ("reply frames: publish (ReplyPublisher.publish)", "ReplyPublisher.publish "),
    ("AMQP client, all (aiormq/)", "(aiormq/"),
    ("AMQP frame reading (aiormq FrameReceiver)", "FrameReceiver"),
    ("job decode (decode_job)", "decode_job "),
    ("ack (IncomingMessage.ack)", "IncomingMessage.ack "),
    ("metrics (prometheus_client)", "(prometheus_client/"),
    ("logging (structlog)", "(structlog/"),
)
# Frames every sample shares (process start-up); listing them says nothing.
_ROOTS = ("click/", "<frozen runpy>", "workers/cli.py", "uvloop/__init__.py", "asyncio/runners.py")


def _where(frame: str) -> str:
    return frame.partition(" (")[2].rstrip(")")


def _layer(frame: str) -> str:
    where = _where(frame)
    for name, prefixes in LAYERS:
        if any(where.startswith(p) or f"/{p}" in where for p in prefixes):
            return name
    return "other"


def _short(frame: str) -> str:
    """`fn (/long/site-packages/pkg/mod.py:12)` → `fn (pkg/mod.py:12)`."""
    name, _, where = frame.partition(" (")
    for marker in ("site-packages/", "/work/main/"):
        if marker in where:
            where = where.split(marker, 1)[1]
            break
    return f"{name} ({where}" if where else name


def summarize(raw: str, title: str, top: int = 30) -> str:
    own: Counter[str] = Counter()
    total: Counter[str] = Counter()
    layers: Counter[str] = Counter()
    paths: Counter[str] = Counter()
    samples = 0
    for line in raw.splitlines():
        stack, _, count_s = line.rpartition(" ")
        if not stack or not count_s.isdigit():
            continue
        count = int(count_s)
        # Drop py-spy's process/thread pseudo-frames.
        frames = [f for f in stack.split(";") if " (" in f and not f.startswith("process ")]
        if not frames:
            continue
        samples += count
        leaf = _short(frames[-1])
        own[leaf] += count
        layers[_layer(leaf)] += count
        for f in set(map(_short, frames)):
            if not _where(f).startswith(_ROOTS):
                total[f] += count
        for label, needle in PATHS:
            if needle in stack:
                paths[label] += count

    def pct(n: int) -> str:
        return f"{100 * n / samples:5.1f}%" if samples else "  -  "

    out = [f"{title}", f"{samples} samples at {RATE}/s (idle excluded)", ""]
    out.append("Own time by layer (innermost Python frame):")
    out += [f"  {pct(n)}  {name}" for name, n in layers.most_common()]
    out += ["", "Inclusive time of steps on the job path (% of all samples):"]
    out += [f"  {pct(paths[label])}  {label}" for label, _ in PATHS]
    out += ["", f"Top {top} functions by own time:"]
    out += [f"  {pct(n)}  {f}" for f, n in own.most_common(top)]
    out += ["", f"Top {top} functions by total time (inclusive):"]
    out += [f"  {pct(n)}  {f}" for f, n in total.most_common(top)]
    return "\n".join(out) + "\n"


async def _profile_during(
    ctx: BenchContext, fleet: Fleet, label: str, specs: Sequence[LoadSpec]
) -> dict[str, Any]:
    spy = shutil.which("py-spy") or str(Path(sys.executable).with_name("py-spy"))
    raw_path = ctx.out / f"profile-{label}.collapsed"
    worker = fleet.workers[0]
    # --nonblocking: never pause the worker (the figures beside it stay honest).
    proc = await asyncio.create_subprocess_exec(
        spy, "record", "--pid", str(worker.pid), "--rate", str(RATE), "--format", "raw",
        "--function", "--nonblocking", "-o", str(raw_path),
        stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    await asyncio.sleep(1.0)  # py-spy attaches
    cpu0 = worker.cpu_seconds()
    merged = merge(await run_loadgens(specs))
    cpu = worker.cpu_seconds() - cpu0
    proc.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
    _, err = await asyncio.wait_for(proc.communicate(), 60)
    if not raw_path.exists():
        raise RuntimeError(f"py-spy wrote nothing: {err.decode(errors='replace')[-2000:]}")
    title = (
        f"worker hot path, {label}: {merged['jobs']} jobs, {merged['tokens']} tokens in "
        f"{merged['wall_s']:.1f}s; worker CPU {100 * cpu / merged['wall_s']:.0f}% of one core"
    )
    text = summarize(raw_path.read_text(), title)
    text += "\nRaw collapsed stacks (flamegraph.pl / speedscope): " + raw_path.name + "\n"
    (ctx.out / f"profile-{label}.txt").write_text(text)
    print("\n" + "\n".join(text.splitlines()[:40]))
    return {
        "scenario": label,
        "jobs": merged["jobs"],
        "errors": merged["errors"],
        "worker_cpu_s": cpu,
        "wall_s": merged["wall_s"],
    }


def _load(fleet: Fleet, mode: str, streams: int, requests: int, **kw: Any) -> LoadSpec:
    return LoadSpec(
        mode=mode,
        streams=streams,
        requests=requests,
        amqp_url=fleet.amqp_url,
        target=fleet.target("mock"),
        url=fleet.mocks["mock"].url,
        api_key=MOCK_KEY,
        model=CHAT_MODEL,
        **kw,
    )


async def _scenario(
    ctx: BenchContext, label: str, mock: MockSpec, streams: int, requests: int, clients: int
) -> dict[str, Any]:
    async with start_fleet(ctx, {"mock": mock}, worker=WorkerSpec(concurrency=1000)) as fleet:
        await run_loadgens([_load(fleet, "fleet", 16, 64, max_tokens=2)])  # warm-up
        share = streams // clients
        specs = [
            _load(fleet, "fleet", share, requests // clients, stagger_s=1.0, offset=i * 100_000)
            for i in range(clients)
        ]
        return await _profile_during(ctx, fleet, label, specs)


async def run(ctx: BenchContext) -> dict[str, Any]:
    ctx.out.mkdir(parents=True, exist_ok=True)
    q = ctx.quick
    results = [
        await _scenario(ctx, "instant-c16", instant(50), 16, 200 if q else 3000, 1),
        await _scenario(
            ctx,
            "realistic-300",
            realistic(10 if q else 200, processes=2),
            30 if q else 300,
            30 if q else 300,
            1 if q else 2,
        ),
    ]
    data = {"rate_hz": RATE, "scenarios": results}
    ctx.save(NAME, data)
    return data
