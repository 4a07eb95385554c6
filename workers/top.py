"""What `llm-fleet top` shows: the fleet's rates from two scrapes of what workers expose.

Sources are the workers' Prometheus endpoints (workers.metrics names) and the
broker's queue counts (a passive queue.declare reads them without creating or
changing anything). Parsing and the maths are pure functions over `Scrape`s, so
they are tested on hand-made metric texts; the two fetchers around them never
raise for a worker or broker that does not answer: that is shown, not fatal.
Rates follow Prometheus' own rules: a counter that went down was reset (a
restarted worker), and quantiles interpolate linearly within a histogram bucket
as `histogram_quantile` does.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any, Final

import aiormq
import httpx
from prometheus_client.parser import text_string_to_metric_families

from contracts import topology as t
from contracts.brokers import broker_urls
from workers.metric_labels import SEMCONV_PROVIDER_NAMES

WATCHED_QUEUES: Final = (*t.JOB_QUEUES, t.DEAD_QUEUE)
DEFAULT_WORKER_PORT: Final = 9004

_JOBS: Final = "llm_fleet_jobs_total"
_TTFT: Final = "gen_ai_server_time_to_first_token_seconds"
_INFLIGHT: Final = "llm_fleet_jobs_inflight"
_DEAD: Final = "llm_fleet_dead_lettered_total"
_BROKER: Final = "llm_fleet_broker_connected"
# The TTFT histogram names providers the semantic conventions' way; jobs_total the
# registry's. Rows are keyed by registry name, so map back.
_REGISTRY_NAME: Final = {semconv: name for name, semconv in SEMCONV_PROVIDER_NAMES.items()}

ModelKey = tuple[str, str]  # (provider, model), registry names


@dataclass(frozen=True)
class Scrape:
    """One worker's figures at one instant (`at`: time.monotonic())."""

    at: float
    jobs: Mapping[tuple[str, str, str], float]  # (provider, model, outcome) -> count
    ttft_buckets: Mapping[tuple[str, str, float], float]  # (provider, model, le) -> cumulative
    inflight: float
    dead_lettered: float
    broker_connected: bool | None


def parse_scrape(text: str, at: float) -> Scrape:
    """Prometheus text from one worker's /metrics, summed over the labels top does not show."""
    jobs: dict[tuple[str, str, str], float] = defaultdict(float)
    buckets: dict[tuple[str, str, float], float] = defaultdict(float)
    inflight = dead = 0.0
    broker: bool | None = None
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            labels = s.labels
            if s.name == _JOBS:
                jobs[labels.get("provider", ""), labels.get("model", ""), labels["outcome"]] += (
                    s.value
                )
            elif s.name == _TTFT + "_bucket":
                provider = labels.get("gen_ai_provider_name", "")
                key = (
                    _REGISTRY_NAME.get(provider, provider),
                    labels.get("gen_ai_request_model", ""),
                    float(labels["le"]),
                )
                buckets[key] += s.value
            elif s.name == _INFLIGHT:
                inflight = s.value
            elif s.name == _DEAD:
                dead += s.value
            elif s.name == _BROKER:
                broker = s.value >= 1
    return Scrape(at, dict(jobs), dict(buckets), inflight, dead, broker)


def increase(before: float, after: float) -> float:
    """A counter's increase; one that went down was reset, so it counted `after` since."""
    return after - before if after >= before else after


def histogram_quantile(q: float, buckets: Iterable[tuple[float, float]]) -> float | None:
    """The q-quantile of cumulative `(le, count)` buckets, as Prometheus computes it.

    Linear interpolation within the bucket the rank falls in, the lowest bucket
    starting at 0; a rank in the +Inf bucket answers the highest finite bound.
    None when there were no observations.
    """
    ordered = sorted(buckets)
    if not ordered or not math.isinf(ordered[-1][0]):
        return None
    total = ordered[-1][1]
    if total <= 0:
        return None
    rank = q * total
    lower, below = 0.0, 0.0
    for i, (le, count) in enumerate(ordered):
        if count >= rank:
            if math.isinf(le):
                return ordered[i - 1][0] if i > 0 else None
            if count == below:
                return le
            return lower + (le - lower) * (rank - below) / (count - below)
        lower, below = le, count
    return None  # not reached: the +Inf bucket holds the total


@dataclass(frozen=True)
class ModelRow:
    provider: str
    model: str
    jobs: float  # settled in the interval
    jobs_per_s: float
    error_rate: float | None  # share of those jobs whose outcome was not ok
    ttft_p50_s: float | None
    ttft_p99_s: float | None


