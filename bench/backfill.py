"""Backfill at the rate limit: `llm-fleet backfill` flat out, interactive chat beside it.

One mock process enforces 3,000 requests/min and 1M tokens/min on the embedding
provider ("openai", pointed at the mock), as one key's budgets. It must be ONE
process: each mock process keeps its own buckets. Vectors are 256-dimensional because
pacing is what is measured here, not vector bytes (those are `bench/embeddings.py`'s).
A second, unlimited mock ("mock") serves chat with a realistic first-token delay.

The workers are deployed as by default (llm.chat, llm.embed and llm.batch; batch jobs
on their own slots). Phases, on one fleet:

1. baseline: open-loop chat only, a new stream every 1/CHAT_RATE s whatever the
   earlier ones are doing; client-observed TTFT (send to the first text) and total.
   Run before and again after the paced backfill (A-B-A), so drift in the machine's
   other load hits the baseline as much as the backfill.
2. paced: the backfill as a subprocess with `--rpm/--tpm` set to the mock's limits,
   embedding a generated JSONL corpus into a `.npy` (`--no-cache`), while the same chat
   load runs. The corpus's texts have 17 to 24 words (the mock bills one token per
   word) in batches of 16, so a request is about 328 tokens: at 3,000 requests/min
   that is 98% of the token limit, and both limits bind.
3. learned (full mode only): the same without `--rpm/--tpm`, no chat: the backfill
   paces by the `x-ratelimit-*` budgets the workers pass back.

Counters are read every second: the mock's embedding requests (`/_mock/stats`, 429s
included) and the worker's own (`llm_fleet_jobs_total` by outcome, `llm_fleet_tokens_total`,
from its /metrics). What the limit counts is what the mock accepted, so the rate is the
mock's arrivals less the 429s (the worker's `rate_limited` outcomes: a job that does not
wait on rate limits ends on its first 429), and tokens are those requests times the
corpus's mean tokens per request. The sustained rate is read over the steady part: from
`skip_s` after the first request reached the mock (the process's start-up and the pacer's
opening burst left out) to the last full second in which requests still arrived. Chat
TTFT "during" counts the streams sent in that window. Correctness reads the output back:
every corpus id exactly once, rows in input order, sampled rows equal to the mock's vector
for their text, and tokens billed (the worker's counter) equal to the corpus's: nothing
was embedded twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import random
import re
import signal
import subprocess
import tempfile
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import psutil  # type: ignore[import-untyped,unused-ignore]
from prometheus_client.parser import text_string_to_metric_families

from bench import charts, report
from bench.harness import (
    EMBED_MODEL,
    ROOT,
    BenchContext,
    Fleet,
    MockSpec,
    Proc,
    WorkerSpec,
    broker_process,
    cpu_of,
    spawn,
    start_fleet,
)
from bench.stats import added, summary
from bench.streams import fleet_stream, prompt
from providers.mock.text import embedding_bytes
from workers.config import Settings

NAME = "backfill"
RPM = 3_000
TPM = 1_000_000
BATCH = 16
DIMS = 256
WORDS = (17, 24)  # words per text, uniform: 20.5 on average
EMBED_PROVIDER = "openai"
CHAT_PROVIDER = "mock"
CHAT_RATE = 8.0  # new chat streams per second
EMBED_MOCK = MockSpec(embed_dims=DIMS, rpm=RPM, tpm=TPM)
CHAT_MOCK = MockSpec(ttft_ms=200.0, tokens_per_sec=50.0, tokens=40)
WORKER = WorkerSpec(concurrency=Settings().concurrency, queues="llm.chat,llm.embed,llm.batch")
SAMPLE_EVERY = 1.0  # seconds between readings of the counters
VERIFY_ROWS = 1_000  # rows whose vector is checked against the mock's
# Common short English words, so the texts read like prose to a token estimate; the mock
# bills each word as one token.
_VOCABULARY_TEXT = (
    "the of and to in is it that for on was with he as at by this had not are but from or "
    "have an they which one you were all we her she there would their will when who him "
    "been has more if no out do so can what up said about other into than its time only "
    "could new them man some these then two first may any like now my such make over our "
    "even most me state after also made many did must before back see through way where "
    "get much go well your know should down work year because come people just say each "
    "those take day good how long very world here both life being under never same last"
)
VOCABULARY = tuple(_VOCABULARY_TEXT.split())


@dataclass(frozen=True, slots=True)
class Plan:
    baseline_s: float  # chat alone
    paced_s: float  # the paced backfill's length at the limit (sets the corpus size)
    learned_s: float | None  # the learned-limits run's, None: not run
    skip_s: float  # start of the steady window, after the backfill's start


def plan(quick: bool) -> Plan:
    if quick:
        return Plan(baseline_s=4.0, paced_s=10.0, learned_s=None, skip_s=3.0)
    return Plan(baseline_s=30.0, paced_s=180.0, learned_s=90.0, skip_s=10.0)


# -- corpus --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Corpus:
    path: Path
    ids: list[str]
    texts: list[str]
    tokens: int  # what the mock bills for all of them

    @property
    def tokens_per_request(self) -> float:
        return BATCH * self.tokens / len(self.ids)

    def describe(self) -> dict[str, Any]:
        return {
            "texts": len(self.ids),
            "tokens": self.tokens,
            "words_per_text": list(WORDS),
            "tokens_per_text_mean": self.tokens / len(self.ids),
            "tokens_per_request_mean": self.tokens_per_request,
        }


def texts_for(seconds: float) -> int:
    """Texts that take `seconds` at the request limit, whole batches."""
    return int(seconds * RPM / 60) * BATCH


def make_corpus(path: Path, count: int, prefix: str, seed: int) -> Corpus:
    rng = random.Random(seed)
    ids: list[str] = []
    texts: list[str] = []
    tokens = 0
    with path.open("w") as f:
        for n in range(count):
            words = rng.choices(VOCABULARY, k=rng.randint(*WORDS))
            text = " ".join(words)
            ids.append(f"{prefix}-{n:07d}")
            texts.append(text)
            tokens += len(words)
            f.write(json.dumps({"id": ids[-1], "text": text}) + "\n")
    return Corpus(path, ids, texts, tokens)


# -- open-loop chat ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ChatSample:
    started: float  # perf_counter() when sent
    ttft_ms: float
    total_ms: float


@dataclass(slots=True)
class ChatLoad:
    """A new chat stream every 1/rate seconds until stopped, whatever earlier ones do
    (open loop: a slow fleet gets more streams at once, not fewer requests)."""

    fleet: Fleet
    rate: float
    samples: list[ChatSample] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    _stop: asyncio.Event = field(default_factory=asyncio.Event)
    _task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        self._stop.set()
        if self._task is not None:
            await self._task

    async def _one(self, i: int) -> None:
        started = time.perf_counter()
        try:
            r = await fleet_stream(self.fleet.client, self.fleet.target(CHAT_PROVIDER), prompt(i))
        except Exception as exc:  # counted and reported, never hidden
            self.errors.append(repr(exc))
            return
        self.samples.append(ChatSample(started, r.ttft * 1000, r.total * 1000))

    async def _run(self) -> None:
        running: set[asyncio.Task[None]] = set()
        t0 = time.perf_counter()
        i = 0
        while not self._stop.is_set():
            wait = t0 + i / self.rate - time.perf_counter()
            if wait > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stop.wait(), wait)
                continue
            task = asyncio.create_task(self._one(i))
            running.add(task)
            task.add_done_callback(running.discard)
            i += 1
        if running:
            await asyncio.wait(running, timeout=120)


def chat_figures(samples: Sequence[ChatSample], errors: int) -> dict[str, Any]:
    return {
        "ttft_ms": summary([s.ttft_ms for s in samples]),
        "total_ms": summary([s.total_ms for s in samples]),
        "errors": errors,
    }


async def chat_alone(
    fleet: Fleet, meter: Meter, seconds: float
) -> tuple[ChatLoad, dict[str, float]]:
    """Chat load with nothing else running, and the CPU used meanwhile."""
    load = ChatLoad(fleet, CHAT_RATE)
    a = await meter.read(IdsFileCounter(Path(os.devnull)))
    load.start()
    await asyncio.sleep(seconds)
    await load.stop()
    b = await meter.read(IdsFileCounter(Path(os.devnull)))
    return load, cpu_pct(a, b)


async def warm_up_chat(fleet: Fleet) -> None:
    target = fleet.target(CHAT_PROVIDER)
    await asyncio.gather(*(fleet_stream(fleet.client, target, prompt(i)) for i in range(8)))


# -- counters --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Reading:
    """Cumulative counters at one moment."""

    t: float  # perf_counter()
    mock_requests: int  # embedding requests the mock received (429s included)
    answered: int  # embed jobs the workers answered for EMBED_PROVIDER
    rate_limited: int  # ... and those that ended on a 429
    tokens: int  # input tokens billed in the answers
    written: int  # ids in the output's ids file
    cpu: dict[str, float]  # CPU seconds per process


class IdsFileCounter:
    """Lines in the growing `.ids.jsonl`, read incrementally."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._offset = 0
        self._lines = 0

    def lines(self) -> int:
        with contextlib.suppress(FileNotFoundError), self.path.open("rb") as f:
            f.seek(self._offset)
            chunk = f.read()
            self._offset += len(chunk)
            self._lines += chunk.count(b"\n")
        return self._lines


