"""The audit trail: how fast rows are written, what `await record()` adds, retention.

Four parts, against the PostgreSQL of DATABASE_URL (default: the local server),
in a database of their own that is dropped afterwards:

1. Insert methods for one batch of N rows (N = 1 to 500), each one statement or
   transaction on one connection: `INSERT … SELECT FROM unnest($1::text[], …)` (what
   the writer uses), asyncpg `executemany` of a one-row INSERT, and COPY into a temp
   table then `INSERT … SELECT` (one transaction). Rows/s and ms per batch.
2. The writer (`workers.audit.AuditWriter`): C concurrent "jobs" each awaiting
   `record()` in a loop, per batch setting: rows/s, rows per statement, and the
   latency of `await record()` (p50/p99): what the audit adds before each ack.
   Then records arriving on a fixed schedule (as jobs that finish at their own
   times): statements per second and the same latency, where the batch wait shows
   what it buys.
3. Retention: a month of N rows dropped as a partition (DETACH CONCURRENTLY + DROP)
   against the same rows deleted in batches of 10,000 and vacuumed (what a plain
   table would need).
4. End to end: chat jobs through real workers with FLEET_AUDIT off and on (client
   round trip per job, jobs/s), and the rows the "on" workers wrote.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

import asyncpg

from bench import charts, report
from bench.harness import CHAT_MODEL, BenchContext, WorkerSpec, instant, run_pool, start_fleet
from bench.stats import summary
from contracts.frames import Metrics, Usage
from contracts.jobs import Message
from workers.audit import AuditWriter
from workers.audit_rows import ATTEMPT_COLUMNS, INSERT_ATTEMPTS, AttemptRow, attempt_row, columns
from workers.config import AuditSettings
from workers.migrate import database_name, migrate, quote_ident, with_database
from workers.outcome import AttemptRecord, TargetRef

NAME = "audit"
DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/postgres"
_NAMES = ", ".join(name for name, _ in ATTEMPT_COLUMNS)
_VALUES = ", ".join(f"${i + 1}::{kind}" for i, (_, kind) in enumerate(ATTEMPT_COLUMNS))
INSERT_ONE = f"INSERT INTO audit_attempts ({_NAMES}) VALUES ({_VALUES}) ON CONFLICT DO NOTHING"
DELETE_BATCH = 10_000


@dataclass(frozen=True, slots=True)
class Plan:
    batch_sizes: tuple[int, ...]
    method_batches: tuple[int, int]  # batches per method and size: (fewest, most)
    method_rows: int  # rows per method and size, within those bounds
    concurrency: tuple[int, ...]
    settings: dict[str, AuditSettings]
    writer_rows: tuple[int, int]  # records per cell: (fewest, most); 200 per concurrent job
    rates: tuple[int, ...]  # open loop: records per second
    rate_seconds: float
    retention_rows: int
    e2e_jobs: int  # per phase
    e2e_concurrency: int
    e2e_order: tuple[str, ...]


def plan(quick: bool) -> Plan:
    default = AuditSettings(enabled=True)
    settings = {
        "500 rows / 2 ms (default)": default,
        "500 rows / 0 ms": replace(default, batch_wait=0.0),
        "500 rows / 10 ms": replace(default, batch_wait=0.010),
        "50 rows / 2 ms": replace(default, batch_rows=50),
    }
    if quick:
        return Plan(
            batch_sizes=(1, 100),
            method_batches=(3, 30),
            method_rows=200,
            concurrency=(1, 64),
            settings={k: v for k, v in settings.items() if "default" in k},
            writer_rows=(200, 200),
            rates=(500,),
            rate_seconds=0.5,
            retention_rows=5_000,
            e2e_jobs=40,
            e2e_concurrency=8,
            e2e_order=("off", "on"),
        )
    return Plan(
        batch_sizes=(1, 10, 100, 500),
        method_batches=(30, 300),
        method_rows=20_000,
        concurrency=(1, 16, 64, 256, 1024),
        settings=settings,
        writer_rows=(500, 20_000),
        rates=(200, 1_000, 5_000),
        rate_seconds=3.0,
        retention_rows=200_000,
        e2e_jobs=1_000,
        e2e_concurrency=32,
        e2e_order=("off", "on", "on", "off"),  # ABBA: drift hits both alike
    )


def record(i: int, run: str) -> AttemptRecord:
    return AttemptRecord(
        request_id=f"{run}-{i}",
        attempt=1,
        producer=f"tenant-{i % 10}",
        kind="chat",
        queue="llm.chat",
        worker="bench-1",
        started_at=time.time(),
        status="ok",
        target=TargetRef("openai", "gpt-4o", str(uuid.uuid4())),
        provider_request_id=f"req_{i}",
        metrics=Metrics(
            queue_ms=1.2, ttft_ms=310.0, provider_ms=900.0, total_ms=905.0, cost_usd=1e-4
        ),
        usage=Usage(input_tokens=120, output_tokens=300, total_tokens=420, cached_input_tokens=64),
        metadata={"user": f"u{i % 100}", "app": "assistant", "conversation": str(i)},
        reached_provider=True,
    )


# -- 1. insert methods ---------------------------------------------------------------


async def _unnest(conn: asyncpg.Connection, rows: Sequence[AttemptRow]) -> None:
    await conn.execute(INSERT_ATTEMPTS, *columns(rows, len(ATTEMPT_COLUMNS)))


async def _executemany(conn: asyncpg.Connection, rows: Sequence[AttemptRow]) -> None:
    await conn.executemany(INSERT_ONE, rows)


async def _copy(conn: asyncpg.Connection, rows: Sequence[AttemptRow]) -> None:
    names = [name for name, _ in ATTEMPT_COLUMNS]
    async with conn.transaction():
        await conn.copy_records_to_table("audit_stage", records=rows, columns=names)
        await conn.execute(
            f"INSERT INTO audit_attempts ({_NAMES}) SELECT {_NAMES} FROM audit_stage"
            " ON CONFLICT DO NOTHING"
        )


METHODS: dict[str, Callable[[asyncpg.Connection, Sequence[AttemptRow]], Awaitable[None]]] = {
    "unnest": _unnest,
    "executemany": _executemany,
    "copy": _copy,
}


async def insert_methods(url: str, p: Plan) -> list[dict[str, Any]]:
    conn = await asyncpg.connect(url)
    try:
        await conn.execute(
            "CREATE TEMP TABLE audit_stage (LIKE audit_attempts INCLUDING DEFAULTS)"
            " ON COMMIT DELETE ROWS"
        )
        out = []
        for size in p.batch_sizes:
            await conn.execute("TRUNCATE audit_attempts")
            took: dict[str, list[float]] = {m: [] for m in METHODS}
            fewest, most = p.method_batches
            batches = min(most, max(fewest, p.method_rows // size))
            for b in range(batches):
                # Each method in turn on fresh rows, rotating who goes first against drift.
                order = list(METHODS)[b % len(METHODS) :] + list(METHODS)[: b % len(METHODS)]
                for name in order:
                    rows = [
                        attempt_row(record(i, f"{name}-{size}-{b}"), now=0) for i in range(size)
                    ]
                    started = time.perf_counter()
                    await METHODS[name](conn, rows)
                    took[name].append(time.perf_counter() - started)
            for name, times in took.items():
                out.append(
                    {
                        "method": name,
                        "batch": size,
                        "batches": len(times),
                        "rows_per_s": size * len(times) / sum(times),
                        "batch_ms": summary([t * 1000 for t in times]),
                    }
                )
        return out
    finally:
        await conn.close()


# -- 2. the writer -------------------------------------------------------------------


async def writer_cell(
    url: str, settings: AuditSettings, concurrency: int, n: int
) -> dict[str, Any]:
    writer = AuditWriter(url, settings)
    await writer.start()
    latencies: list[float] = []
    run = uuid.uuid4().hex[:8]

    async def job(i: int) -> None:
        rec = record(i, run)
        started = time.perf_counter()
        await writer.record(rec)
        latencies.append(time.perf_counter() - started)

    try:
        await run_pool(min(50, concurrency), concurrency, job)  # warm: connection, plan
        latencies.clear()
        written, statements = writer.rows_written, writer.statements
        wall = await run_pool(n, concurrency, job)
        statements = writer.statements - statements
        written = writer.rows_written - written
    finally:
        await writer.close()
    return {
        "concurrency": concurrency,
        "rows": written,
        "rows_per_s": written / wall if wall else 0.0,
        "statements": statements,
        "rows_per_statement": written / statements if statements else 0.0,
        "record_ms": summary([t * 1000 for t in latencies]),
    }


async def writer_rates(url: str, p: Plan) -> list[dict[str, Any]]:
    out = []
    for label, settings in p.settings.items():
        for c in p.concurrency:
            n = min(p.writer_rows[1], max(p.writer_rows[0], 200 * c))
            cell = await writer_cell(url, settings, c, n)
            out.append(
                {
                    "setting": label,
                    "batch_rows": settings.batch_rows,
                    "batch_ms": settings.batch_wait * 1000,
                    **cell,
                }
            )
        async with _connect(url) as conn:
            await conn.execute("TRUNCATE audit_attempts")
    return out


async def open_loop_cell(
    url: str, settings: AuditSettings, rate: int, seconds: float
) -> dict[str, Any]:
    """Records arriving on a fixed schedule, `rate` a second, as jobs finishing at
    their own times do: what the batch wait buys (fewer statements) and costs."""
    writer = AuditWriter(url, settings)
    await writer.start()
    latencies: list[float] = []
    run = uuid.uuid4().hex[:8]

    async def one(i: int) -> None:
        rec = record(i, run)
        started = time.perf_counter()
        await writer.record(rec)
        latencies.append(time.perf_counter() - started)

    try:
        await one(-1)  # warm: connection, plan
        latencies.clear()
        statements = writer.statements
        tasks: list[asyncio.Task[None]] = []
        begin = time.perf_counter()
        for i in range(int(rate * seconds)):
            delay = begin + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(one(i)))
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - begin
        statements = writer.statements - statements
    finally:
        await writer.close()
    return {
        "rate": rate,
        "rows": len(latencies),
        "statements_per_s": statements / wall if wall else 0.0,
        "rows_per_statement": len(latencies) / statements if statements else 0.0,
        "record_ms": summary([t * 1000 for t in latencies]),
    }


async def open_loop(url: str, p: Plan) -> list[dict[str, Any]]:
    out = []
    for label, settings in p.settings.items():
        for rate in p.rates:
            cell = await open_loop_cell(url, settings, rate, p.rate_seconds)
            out.append({"setting": label, **cell})
    async with _connect(url) as conn:
        await conn.execute("TRUNCATE audit_attempts")
    return out


# -- 3. retention --------------------------------------------------------------------

_FILL = """
INSERT INTO audit_attempts (request_id, producer, submission, attempt, started_at, kind, queue,
    worker, status, provider, model, credential_id, input_tokens, output_tokens, total_tokens,
    cost_usd, metadata, total_ms)