@dataclass(frozen=True)
class WorkerRow:
    url: str
    up: bool
    inflight: float | None
    broker_connected: bool | None
    error: str | None = None


@dataclass(frozen=True)
class QueueRow:
    name: str
    messages: int | None  # None: the broker did not say (down, or no right to look)
    consumers: int | None
    error: str | None = None


@dataclass(frozen=True)
class Frame:
    interval_s: float
    models: list[ModelRow]
    workers: list[WorkerRow]
    queues: list[QueueRow]
    dead_lettered: float  # jobs workers moved to llm.dead in the interval
    dead_lettered_per_s: float
    dead_queued: int | None  # what llm.dead holds now
    taken_at: float = field(default_factory=time.time)

    def as_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class _ModelTotals:
    jobs: float = 0.0
    jobs_per_s: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=lambda: defaultdict(float))


def build_frame(
    before: Mapping[str, Scrape | str],
    after: Mapping[str, Scrape | str],
    queues: Sequence[QueueRow],
    interval_s: float,
) -> Frame:
    """One view from two scrapes of every worker (a str is why a worker did not answer).

    Rates count only workers that answered both times: a worker's counts since
    its start are not this interval's. A series that appeared between the two
    was created in the interval, so all of its count is new.
    """
    totals: dict[ModelKey, _ModelTotals] = defaultdict(_ModelTotals)
    dead = dead_per_s = 0.0
    workers: list[WorkerRow] = []
    for url, now in after.items():
        if isinstance(now, str):
            workers.append(WorkerRow(url, False, None, None, now))
            continue
        workers.append(WorkerRow(url, True, now.inflight, now.broker_connected))
        for provider, model, _ in now.jobs:
            totals.setdefault((provider, model), _ModelTotals())  # listed before it has a rate
        then = before.get(url)
        if not isinstance(then, Scrape):
            continue
        seconds = now.at - then.at
        for (provider, model, outcome), count in now.jobs.items():
            n = increase(then.jobs.get((provider, model, outcome), 0.0), count)
            row = totals[provider, model]
            row.jobs += n
            row.jobs_per_s += n / seconds if seconds > 0 else 0.0
            if outcome != "ok":
                row.errors += n
        for (provider, model, le), count in now.ttft_buckets.items():
            delta = increase(then.ttft_buckets.get((provider, model, le), 0.0), count)
            totals[provider, model].buckets[le] += delta
        n = increase(then.dead_lettered, now.dead_lettered)
        dead += n
        dead_per_s += n / seconds if seconds > 0 else 0.0
    models = [
        ModelRow(
            provider,
            model,
            row.jobs,
            row.jobs_per_s,
            row.errors / row.jobs if row.jobs > 0 else None,
            histogram_quantile(0.5, row.buckets.items()),
            histogram_quantile(0.99, row.buckets.items()),
        )
        for (provider, model), row in totals.items()
    ]
    models.sort(key=lambda r: (-r.jobs_per_s, r.provider, r.model))
    dead_queued = next((q.messages for q in queues if q.name == t.DEAD_QUEUE), None)
    return Frame(interval_s, models, workers, list(queues), dead, dead_per_s, dead_queued)


# -- fetching --------------------------------------------------------------------------


def metrics_url(worker: str) -> str:
    """`host` or `host:port` (port 9004 by default) or a URL -> the worker's metrics URL;
    a URL without a path gets /metrics."""
    url = worker.strip()
    if "://" not in url:
        host = url.rstrip("/")
        if ":" not in host.rsplit("]", 1)[-1]:
            host = f"{host}:{DEFAULT_WORKER_PORT}"
        url = f"http://{host}"
    scheme, rest = url.split("://", 1)
    host, _, path = rest.partition("/")
    return f"{scheme}://{host}/{path or 'metrics'}"


async def scrape_worker(http: httpx.AsyncClient, url: str) -> Scrape | str:
    """The worker's figures now, or why there are none (a worker that is down is not fatal)."""
    try:
        response = await http.get(url)
        response.raise_for_status()
        at = time.monotonic()
        return parse_scrape(response.text, at)
    except httpx.HTTPStatusError as exc:
        return f"HTTP {exc.response.status_code}"
    except httpx.HTTPError as exc:
        return type(exc).__name__
    except ValueError as exc:  # not Prometheus text
        return f"unreadable metrics: {exc}"[:200]