@dataclass(slots=True)
class Meter:
    """Reads the mock's and the workers' counters and the processes' CPU."""

    fleet: Fleet
    http: httpx.AsyncClient
    procs: dict[str, list[psutil.Process]]

    async def _mock_requests(self) -> int:
        stats = (await self.http.get(self.fleet.mocks[EMBED_PROVIDER].stats_url)).json()
        return sum(n for route, n in stats["requests"].items() if route.endswith("/embeddings"))

    async def _worker_counts(self) -> tuple[int, int, int]:
        answered = limited = tokens = 0
        for url in self.fleet.health_urls:
            text = (await self.http.get(f"{url}/metrics")).text
            for family in text_string_to_metric_families(text):
                for s in family.samples:
                    if s.labels.get("provider") != EMBED_PROVIDER:
                        continue
                    if s.name == "llm_fleet_jobs_total" and s.labels.get("kind") == "embed":
                        if s.labels.get("outcome") == "ok":
                            answered += int(s.value)
                        elif s.labels.get("outcome") == "rate_limited":
                            limited += int(s.value)
                    elif s.name == "llm_fleet_tokens_total" and s.labels.get("kind") == "input":
                        tokens += int(s.value)
        return answered, limited, tokens

    def _cpu(self) -> dict[str, float]:
        used = {name: sum(cpu_of(p) for p in ps) for name, ps in self.procs.items()}
        # Everything the machine ran, ours or not: other work on the same cores shows as
        # the difference, and explains latency that none of our processes caused.
        t = psutil.cpu_times()
        used["machine (all processes)"] = t.user + t.nice + t.system + t.irq + t.softirq
        # A VM's cores taken by the hypervisor for other guests: time nothing here ran.
        used["stolen by the hypervisor"] = getattr(t, "steal", 0.0)
        return used

    async def read(self, ids: IdsFileCounter) -> Reading:
        mock = await self._mock_requests()
        t = time.perf_counter()  # rates are the mock's arrivals: timed by its reading
        cpu = self._cpu()
        answered, limited, tokens = await self._worker_counts()
        return Reading(t, mock, answered, limited, tokens, ids.lines(), cpu)


