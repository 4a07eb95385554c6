"""The audit writer against real PostgreSQL: batching, idempotency, bounds, refused rows,
bodies, partitions, and a PostgreSQL restart mid-stream."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from contracts.errors import InternalError, ProviderUnavailable
from contracts.frames import Metrics, Usage
from tests.brokers import PrivatePostgres
from tests.integration.conftest import drop_database
from workers import audit_rows as ar
from workers.audit import AuditWriter
from workers.config import AuditSettings, ConfigError
from workers.migrate import ensure_database, migrate, with_database
from workers.outcome import AttemptRecord, TargetRef

pytestmark = pytest.mark.integration

# Batches leave when full, or after a wait no test reaches: the counts are exact.
FULL_ONLY = AuditSettings(enabled=True, batch_wait=60.0, batch_rows=40)
QUICK = AuditSettings(enabled=True, batch_wait=0.001, batch_rows=500)


@pytest.fixture(scope="module")
async def audit_db(database_url: str) -> AsyncIterator[str]:
    url = with_database(database_url, f"llm_fleet_audit_{uuid.uuid4().hex[:12]}")
    assert "0005_audit.sql" in await migrate(url)
    yield url
    await drop_database(database_url, url)


@pytest.fixture
async def sql(audit_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(audit_db)
    await conn.execute("TRUNCATE audit_attempts, audit_bodies")
    yield conn
    await conn.close()


class Seen:
    """An AuditObserver that keeps what it was told."""

    def __init__(self) -> None:
        self.batches: list[int] = []
        self.pending: list[int] = []
        self.database: list[bool] = []

    def audit_written(self, rows: int, seconds: float) -> None:
        assert seconds >= 0
        self.batches.append(rows)

    def audit_pending(self, rows: int) -> None:
        self.pending.append(rows)

    def audit_database(self, *, down: bool) -> None:
        self.database.append(down)


class CountingWriter(AuditWriter):
    """Counts the INSERT statements its connections run, as PostgreSQL received them."""

    inserts = 0
    _counted: asyncpg.Connection | None = None

    async def connection(self) -> asyncpg.Connection:
        conn = await super().connection()
        if conn is not self._counted:  # a new connection (the first, or after an outage)
            conn.add_query_logger(self._count)
            self._counted = conn
        return conn

    def _count(self, query: Any) -> None:
        if query.query.startswith(("INSERT INTO audit", "WITH attempts")) and not query.exception:
            self.inserts += 1


Start = Callable[..., Awaitable[CountingWriter]]


@pytest.fixture
async def start_writer(audit_db: str, sql: asyncpg.Connection) -> AsyncIterator[Start]:
    writers: list[CountingWriter] = []

    async def start(
        settings: AuditSettings = QUICK, url: str | None = None, **kw: Any
    ) -> CountingWriter:
        writer = CountingWriter(url or audit_db, settings, **kw)
        await writer.start()
        writers.append(writer)
        return writer

    yield start
    for w in writers:
        await w.close(grace=5)


def attempt(i: int | str, **overrides: Any) -> AttemptRecord:
    rec = AttemptRecord(
        request_id=f"req-{i}",
        attempt=1,
        producer="tenant-a",
        kind="chat",
        queue="llm.chat",
        worker="w-1",
        started_at=time.time(),
        status="ok",
        target=TargetRef("openai", "gpt-4o", "11111111-2222-3333-4444-555555555555"),
        tried=[TargetRef("anthropic", "claude-sonnet-4-5", None)],
        provider_request_id=f"prov-{i}",
        metrics=Metrics(queue_ms=1.0, ttft_ms=20.0, provider_ms=30.0, total_ms=31.0, cost_usd=1e-4),
        usage=Usage(input_tokens=10, output_tokens=20, total_tokens=30, cached_input_tokens=4),
        metadata={"user": "u1"},
        reached_provider=True,
    )
    return replace(rec, **overrides)


async def count(sql: asyncpg.Connection, table: str = "audit_attempts") -> int:
    return int(await sql.fetchval(f"SELECT count(*) FROM {table}"))


async def rows_of(sql: asyncpg.Connection, request_id: str) -> int:
    return int(
        await sql.fetchval("SELECT count(*) FROM audit_attempts WHERE request_id = $1", request_id)
    )


async def test_a_row_holds_the_attempt(start_writer: Start, sql: asyncpg.Connection) -> None:
    writer = await start_writer()
    rec = attempt(1, submission=2, attempt=3, error=None)
    await writer.record(rec)
    row = await sql.fetchrow("SELECT * FROM audit_attempts")
    assert row is not None
    assert (row["request_id"], row["producer"], row["submission"], row["attempt"]) == (
        "req-1",
        "tenant-a",
        2,
        3,
    )
    assert row["started_at"] == datetime.fromtimestamp(rec.started_at, UTC)
    assert (row["provider"], row["model"]) == ("openai", "gpt-4o")
    assert row["credential_id"] == "11111111-2222-3333-4444-555555555555"
    assert json.loads(row["tried"]) == [
        {"provider": "anthropic", "model": "claude-sonnet-4-5", "credential_id": None}
    ]
    assert (row["input_tokens"], row["output_tokens"], row["cached_input_tokens"]) == (10, 20, 4)
    assert row["reasoning_tokens"] is None  # not reported, not zero
    assert row["cost_usd"] == pytest.approx(1e-4)
    assert row["provider_request_id"] == "prov-1" and row["recorded_at"] is not None
    assert writer.rows_written == 1


async def test_concurrent_records_share_one_statement(
    start_writer: Start, sql: asyncpg.Connection
) -> None:
    seen = Seen()
    writer = await start_writer(FULL_ONLY, observer=seen)
    await asyncio.gather(*(writer.record(attempt(i)) for i in range(40)))
    assert await count(sql) == 40
    assert seen.batches == [40], seen.batches
    assert writer.statements == 1 and writer.inserts == 1
    assert max(seen.pending) == 40 and seen.pending[-1] == 0


async def test_a_batch_is_at_most_batch_rows_and_the_rest_follows(
    start_writer: Start, sql: asyncpg.Connection
) -> None:
    seen = Seen()
    writer = await start_writer(replace(FULL_ONLY, batch_wait=0.01), observer=seen)
    await asyncio.gather(*(writer.record(attempt(i)) for i in range(100)))
    assert seen.batches == [40, 40, 20] and writer.inserts == 3
    assert await count(sql) == 100


async def test_the_same_record_twice_is_one_row(
    start_writer: Start, sql: asyncpg.Connection
) -> None:
    writer = await start_writer()
    rec = attempt("twice")
    await writer.record(rec)
    await writer.record(rec)  # e.g. a batch retried after its commit's answer was lost
    await asyncio.gather(writer.record(rec), writer.record(replace(rec)))  # in one statement
    assert await count(sql) == 1
    await writer.record(replace(rec, attempt=2))  # the next delivery is a row of its own
    refused = attempt("", request_id="", producer=None, kind="unknown", status="bad_request")
    await writer.record(refused)
    await writer.record(refused)  # a refusal without request id or tenant is still one row
    assert await count(sql) == 3
    assert writer.rows_refused == 0  # skipped as already there, not refused by the key


async def test_bounds_are_applied(start_writer: Start, sql: asyncpg.Connection) -> None:
    writer = await start_writer()
    metadata = {f"key-{i:03d}-" + "k" * 300: "v" * 3000 for i in range(80)}
    await writer.record(attempt("big", metadata=metadata, error="e\x00" * 2000))
    row = await sql.fetchrow("SELECT error, metadata::text AS metadata FROM audit_attempts")
    assert row is not None
    assert len(row["error"]) == ar.MAX_ERROR_CHARS and "\x00" not in row["error"]
    kept = await sql.fetch(
        "SELECT key, length(key) AS k, length(value) AS v FROM audit_attempts,"
        " jsonb_each_text(metadata)"
    )
    assert len(kept) == ar.MAX_METADATA_KEYS
    assert {r["k"] for r in kept} == {ar.MAX_METADATA_KEY_CHARS}
    assert {r["v"] for r in kept} == {ar.MAX_METADATA_VALUE_CHARS}
    assert sorted(r["key"][:7] for r in kept) == [f"key-{i:03d}" for i in range(64)]


async def test_a_row_postgresql_refuses_does_not_hold_the_others(
    start_writer: Start, sql: asyncpg.Connection
) -> None:
    writer = await start_writer(FULL_ONLY)
    bad = attempt("bad", usage=Usage(input_tokens=2**70))  # beyond bigint
    records = [attempt(i) for i in range(39)]
    await asyncio.wait_for(asyncio.gather(writer.record(bad), *map(writer.record, records)), 30)
    assert await count(sql) == 39
    assert writer.rows_refused == 1 and writer.rows_written == 39
    assert await rows_of(sql, "req-bad") == 0


async def test_bodies_are_stored_only_when_asked(
    start_writer: Start, sql: asyncpg.Connection
) -> None:
    key = "sk-audit-canary-7f3a9c1e5b2d"

    def bodies(rec: AttemptRecord) -> ar.RecordBodies:
        request = ar.scrubbed_json({"prompt": f"use {key}", "credential": {"sealed": "x"}}, [key])
        return ar.RecordBodies(request, ar.scrubbed_json({"text": rec.request_id}, [key]))

    off = await start_writer(QUICK, bodies=bodies)
    await off.record(attempt("quiet"))
    assert await count(sql, "audit_bodies") == 0
    on = await start_writer(replace(QUICK, bodies=True), bodies=bodies)
    loud = attempt("loud")
    await asyncio.gather(on.record(loud), on.record(loud))  # bodies are written once too
    rows = await sql.fetch("SELECT request_id, request::text, response::text FROM audit_bodies")
    assert [(r["request_id"]) for r in rows] == ["req-loud"]
    assert key not in rows[0]["request"] and "[redacted]" in rows[0]["request"]
    assert rows[0]["response"] == '{"text": "req-loud"}'
    assert on.inserts == 1  # rows and bodies in one statement

    def broken(rec: AttemptRecord) -> ar.RecordBodies:
        return ar.RecordBodies("{not json", None)

    odd = await start_writer(replace(QUICK, bodies=True), bodies=broken)
    await odd.record(attempt("odd-body"))  # the attempt is kept without its bodies
    assert await rows_of(sql, "req-odd-body") == 1
    assert odd.rows_refused == 0

    def failing(rec: AttemptRecord) -> ar.RecordBodies:
        raise RuntimeError("a bug where bodies are made")

    buggy = await start_writer(replace(QUICK, bodies=True), bodies=failing)
    await buggy.record(attempt("no-body"))
    assert await rows_of(sql, "req-no-body") == 1
    assert await count(sql, "audit_bodies") == 1  # only "loud"'s


async def test_rows_of_any_month_land_in_a_partition_made_for_it(
    start_writer: Start, sql: asyncpg.Connection
) -> None:
    writer = await start_writer()
    now = datetime.now(UTC)
    next_month = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    later = datetime(2031, 3, 15, tzinfo=UTC).timestamp()
    await writer.record(attempt("future", started_at=later))
    where = await sql.fetchval(
        "SELECT tableoid::regclass::text FROM audit_attempts WHERE request_id = 'req-future'"
    )
    assert where == "audit_attempts_y2031m03"
    made = await sql.fetch(
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND relname LIKE 'audit_%_y2031m%'"
    )
    assert sorted(r[0] for r in made) == ["audit_attempts_y2031m03", "audit_bodies_y2031m03"]
    ahead = f"audit_attempts_y{next_month:%Ym%m}"  # the coming month, made ahead of time
    assert await sql.fetchval("SELECT to_regclass($1) IS NOT NULL", ahead)
    # Pruned behind the writer's back: it finds out and makes the month again.
    await sql.execute("DROP TABLE audit_attempts_y2031m03")
    await writer.record(attempt("future-2", started_at=later))
    assert await count(sql) == 1


async def test_a_busy_table_delays_only_next_months_partition(
    start_writer: Start, sql: asyncpg.Connection, audit_db: str
) -> None:
    now = datetime.now(UTC)
    ahead = datetime(now.year + now.month // 12, now.month % 12 + 1, 1, tzinfo=UTC)
    await sql.execute(f"DROP TABLE audit_attempts_y{ahead:%Ym%m}, audit_bodies_y{ahead:%Ym%m}")
    reader = await asyncpg.connect(audit_db)
    try:
        async with reader.transaction():  # a long query holds the parent table
            await reader.fetch("SELECT count(*) FROM audit_attempts")
            writer = await start_writer()  # cannot make next month now: gives up after 2 s
            await writer.record(attempt("busy"))  # this month's rows are written regardless
            assert await count(sql) == 1 and writer.statements == 1
            assert (
                await sql.fetchval("SELECT to_regclass($1)", f"audit_attempts_y{ahead:%Ym%m}")
                is None
            )
    finally:
        await reader.close()
    await sql.execute("SELECT llm_fleet_audit_partitions($1, 1)", ahead)


async def test_close_writes_what_waits_and_later_records_are_refused(
    start_writer: Start, sql: asyncpg.Connection
) -> None:
    writer = await start_writer(FULL_ONLY)
    waiting = [asyncio.create_task(writer.record(attempt(i))) for i in range(3)]
    await asyncio.sleep(0)
    assert not any(t.done() for t in waiting)  # 3 of 40 rows, and the wait is a minute
    await writer.close(grace=10)
    await asyncio.gather(*waiting)
    assert await count(sql) == 3
    with pytest.raises(InternalError):
        await writer.record(attempt(4))


async def test_start_refuses_a_database_without_the_tables(database_url: str) -> None:
    url = with_database(database_url, f"llm_fleet_audit_bare_{uuid.uuid4().hex[:12]}")
    await ensure_database(url)
    try:
        with pytest.raises(ConfigError, match="llm-fleet migrate"):
            await AuditWriter(url, QUICK).start()
        stranger = url.replace("postgres@", "no_such_role_7f3a@", 1)
        with pytest.raises(ConfigError, match="cannot be used"):
            await AuditWriter(stranger, QUICK).start()
    finally:
        await drop_database(database_url, url)


# -- a PostgreSQL restart mid-stream ------------------------------------------------------


async def wait_for(condition: Callable[[], bool], what: str, within: float = 30.0) -> None:
    give_up = time.monotonic() + within
    while not condition():
        if time.monotonic() > give_up:
            raise AssertionError(f"never: {what}")
        await asyncio.sleep(0.02)


async def test_a_postgresql_restart_delays_records_and_loses_none(
    private_postgres: PrivatePostgres,
) -> None:
    pg = private_postgres
    await asyncio.to_thread(pg.start)
    url = with_database(pg.url, f"audit_{uuid.uuid4().hex[:8]}")
    await migrate(url)
    seen = Seen()
    writer = CountingWriter(url, QUICK, observer=seen, backoff_initial=0.02, backoff_cap=0.2)
    await writer.start()
    try:
        await asyncio.gather(*(writer.record(attempt(f"before-{i}")) for i in range(10)))
        await asyncio.to_thread(pg.stop, "fast")
        during = [asyncio.create_task(writer.record(attempt(f"during-{i}"))) for i in range(30)]
        await wait_for(lambda: writer.outage, "the writer noticed the outage")
        await asyncio.sleep(0.3)  # retries keep failing while it is down...
        assert not any(t.done() for t in during)  # ...and no record returns meanwhile
        assert seen.database == [True] and writer.pending_rows == 30
        await asyncio.to_thread(pg.start)
        await asyncio.wait_for(asyncio.gather(*during), 30)
        after = [writer.record(attempt(f"after-{i}")) for i in range(10)]
        await asyncio.gather(*after)
        assert seen.database == [True, False] and not writer.outage
        conn = await asyncpg.connect(url)
        try:
            rows = await conn.fetch(
                "SELECT request_id, count(*) AS n FROM audit_attempts GROUP BY request_id"
            )
        finally:
            await conn.close()
        assert len(rows) == 50 and all(r["n"] == 1 for r in rows)
        assert writer.rows_refused == 0
    finally:
        await writer.close(grace=5)


async def test_close_fails_what_it_cannot_write_within_its_grace(
    private_postgres: PrivatePostgres,
) -> None:
    pg = private_postgres
    await asyncio.to_thread(pg.start)
    url = with_database(pg.url, f"audit_{uuid.uuid4().hex[:8]}")
    await migrate(url)
    writer = AuditWriter(url, QUICK, backoff_initial=0.02, backoff_cap=0.1)
    await writer.start()
    await asyncio.to_thread(pg.stop, "fast")
    try:
        stuck = asyncio.create_task(writer.record(attempt("stuck")))
        await wait_for(lambda: writer.outage, "the writer noticed the outage")
        await writer.close(grace=0.2)
        with pytest.raises(ProviderUnavailable):  # so its job is not acked as if recorded
            await stuck
    finally:
        await asyncio.to_thread(pg.start)
