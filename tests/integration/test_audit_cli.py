"""`llm-fleet audit show|tail|summary|prune` against real PostgreSQL, as a subprocess."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import asyncpg
import pytest

from contracts.frames import Metrics, Usage
from tests.integration.conftest import ROOT, CliResult, drop_database
from tests.integration.test_audit import attempt
from workers.audit import AuditWriter
from workers.config import AuditSettings
from workers.migrate import migrate, with_database
from workers.outcome import TargetRef

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def cli_db(database_url: str) -> AsyncIterator[str]:
    """A database holding a small, known trail, written by the writer."""
    url = with_database(database_url, f"llm_fleet_audit_cli_{uuid.uuid4().hex[:12]}")
    await migrate(url)
    writer = AuditWriter(url, AuditSettings(enabled=True, batch_wait=0.001))
    await writer.start()
    opus = TargetRef("anthropic", "claude-opus-4-1", "cred-9")
    await writer.record(  # first attempt failed over from anthropic, then timed out
        attempt("r1", status="timeout", error="the provider did not answer", usage=None,
                metrics=Metrics(total_ms=5000.0), tried=[opus])
    )  # fmt: skip
    await writer.record(attempt("r1", attempt=2))
    await writer.record(
        attempt("r2", usage=Usage(input_tokens=5, output_tokens=7, total_tokens=12))
    )
    await writer.record(  # a model the price table does not know
        attempt("r3", target=TargetRef("vllm", "my-llama", None), metrics=Metrics(cost_usd=None),
                metadata={"team": "search"})
    )  # fmt: skip
    await writer.record(attempt("r4", producer="tenant-b", metrics=Metrics(cost_usd=0.5)))
    await writer.close()
    yield url
    await drop_database(database_url, url)


async def audit_cli(db: str, *args: str) -> CliResult:
    env = {**os.environ, "DATABASE_URL": db, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.cli", "audit", *args,
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return CliResult(proc.returncode, out.decode(), err.decode())


def lines(result: CliResult) -> list[dict[str, Any]]:
    assert result.code == 0, result.err
    return [json.loads(line) for line in result.out.splitlines()]


async def test_show_lists_every_attempt_of_a_request(cli_db: str) -> None:
    rows = lines(await audit_cli(cli_db, "show", "req-r1", "--json"))
    assert [(r["attempt"], r["status"]) for r in rows] == [(1, "timeout"), (2, "ok")]
    assert rows[0]["tried"] == [
        {"provider": "anthropic", "model": "claude-opus-4-1", "credential_id": "cred-9"}
    ]
    assert rows[0]["input_tokens"] is None and rows[1]["input_tokens"] == 10
    assert rows[1]["metadata"] == {"user": "u1"}
    datetime.fromisoformat(rows[0]["started_at"])  # ISO 8601
    text = await audit_cli(cli_db, "show", "req-r1")
    assert text.code == 0
    assert "attempt 1 of submission 0" in text.out and "attempt 2 of submission 0" in text.out
    assert "the provider did not answer" in text.out and "anthropic/claude-opus-4-1" in text.out
    assert lines(await audit_cli(cli_db, "show", "req-r1", "--tenant", "tenant-b", "--json")) == []
    missing = await audit_cli(cli_db, "show", "req-nope")
    assert missing.code == 1 and "no audit rows for request 'req-nope'" in missing.err


async def test_tail_shows_the_newest_rows_oldest_first(cli_db: str) -> None:
    rows = lines(await audit_cli(cli_db, "tail", "-n", "2", "--json"))
    assert [r["request_id"] for r in rows] == ["req-r3", "req-r4"]
    text = await audit_cli(cli_db, "tail", "-n", "5", "--tenant", "tenant-a")
    assert text.code == 0 and len(text.out.splitlines()) == 4
    unknown = next(line for line in text.out.splitlines() if "req-r3" in line)
    assert "vllm/my-llama" in unknown and unknown.endswith("unknown (1)")


async def test_summary_counts_tokens_and_keeps_unknown_cost_apart(cli_db: str) -> None:
    rows = lines(await audit_cli(cli_db, "summary", "--by", "tenant,provider,model", "--json"))
    by = {(r["tenant"], r["provider"], r["model"]): r for r in rows}
    openai = by[("tenant-a", "openai", "gpt-4o")]
    assert (openai["requests"], openai["attempts"], openai["errors"]) == (2, 3, 1)
    assert (openai["input_tokens"], openai["output_tokens"]) == (15, 27)
    assert openai["cached_input_tokens"] == 4  # r2's usage reports none: not counted as 0
    assert openai["cost_usd"] == pytest.approx(2e-4) and openai["unknown_cost"] == 0
    vllm = by[("tenant-a", "vllm", "my-llama")]
    assert vllm["cost_usd"] is None and vllm["unknown_cost"] == 1
    text = await audit_cli(cli_db, "summary", "--by", "provider")
    assert text.code == 0
    [head, *body] = text.out.splitlines()
    assert head.split()[:4] == ["provider", "requests", "attempts", "errors"]
    vllm_line = next(line for line in body if line.startswith("vllm"))
    assert vllm_line.endswith("unknown (1)")
    totals = lines(await audit_cli(cli_db, "summary", "--by", "", "--tenant", "tenant-b", "--json"))
    assert [(t["attempts"], t["cost_usd"]) for t in totals] == [(1, 0.5)]
    day = lines(await audit_cli(cli_db, "summary", "--by", "day", "--json"))
    assert [d["day"] for d in day] == [datetime.now(UTC).date().isoformat()]
    bad = await audit_cli(cli_db, "summary", "--since", "yesterday")
    assert bad.code == 2 and "like 90d" in bad.err


async def test_tail_follow_prints_new_rows(cli_db: str) -> None:
    env = {**os.environ, "DATABASE_URL": cli_db, "PYTHONPATH": str(ROOT)}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "workers.cli", "audit", "tail", "-n", "1", "--follow", "--json",
        env=env, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    assert proc.stdout is not None
    try:
        first = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        assert first["request_id"] == "req-r4"
        writer = AuditWriter(cli_db, AuditSettings(enabled=True, batch_wait=0.001))
        await writer.start()
        await writer.record(attempt("followed", producer="tenant-c"))
        await writer.close()
        new = json.loads(await asyncio.wait_for(proc.stdout.readline(), 30))
        assert (new["request_id"], new["producer"]) == ("req-followed", "tenant-c")
    finally:
        proc.terminate()
        await proc.wait()
    conn = await asyncpg.connect(cli_db)
    try:
        await conn.execute("DELETE FROM audit_attempts WHERE producer = 'tenant-c'")
    finally:
        await conn.close()


async def test_prune_drops_whole_old_months_only(cli_db: str) -> None:
    conn = await asyncpg.connect(cli_db)
    try:
        await conn.execute("SELECT llm_fleet_audit_partitions('2020-01-10', 2)")
        old = datetime(2020, 2, 3, tzinfo=UTC).timestamp()
        writer = AuditWriter(cli_db, AuditSettings(enabled=True, batch_wait=0.001))
        await writer.start()
        await writer.record(attempt("ancient", started_at=old))
        await writer.close()
        before = await conn.fetchval("SELECT count(*) FROM audit_attempts")

        dry = lines(await audit_cli(cli_db, "prune", "--older-than", "90d", "--dry-run", "--json"))
        assert sorted(dry[0]["dropped"]) == [
            "audit_attempts_y2020m01", "audit_attempts_y2020m02",
            "audit_bodies_y2020m01", "audit_bodies_y2020m02",
        ]  # fmt: skip
        assert await conn.fetchval("SELECT count(*) FROM audit_attempts") == before

        done = await audit_cli(cli_db, "prune", "--older-than", "90d")
        assert done.code == 0, done.err
        assert "dropped audit_attempts_y2020m02 (2020-02 UTC)" in done.out
        assert await conn.fetchval("SELECT count(*) FROM audit_attempts") == before - 1
        assert await conn.fetchval("SELECT to_regclass('audit_bodies_y2020m01')") is None
        month = f"{datetime.now(UTC):%Y-%m}"
        assert month in done.out.splitlines()[-1]  # this month is kept

        again = lines(await audit_cli(cli_db, "prune", "--older-than", "90d", "--json"))
        assert again[0]["dropped"] == [] and again[0]["created"] == []
        assert f"audit_attempts_y{datetime.now(UTC):%Ym%m}" in again[0]["kept"]
    finally:
        await conn.close()
    bad = await audit_cli(cli_db, "prune", "--older-than", "90")
    assert bad.code == 2 and "--older-than" in bad.err