# -- one backfill run -------------------------------------------------------------


@dataclass(slots=True)
class Run:
    name: str
    command: list[str]
    launched: float
    exited: float
    exit_code: int | None
    readings: list[Reading]
    log: str


def backfill_args(corpus: Corpus, out: Path, *, paced: bool) -> list[str]:
    """The command's arguments; the broker's URL and the credential go in the environment."""
    args = [
        "backfill",
        "--input",
        str(corpus.path),
        "--output",
        str(out),
        "--provider",
        EMBED_PROVIDER,
        "--model",
        EMBED_MODEL,
        "--dimensions",
        str(DIMS),
        "--batch-size",
        str(BATCH),
        "--no-cache",
    ]
    return [*args, "--rpm", str(RPM), "--tpm", str(TPM)] if paced else args


async def _wait_exit(proc: Proc, within: float) -> int | None:
    """The backfill's exit code; past `within`, Ctrl-C (its clean stop), then kill."""
    try:
        return await asyncio.to_thread(proc.popen.wait, within)
    except subprocess.TimeoutExpired:
        proc.popen.send_signal(signal.SIGINT)
    try:
        return await asyncio.to_thread(proc.popen.wait, 30)
    except subprocess.TimeoutExpired:
        proc.popen.kill()
        await asyncio.to_thread(proc.popen.wait, 5)
        return None