SELECT 'r-' || g, 'tenant-' || (g % 10), 0, 1, $1::timestamptz + (g % 2000000) * interval '1 s',
    'chat', 'llm.chat', 'bench-1', 'ok', 'openai', 'gpt-4o', md5(g::text), 120, 300, 420, 0.0001,
    jsonb_build_object('user', 'u' || (g % 100), 'app', 'assistant'), 900
FROM generate_series(1, $2) g
"""


async def retention(url: str, p: Plan) -> dict[str, Any]:
    async with _connect(url) as conn:
        for month in (datetime(2001, 1, 1, tzinfo=UTC), datetime(2001, 2, 1, tzinfo=UTC)):
            await conn.execute("SELECT llm_fleet_audit_partitions($1, 1)", month)
            await conn.execute(_FILL, month, p.retention_rows)
        await conn.execute("VACUUM ANALYZE audit_attempts")
        size = await conn.fetchval("SELECT pg_total_relation_size('audit_attempts_y2001m01')")

        started = time.perf_counter()
        await conn.execute(
            "ALTER TABLE audit_attempts DETACH PARTITION audit_attempts_y2001m01 CONCURRENTLY"
        )
        await conn.execute("DROP TABLE audit_attempts_y2001m01")
        drop = time.perf_counter() - started

        started = time.perf_counter()
        deleted = 0
        while True:
            status = await conn.execute(
                "DELETE FROM audit_attempts WHERE ctid IN (SELECT ctid FROM audit_attempts_y2001m02"
                " WHERE started_at < '2001-03-01' LIMIT $1)",
                DELETE_BATCH,
            )
            n = int(status.split()[-1])
            deleted += n
            if n < DELETE_BATCH:
                break
        delete = time.perf_counter() - started
        started = time.perf_counter()
        await conn.execute("VACUUM audit_attempts_y2001m02")
        vacuum = time.perf_counter() - started
        await conn.execute("DROP TABLE audit_attempts_y2001m02")
    return {
        "rows": p.retention_rows,
        "partition_mb": size / 2**20,
        "drop_partition_s": drop,
        "delete_batched_s": delete,
        "vacuum_after_delete_s": vacuum,
        "deleted": deleted,
    }


# -- 4. end to end -------------------------------------------------------------------


async def _fleet_phase(ctx: BenchContext, env: dict[str, str], p: Plan) -> dict[str, Any]:
    spec = WorkerSpec(queues="llm.chat", concurrency=64, extra_env=env)
    latencies: list[float] = []
    hello = [Message(role="user", content="audit bench")]
    async with start_fleet(ctx, {"mock": instant(20)}, worker=spec) as fleet:
        target = fleet.target("mock", CHAT_MODEL)

        async def job(i: int) -> None:
            started = time.perf_counter()
            await fleet.client.chat(target, hello, metadata={"bench": "audit"})
            latencies.append(time.perf_counter() - started)

        await run_pool(p.e2e_concurrency * 2, p.e2e_concurrency, job)  # warm-up
        latencies.clear()
        wall = await run_pool(p.e2e_jobs, p.e2e_concurrency, job)
    return {"jobs": len(latencies), "wall": wall, "latencies": [t * 1000 for t in latencies]}


async def end_to_end(ctx: BenchContext, url: str, p: Plan) -> dict[str, Any]:
    envs = {
        "off": {"FLEET_AUDIT": "off", "DATABASE_URL": ""},
        "on": {"FLEET_AUDIT": "on", "DATABASE_URL": url},
    }
    phases: dict[str, list[dict[str, Any]]] = {"off": [], "on": []}
    for mode in p.e2e_order:
        phases[mode].append(await _fleet_phase(ctx, envs[mode], p))
    out: dict[str, Any] = {}
    for mode, runs in phases.items():
        jobs = sum(r["jobs"] for r in runs)
        wall = sum(r["wall"] for r in runs)
        out[mode] = {
            "jobs": jobs,
            "jobs_per_s": jobs / wall if wall else 0.0,
            "job_ms": summary([t for r in runs for t in r["latencies"]]),
        }
    async with _connect(url) as conn:
        rows = await conn.fetchval(
            "SELECT count(*) FROM audit_attempts WHERE metadata->>'bench' = 'audit'"
        )
    expected = (p.e2e_jobs + p.e2e_concurrency * 2) * p.e2e_order.count("on")
    out["rows_recorded"] = int(rows)
    # Until serve.py hands workers an AuditWriter, FLEET_AUDIT=on records nothing.
    out["audit_wired"] = int(rows) == expected
    out["added_job_ms"] = {
        k: out["on"]["job_ms"][k] - out["off"]["job_ms"][k] for k in ("p50", "p99")
    }
    return out


# -- running it ------------------------------------------------------------------------


@contextlib.asynccontextmanager
async def _connect(url: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(url)
    try:
        yield conn
    finally:
        await conn.close()


async def run(ctx: BenchContext) -> dict[str, Any]:
    p = plan(ctx.quick)
    admin = os.environ.get("DATABASE_URL") or DEFAULT_DATABASE
    url = with_database(admin, f"llm_fleet_bench_audit_{os.getpid()}")
    await migrate(url)
    try:
        methods = await insert_methods(url, p)
        writer = await writer_rates(url, p)
        arrivals = await open_loop(url, p)
        kept = await retention(url, p)
        e2e = await end_to_end(ctx, url, p)
        async with _connect(url) as conn:
            postgres = await conn.fetchval("SHOW server_version")
            synchronous_commit = await conn.fetchval("SHOW synchronous_commit")
    finally:
        async with _connect(with_database(admin, "postgres")) as conn:
            name = quote_ident(database_name(url))
            await conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    data = {
        "method": (
            "PostgreSQL on the same machine, one connection per writer; rows as the writer "
            "builds them (31 columns, 3 metadata keys); writer cells: C lanes each awaiting "
            "record() in a loop, after a warm-up; open loop: records started on a fixed "
            "schedule; retention: N rows per month, drop vs batched DELETE + VACUUM; end to "
            "end: non-streamed chat jobs, instant mock, one worker, FLEET_AUDIT off vs on "
            "(ABBA phases in the full run)"
        ),
        "postgres": postgres,
        "synchronous_commit": synchronous_commit,
        "insert_methods": methods,
        "writer": writer,
        "open_loop": arrivals,
        "retention": kept,
        "end_to_end": e2e,
    }
    ctx.save(NAME, data)
    _print(data)
    _chart(ctx, writer)
    return data


def _print(data: dict[str, Any]) -> None:
    report.print_table(
        "Audit: one batch of N rows, by insert method",
        ["method", "rows", "rows/s", "batch p50 ms", "batch p99 ms"],
        [
            [m["method"], m["batch"], m["rows_per_s"], m["batch_ms"]["p50"], m["batch_ms"]["p99"]]
            for m in data["insert_methods"]
        ],
    )
    report.print_table(
        "Audit writer: C jobs awaiting record() in a loop",
        ["setting", "C", "rows/s", "rows/stmt", "record p50 ms", "record p99 ms"],
        [
            [
                w["setting"],
                w["concurrency"],
                w["rows_per_s"],
                w["rows_per_statement"],
                w["record_ms"]["p50"],
                w["record_ms"]["p99"],
            ]
            for w in data["writer"]
        ],
    )
    report.print_table(
        "Audit writer: records arriving at a fixed rate (jobs finishing at their own times)",
        ["setting", "records/s", "statements/s", "rows/stmt", "record p50 ms", "record p99 ms"],
        [
            [
                o["setting"],
                o["rate"],
                o["statements_per_s"],
                o["rows_per_statement"],
                o["record_ms"]["p50"],
                o["record_ms"]["p99"],
            ]
            for o in data["open_loop"]
        ],
    )
    r = data["retention"]
    report.print_table(
        f"Retention: one month of {r['rows']:,} rows ({r['partition_mb']:.1f} MB)",
        ["drop partition s", "batched DELETE s", "VACUUM after s"],
        [[r["drop_partition_s"], r["delete_batched_s"], r["vacuum_after_delete_s"]]],
    )
    e = data["end_to_end"]
    report.print_table(
        f"End to end, FLEET_AUDIT off vs on (rows recorded: {e['rows_recorded']}"
        f"{'' if e['audit_wired'] else ', audit not wired into workers yet'})",
        ["audit", "jobs/s", "job p50 ms", "job p99 ms"],
        [
            [m, e[m]["jobs_per_s"], e[m]["job_ms"]["p50"], e[m]["job_ms"]["p99"]]
            for m in ("off", "on")
        ],
    )


def _chart(ctx: BenchContext, writer: list[dict[str, Any]]) -> None:
    series: dict[str, tuple[list[float], list[float]]] = {}
    for w in writer:
        xs, ys = series.setdefault(w["setting"], ([], []))
        xs.append(w["concurrency"])
        ys.append(w["rows_per_s"])
    charts.lines(
        ctx.out / f"{NAME}.png",
        "Audit writer: rows per second by concurrent jobs",
        series,
        "jobs awaiting record() at once",
        "rows/s",
    )


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit("run through the suite: python -m bench.run --only audit")