async def scrape_workers(http: httpx.AsyncClient, urls: Sequence[str]) -> dict[str, Scrape | str]:
    results = await asyncio.gather(*(scrape_worker(http, u) for u in urls))
    return dict(zip(urls, results, strict=True))


async def queue_depths(
    amqp_url: str, names: Sequence[str] = WATCHED_QUEUES, within_s: float = 5.0
) -> list[QueueRow]:
    """Messages and consumers per queue by passive declare, one channel per queue:
    a queue the login may not look at (a worker's login and llm.dead) closes its
    channel and shows as n/a, the others still answer."""
    try:
        conn = await _connect(amqp_url, within_s)
    except (aiormq.exceptions.AMQPError, OSError, TimeoutError, ValueError) as exc:
        reason = f"broker: {type(exc).__name__}"
        return [QueueRow(n, None, None, reason) for n in names]
    rows = []
    try:
        for name in names:
            rows.append(await _declare_passive(conn, name, within_s))
    finally:
        await conn.close()
    return rows


async def _connect(amqp_url: str, within_s: float) -> aiormq.abc.AbstractConnection:
    error: Exception = ValueError("no broker URL")
    for url in broker_urls(amqp_url):
        try:
            async with asyncio.timeout(within_s):
                return await aiormq.connect(url)
        except (aiormq.exceptions.AMQPError, OSError, TimeoutError) as exc:
            error = exc
    raise error


async def _declare_passive(
    conn: aiormq.abc.AbstractConnection, name: str, within_s: float
) -> QueueRow:
    try:
        async with asyncio.timeout(within_s):
            channel = await conn.channel()
            ok = await channel.queue_declare(name, passive=True)
    except aiormq.exceptions.ChannelAccessRefused:
        return QueueRow(name, None, None, "access refused")
    except aiormq.exceptions.ChannelNotFoundEntity:
        return QueueRow(name, None, None, "no such queue")
    except (aiormq.exceptions.AMQPError, TimeoutError) as exc:
        return QueueRow(name, None, None, type(exc).__name__)
    if not channel.is_closed:
        await channel.close()
    return QueueRow(name, ok.message_count, ok.consumer_count)


# -- rendering -------------------------------------------------------------------------


def _num(value: float | None, fmt: str, suffix: str = "") -> str:
    return "-" if value is None else f"{value:{fmt}}{suffix}"


def _ms(seconds: float | None) -> str:
    return "-" if seconds is None else f"{seconds * 1000:.0f}ms"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    return ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in
            [header, *rows]]  # fmt: skip


def render(frame: Frame) -> str:
    up = sum(w.up for w in frame.workers)
    stamp = time.strftime("%H:%M:%S", time.localtime(frame.taken_at))
    lines = [
        f"llm-fleet top  {stamp}  over {frame.interval_s:.1f}s  "
        f"workers {up}/{len(frame.workers)} up",
        "",
    ]
    model_rows = [
        [
            r.provider or "(none)",
            r.model or "-",
            f"{r.jobs_per_s:.1f}",
            _num(None if r.error_rate is None else r.error_rate * 100, ".1f", "%"),
            _ms(r.ttft_p50_s),
            _ms(r.ttft_p99_s),
        ]
        for r in frame.models
    ]
    lines += _table(["PROVIDER", "MODEL", "JOBS/S", "ERRORS", "TTFT p50", "TTFT p99"], model_rows)
    if not model_rows:
        lines.append("(no jobs settled yet)")
    lines.append("")
    worker_rows = [
        [
            w.url,
            ("up" if w.broker_connected is not False else "up, broker lost")
            if w.up
            else f"down ({w.error})",
            _num(w.inflight, ".0f"),
        ]
        for w in frame.workers
    ]
    lines += _table(["WORKER", "STATE", "IN-FLIGHT"], worker_rows)
    lines.append("")
    queue_rows = [
        [q.name, _num(q.messages, "d") if q.error is None else f"n/a ({q.error})",
         _num(q.consumers, "d")]
        for q in frame.queues
    ]  # fmt: skip
    lines += _table(["QUEUE", "MESSAGES", "CONSUMERS"], queue_rows)
    lines.append("")
    held = "n/a" if frame.dead_queued is None else str(frame.dead_queued)
    lines.append(
        f"dead letters: {frame.dead_lettered:.0f} moved to {t.DEAD_QUEUE} in the interval "
        f"({frame.dead_lettered_per_s:.2f}/s); {t.DEAD_QUEUE} holds {held}"
    )
    return "\n".join(lines)