async def run_backfill(
    ctx: BenchContext,
    meter: Meter,
    corpus: Corpus,
    out: Path,
    *,
    paced: bool,
    expected_s: float,
) -> Run:
    name = "paced" if paced else "learned"
    args = backfill_args(corpus, out, paced=paced)
    env = {
        **os.environ,
        "AMQP_URL": meter.fleet.amqp_url,
        "DATABASE_URL": "",
        "PYTHONPATH": str(ROOT),
        # From the environment, not the command line: `ps` would show an argument.
        "FLEET_SEALED_CREDENTIAL": meter.fleet.sealed(EMBED_PROVIDER),
    }
    ids = IdsFileCounter(out.with_name(out.stem + ".ids.jsonl"))
    readings = [await meter.read(ids)]
    proc = spawn(f"backfill-{name}-{os.getpid()}", args, env, ctx.logdir)
    launched = time.perf_counter()
    meter.procs["backfill"] = [proc.ps]
    exited = asyncio.Event()

    async def sample() -> None:
        while not exited.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(exited.wait(), SAMPLE_EVERY)
            if not exited.is_set():
                readings.append(await meter.read(ids))

    sampler = asyncio.create_task(sample())
    try:
        code = await _wait_exit(proc, within=3 * expected_s + 60)
    finally:
        exited.set()
        await sampler
    exited_at = time.perf_counter()
    # A worker counts a job just after publishing its answer, so the backfill may have
    # the last answers before the counters do.
    await asyncio.sleep(1.0)
    readings.append(await meter.read(ids))
    del meter.procs["backfill"]
    log = proc.log.read_text(errors="replace")
    return Run(name, ["llm-fleet", *args], launched, exited_at, code, readings, log)


# -- figures ----------------------------------------------------------------------


def steady_window(readings: Sequence[Reading], skip: float) -> tuple[int, int]:
    """Indexes of the readings that bound the steady part: from `skip` s after the first
    request reached the mock (the process's start-up and the pacer's opening burst left
    out) to the reading before the last one in which requests still arrived (that last
    second is partly idle)."""
    rises = [
        i
        for i in range(1, len(readings))
        if readings[i].mock_requests > readings[i - 1].mock_requests
    ]
    if not rises:
        return 0, len(readings) - 1
    began = readings[rises[0] - 1].t
    start = next((i for i, r in enumerate(readings) if r.t >= began + skip), 0)
    end = rises[-1] - 1
    if end - start < 2:  # too short to have a steady part: the whole run
        return 0, len(readings) - 1
    return start, end


def rates(a: Reading, b: Reading, tokens_per_request: float) -> dict[str, float]:
    """What the mock took between two readings: requests it accepted (arrivals less the
    429s), and their tokens (requests x the corpus's mean tokens per request)."""
    seconds = b.t - a.t
    per_min = 60.0 / seconds if seconds > 0 else 0.0
    refused = b.rate_limited - a.rate_limited
    rpm = (b.mock_requests - a.mock_requests - refused) * per_min
    tpm = rpm * tokens_per_request
    return {
        "seconds": seconds,
        "requests_per_min": rpm,
        "tokens_per_min": tpm,
        "pct_of_request_limit": 100 * rpm / RPM,
        "pct_of_token_limit": 100 * tpm / TPM,
        # The larger share is the limit that binds.
        "pct_of_limit": 100 * max(rpm / RPM, tpm / TPM),
        "texts_per_s": (b.written - a.written) / seconds if seconds > 0 else 0.0,
        "rate_limited": refused,
    }


def cpu_pct(a: Reading, b: Reading) -> dict[str, float]:
    """Per process, % of one core over the window (processes alive throughout)."""
    seconds = b.t - a.t
    return {
        n: 100 * (b.cpu[n] - a.cpu[n]) / seconds if seconds > 0 else 0.0
        for n in a.cpu
        if b.cpu.get(n, 0.0) >= a.cpu[n]
    }


