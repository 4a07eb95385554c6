"""The audit trail through real workers: a worker killed with SIGKILL and a PostgreSQL
restart, mid-run, lose no row and duplicate none."""

from __future__ import annotations

import asyncio
import signal
import uuid

import asyncpg
import pytest

from contracts.client import FleetClient
from contracts.frames import Final
from contracts.jobs import Message
from providers.mock.server import RunningMock
from tests.brokers import PrivatePostgres
from tests.integration.conftest import CANARY_KEY, TENANT, SpawnWorker, sealed_target
from tests.integration.test_fleet import mock_admin
from workers.crypto import Keyring
from workers.migrate import migrate, with_database

pytestmark = pytest.mark.integration

JOBS = 24


async def test_kill_and_database_restart_lose_no_row_and_duplicate_none(
    private_postgres: PrivatePostgres,
    spawn_worker: SpawnWorker,
    client: FleetClient,
    keyring: Keyring,
    mock: RunningMock,
) -> None:
    pg = private_postgres
    await asyncio.to_thread(pg.start)
    url = with_database(pg.url, f"audit_fleet_{uuid.uuid4().hex[:8]}")
    await migrate(url)
    env = {"DATABASE_URL": url, "FLEET_AUDIT": "on"}
    doomed = await spawn_worker(env=env, concurrency=JOBS)
    model = f"mock-audit-{uuid.uuid4().hex[:6]}"
    # Every job stalls mid-answer for a while: the doomed worker holds them when killed.
    await mock_admin(
        mock, "POST", "/_mock/faults", {"spec": "stall-after:2:1.5", "times": JOBS, "model": model}
    )
    target = sealed_target(keyring, model=model)
    jobs = [
        asyncio.create_task(client.chat(target, [Message(role="user", content=f"job {i}")]))
        for i in range(JOBS)
    ]
    await asyncio.sleep(0.8)  # all taken by the doomed worker, none answered yet
    doomed.signal(signal.SIGKILL)
    await spawn_worker(env=env, concurrency=JOBS)
    await asyncio.to_thread(pg.stop, "fast")  # the survivor's rows must wait for it
    await asyncio.sleep(1.0)
    await asyncio.to_thread(pg.start)
    finals: list[Final] = await asyncio.wait_for(asyncio.gather(*jobs), 90)

    conn = await asyncpg.connect(url)
    try:
        # The survivor acks only once its rows are in: give the last batch its moment.
        for _ in range(100):
            rows = await conn.fetch(
                "SELECT request_id, attempt, status FROM audit_attempts WHERE producer = $1",
                TENANT,
            )
            if len(rows) >= JOBS:
                break
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    attempts = [(r["request_id"], r["attempt"]) for r in rows]
    assert len(attempts) == len(set(attempts)), "an attempt recorded twice"
    answered = {(f.request_id, f.attempt) for f in finals}
    ok = {(r["request_id"], r["attempt"]) for r in rows if r["status"] == "ok"}
    assert answered <= ok, sorted(answered - ok)  # every answer the producer got has its row
    assert all(f.attempt >= 2 for f in finals)  # they really were redelivered after the kill


async def test_bodies_are_kept_on_request_and_scrubbed(
    spawn_worker: SpawnWorker, client: FleetClient, keyring: Keyring, vault_db: str
) -> None:
    await spawn_worker(env={"DATABASE_URL": vault_db, "FLEET_AUDIT_BODIES": "on"})
    target = sealed_target(keyring, key=CANARY_KEY)
    final = await client.chat(target, [Message(role="user", content="keep my words")])
    conn = await asyncpg.connect(vault_db)
    try:
        for _ in range(50):  # acked after the row: it is there by now, or just about
            row = await conn.fetchrow(
                "SELECT request::text AS request, response::text AS response FROM audit_bodies"
                " WHERE request_id = $1",
                final.request_id,
            )
            if row is not None:
                break
            await asyncio.sleep(0.1)
    finally:
        await conn.close()
    assert row is not None
    assert "keep my words" in row["request"]
    assert final.message is not None and final.message.text()[:20] in row["response"]
    assert CANARY_KEY not in row["request"] + row["response"]
    assert target.credential.sealed is not None
    assert target.credential.sealed not in row["request"]  # the envelope is replaced too