def series(run: Run, tokens_per_request: float, smooth: int = 5) -> dict[str, list[float]]:
    """Per-reading rates, averaged over `smooth` readings (moving window)."""
    rs = run.readings
    keys = ("requests_per_min", "tokens_per_min", "texts_per_s")
    out: dict[str, list[float]] = {"t_s": [], **{k: [] for k in keys}}
    # Unsmoothed, to show stalls and bursts: the mock's arrivals (429s included) per reading.
    out["arrivals"] = []
    for i in range(1, len(rs)):
        r = rates(rs[max(0, i - smooth)], rs[i], tokens_per_request)
        out["t_s"].append(round(rs[i].t - run.launched, 2))
        for key in keys:
            out[key].append(round(r[key], 1))
        out["arrivals"].append(rs[i].mock_requests - rs[i - 1].mock_requests)
    return out


_WRITTEN = re.compile(
    r"this run: ([\d,]+) written .*? in ([\d.]+) s \(([\d,]+) texts/s\), ([\d,]+) tokens"
)
_RETRIES = re.compile(r"retries ([\d,]+) \(rate limited ([\d,]+)\)")


def _number(text: str) -> float:
    return float(text.replace(",", ""))


_HEADS = ("backfill complete", "backfill stopped", "backfill ended")


def reported(log: str) -> dict[str, Any]:
    """The backfill's own closing summary as printed, and its figures when found."""
    lines = log.splitlines()
    heads = [i for i, ln in enumerate(lines) if any(h in ln for h in _HEADS)]
    closing: list[str] = []
    if heads:
        closing = [lines[heads[-1]].strip()]
        closing += [ln.strip() for ln in lines[heads[-1] + 1 :] if ln.startswith("  ")]
    got: dict[str, Any] = {"summary": closing}
    if m := _WRITTEN.search(log):
        names = ("written", "seconds", "texts_per_s", "tokens")
        got |= dict(zip(names, map(_number, m.groups()), strict=True))
    if m := _RETRIES.search(log):
        got |= {"retries": _number(m[1]), "rate_limited": _number(m[2])}
    return got


def verify(out: Path, corpus: Corpus) -> dict[str, Any]:
    """Read the output back: ids exactly once, input order, vectors for their texts."""
    ids_path = out.with_name(out.stem + ".ids.jsonl")
    if not out.exists() or not ids_path.exists():
        return {"output_found": False, "lost": len(corpus.ids), "duplicated": 0}
    matrix = np.load(out, mmap_mode="r")
    ids = [json.loads(line) for line in ids_path.read_text().splitlines()]
    counts = Counter(ids)
    known = set(corpus.ids)
    text_of = dict(zip(corpus.ids, corpus.texts, strict=True))
    rows = min(len(ids), matrix.shape[0])
    picked = sorted({round(k * (rows - 1) / max(1, VERIFY_ROWS - 1)) for k in range(VERIFY_ROWS)})
    matching = sum(
        1
        for k in picked
        if rows
        and ids[k] in text_of
        and matrix[k].tobytes() == embedding_bytes(text_of[ids[k]], DIMS)
    )
    return {
        "output_found": True,
        "rows": int(matrix.shape[0]),
        "dims": int(matrix.shape[1]) if matrix.ndim == 2 else 0,
        "dtype": str(matrix.dtype),
        "ids_lines": len(ids),
        "expected": len(corpus.ids),
        "lost": len(known - counts.keys()),
        "duplicated": sum(c - 1 for c in counts.values() if c > 1),
        "unknown": len(counts.keys() - known),
        "in_input_order": ids == corpus.ids,
        "vectors_checked": len(picked) if rows else 0,
        "vectors_matching_their_text": matching,
    }


def figures(run: Run, corpus: Corpus, out: Path, skip: float) -> dict[str, Any]:
    rs = run.readings
    a, b = steady_window(rs, skip)
    first, last = rs[0], rs[-1]
    per_request = corpus.tokens_per_request
    # Over the process's life, start-up and tail included: the first reading was taken
    # just before the launch, the last just after the exit.
    whole = rates(replace(first, t=run.launched), replace(last, t=run.exited), per_request)
    answered = last.answered - first.answered
    mock_requests = last.mock_requests - first.mock_requests
    billed = last.tokens - first.tokens
    return {
        "command": run.command,
        "exit_code": run.exit_code,
        "backfill_reported": reported(run.log),
        "steady": rates(rs[a], rs[b], per_request)
        | {"from_s": rs[a].t - run.launched, "to_s": rs[b].t - run.launched},
        "whole_run": whole,
        "requests": {
            "answered": answered,
            "sent_to_mock": mock_requests,
            # Every refused request reached the mock too; nothing else fails here.
            "refused_429_by_mock": mock_requests - answered,
            "rate_limited_by_worker": last.rate_limited - first.rate_limited,
        },
        "correctness": verify(out, corpus)
        | {"tokens_billed": billed, "tokens_billed_over_corpus": billed / corpus.tokens},
        "cpu_pct_of_one_core_steady": cpu_pct(rs[a], rs[b]),
        "series": series(run, per_request),
        "log_tail": run.log.splitlines()[-30:] if run.exit_code != 0 else [],
    }


# -- the benchmark --------------------------------------------------------------------


async def run(ctx: BenchContext) -> dict[str, Any]:
    p = plan(ctx.quick)
    runs: dict[str, dict[str, Any]] = {}
    corpora: dict[str, dict[str, Any]] = {}
    mocks = {EMBED_PROVIDER: EMBED_MOCK, CHAT_PROVIDER: CHAT_MOCK}
    with tempfile.TemporaryDirectory(prefix="bench-backfill-") as tmp:
        work = Path(tmp)
        corpus = await asyncio.to_thread(
            make_corpus, work / "paced.jsonl", texts_for(p.paced_s), "paced", 1
        )
        corpora["paced"] = corpus.describe()
        async with (
            start_fleet(ctx, mocks, worker=WORKER) as fleet,
            httpx.AsyncClient(timeout=10) as http,
        ):
            procs = {
                "worker": [w.ps for w in fleet.workers],
                "broker": [b] if (b := broker_process(ctx.amqp_url)) else [],
                "mock (embeddings)": [fleet.mocks[EMBED_PROVIDER].proc.ps],
                "mock (chat)": [fleet.mocks[CHAT_PROVIDER].proc.ps],
                "bench (chat client)": [psutil.Process()],
            }
            meter = Meter(fleet, http, procs)
            await warm_up_chat(fleet)

            before = await chat_alone(fleet, meter, p.baseline_s)

            during = ChatLoad(fleet, CHAT_RATE)
            during.start()
            out = work / "paced.npy"
            paced = await run_backfill(ctx, meter, corpus, out, paced=True, expected_s=p.paced_s)
            await during.stop()
            runs["paced"] = figures(paced, corpus, out, p.skip_s)
            steady = runs["paced"]["steady"]
            t0, t1 = paced.launched + steady["from_s"], paced.launched + steady["to_s"]
            in_window = [s for s in during.samples if t0 <= s.started <= t1]
            after = await chat_alone(fleet, meter, p.baseline_s)

            if p.learned_s is not None:
                lc = await asyncio.to_thread(
                    make_corpus, work / "learned.jsonl", texts_for(p.learned_s), "learned", 2
                )
                corpora["learned"] = lc.describe()
                out = work / "learned.npy"
                learned = await run_backfill(
                    ctx, meter, lc, out, paced=False, expected_s=p.learned_s
                )
                runs["learned"] = figures(learned, lc, out, p.skip_s)
            setup = fleet.describe()
    alone = [before, after]
    base = chat_figures(
        [s for c, _ in alone for s in c.samples], sum(len(c.errors) for c, _ in alone)
    )
    with_backfill = chat_figures(in_window, len(during.errors))
    data = {
        "method": __doc__,
        "setup": setup | {"batch_concurrency": f"worker default ({Settings().batch_concurrency})"},
        "limits": {"requests_per_min": RPM, "tokens_per_min": TPM},
        "batch": BATCH,
        "dims": DIMS,
        "corpus": corpora,
        "chat": {
            "streams_per_s": CHAT_RATE,
            "mock": CHAT_MOCK.describe(),
            "baseline": base,
            "baseline_before": chat_figures(before[0].samples, len(before[0].errors)),
            "baseline_after": chat_figures(after[0].samples, len(after[0].errors)),
            # The machine's CPU while chat ran alone (compare the runs' steady windows).
            "baseline_cpu_pct_of_one_core": [cpu for _, cpu in alone],
            "during_backfill": with_backfill,
            "added_ttft_ms": added(with_backfill["ttft_ms"], base["ttft_ms"]),
            "during_backfill_ttft_by_5s": ttft_over_time(during.samples, paced.launched),
            "errors_sample": [e for c in (before[0], during, after[0]) for e in c.errors][:5],
        },
        "runs": runs,
    }
    ctx.save(NAME, data)
    _print(data)
    _chart(ctx, runs)
    for name, fig in runs.items():
        # A backfill that did not finish fails the benchmark (after its figures are saved).
        if fig["exit_code"] != 0:
            tail = "\n".join(fig["log_tail"])
            raise RuntimeError(f"backfill ({name}) exited with {fig['exit_code']}:\n{tail}")
    return data


def ttft_over_time(
    samples: Sequence[ChatSample], origin: float, width: float = 5.0
) -> dict[str, list[float]]:
    """TTFT p50 and max per `width`-second slice of send times, from `origin` on."""
    slices: dict[int, list[float]] = {}
    for s in samples:
        if s.started >= origin:
            slices.setdefault(int((s.started - origin) // width), []).append(s.ttft_ms)
    keys = sorted(slices)
    return {
        "from_s": [k * width for k in keys],
        "p50_ms": [round(summary(slices[k])["p50"], 1) for k in keys],
        "max_ms": [round(max(slices[k]), 1) for k in keys],
    }


def _print(data: dict[str, Any]) -> None:
    rows = []
    for name, r in data["runs"].items():
        s, c, req = r["steady"], r["correctness"], r["requests"]
        rows.append(
            [
                name,
                f"{s['from_s']:.0f}-{s['to_s']:.0f}",
                s["requests_per_min"],
                s["pct_of_request_limit"],
                s["tokens_per_min"],
                s["pct_of_token_limit"],
                r["whole_run"]["pct_of_limit"],
                req["refused_429_by_mock"],
                s["texts_per_s"],
                c["lost"],
                c["duplicated"],
            ]
        )
    report.print_table(
        f"Backfill against {RPM:,} requests/min and {TPM:,} tokens/min (steady window)",
        [
            "run",
            "window s",
            "req/min",
            "% req",
            "tok/min",
            "% tok",
            "% whole run",
            "429s",
            "texts/s",
            "lost",
            "dup",
        ],
        rows,
    )
    chat = data["chat"]
    report.print_table(
        f"Interactive chat, {CHAT_RATE:g} streams/s open loop (client-observed ms)",
        ["phase", "n", "ttft p50", "ttft p99", "total p50", "total p99", "errors"],
        [
            [
                phase,
                chat[phase]["ttft_ms"]["n"],
                chat[phase]["ttft_ms"]["p50"],
                chat[phase]["ttft_ms"]["p99"],
                chat[phase]["total_ms"]["p50"],
                chat[phase]["total_ms"]["p99"],
                chat[phase]["errors"],
            ]
            for phase in ("baseline_before", "baseline_after", "baseline", "during_backfill")
        ],
    )
    runs = data["runs"]
    cpu = {name: r["cpu_pct_of_one_core_steady"] for name, r in runs.items()}
    report.print_table(
        f"CPU over each steady window (% of one core; the machine has {os.cpu_count()})",
        ["process", *runs],
        [[proc, *(cpu[name].get(proc, 0.0) for name in runs)] for proc in cpu["paced"]],
    )


def _chart(ctx: BenchContext, runs: dict[str, dict[str, Any]]) -> None:
    labels = {"paced": "--rpm/--tpm, chat running", "learned": "limits learned, no chat"}
    lines = {
        labels[name]: (
            fig["series"]["t_s"],
            [100 * v / RPM for v in fig["series"]["requests_per_min"]],
        )
        for name, fig in runs.items()
    }
    charts.lines(
        ctx.out / f"{NAME}.png",
        "Requests the rate-limited mock accepted (5 s moving average), % of its limit",
        lines,
        "seconds since the backfill process started",
        f"% of {RPM:,} requests/min",
        hline=100.0,
    )
