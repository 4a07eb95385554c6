"""The credential vault end to end: real PostgreSQL, RabbitMQ, worker processes and the CLI."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import time
import urllib.parse
import uuid
from collections import Counter
from datetime import UTC, datetime
from typing import Any

import aio_pika
import asyncpg
import httpx
import pytest

from contracts import BadRequest, FleetError, Message, NotFound, ProviderUnavailable, Unauthorized
from contracts import topology as t
from contracts.client import FleetClient
from contracts.codec import decode_frames
from contracts.frames import Error, Final
from contracts.jobs import Credential, Target
from providers.mock.server import RunningMock
from tests.integration.conftest import (
    CANARY_KEY,
    MOCK_KEY,
    TENANT,
    RunCli,
    SpawnWorker,
    WorkerProc,
    drain_queue,
)
from tests.integration.test_fleet import direct_text
from workers.crypto import Keyring
from workers.vault import Vault

pytestmark = pytest.mark.integration

HELLO = [Message(role="user", content="hello vault")]


@pytest.fixture(autouse=True)
async def fresh_key_checks(vault_sql: asyncpg.Connection) -> None:
    """Tests reuse key ids (k1, k2) with fresh keys: each starts with no check records."""
    await vault_sql.execute("TRUNCATE vault_key_checks")


def by_id(cid: str, provider: str = "mock", model: str = "mock-chat") -> Target:
    return Target(provider=provider, model=model, credential=Credential(id=cid))


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def keys(active: str, named: str) -> Keyring:
    return Keyring.from_env({"INTEGRATION_CRYPTO_KEY": active, "INTEGRATION_CRYPTO_KEYS": named})


def db_env(url: str, **extra: str) -> dict[str, str]:
    return {"DATABASE_URL": url, "FLEET_VAULT_CACHE_SECONDS": "0", **extra}


async def cli_add(
    fleet_cli: RunCli, name: str, secret: str, *, verify: bool = False, **kw: Any
) -> str:
    flags = ("--verify",) if verify else ()
    res = await fleet_cli(
        "creds",
        "add",
        "--tenant",
        TENANT,
        "--provider",
        "mock",
        "--name",
        name,
        *flags,
        stdin=secret,
        **kw,
    )
    assert res.code == 0, res.err
    cid = res.out.strip()
    assert uuid.UUID(cid) and cid in res.out.splitlines()  # stdout is exactly the id
    return cid


# -- round trip ------------------------------------------------------------------------


async def test_cli_add_then_a_worker_answers_by_credential_id(
    fleet_cli: RunCli,
    spawn_worker: SpawnWorker,
    vault_db: str,
    vault_sql: asyncpg.Connection,
    client: FleetClient,
    mock: RunningMock,
) -> None:
    cid = await cli_add(fleet_cli, "primary", MOCK_KEY + "\n")
    await spawn_worker(env=db_env(vault_db))
    final = await client.chat(by_id(cid), HELLO)
    assert final.message is not None
    assert final.message.content == await direct_text(mock, "hello vault")

    ok = await fleet_cli("creds", "verify", cid)
    assert ok.code == 0 and ok.out.startswith("ok:"), ok.out + ok.err
    wrong = await cli_add(fleet_cli, "wrong", "sk-not-accepted-by-the-mock")
    bad = await fleet_cli("creds", "verify", wrong)
    assert bad.code == 1 and bad.out.startswith("not ok:"), bad.out + bad.err
    assert "sk-not-accepted" not in bad.out + bad.err
    missing = await fleet_cli("creds", "verify", str(uuid.uuid4()))
    assert missing.code == 1 and "no credential with id" in missing.err


async def test_add_with_verify_stores_only_what_the_provider_accepts(
    fleet_cli: RunCli, spawn_worker: SpawnWorker, vault_sql: asyncpg.Connection
) -> None:
    await spawn_worker()
    wrong = "sk-refused-by-the-mock-5d2e9a"
    refused = await fleet_cli(
        "creds",
        "add",
        "--tenant",
        TENANT,
        "--provider",
        "mock",
        "--name",
        "checked",
        "--verify",
        stdin=wrong,
    )
    assert refused.code == 1, refused.out + refused.err
    assert "not stored" in refused.err and "refused the credential" in refused.err
    assert wrong not in refused.out + refused.err
    assert await vault_sql.fetchval("SELECT count(*) FROM credentials") == 0

    unknown = await fleet_cli(
        "creds",
        "add",
        "--tenant",
        TENANT,
        "--provider",
        "no-such-provider",
        "--name",
        "x",
        "--verify",
        stdin=MOCK_KEY,
    )
    assert unknown.code == 1 and "not stored" in unknown.err, unknown.err
    assert await vault_sql.fetchval("SELECT count(*) FROM credentials") == 0

    cid = await cli_add(fleet_cli, "checked", MOCK_KEY, verify=True)
    assert (
        await vault_sql.fetchval("SELECT count(*) FROM credentials WHERE id = $1", uuid.UUID(cid))
        == 1
    )


async def test_add_refuses_duplicates_and_empty_input(
    fleet_cli: RunCli, vault_sql: asyncpg.Connection
) -> None:
    await cli_add(fleet_cli, "dup", MOCK_KEY)
    again = await fleet_cli(
        "creds", "add", "--tenant", TENANT, "--provider", "mock", "--name", "dup", stdin=MOCK_KEY
    )
    assert again.code == 1 and "already has a live mock credential named 'dup'" in again.err
    empty = await fleet_cli(
        "creds", "add", "--tenant", TENANT, "--provider", "mock", "--name", "e", stdin="  \n"
    )
    assert empty.code == 1 and "empty credential" in empty.err
    unset = await fleet_cli(
        "creds",
        "add",
        "--tenant",
        TENANT,
        "--provider",
        "mock",
        "--name",
        "e",
        "--from-env",
        "NO_SUCH_VAR_XYZ",
    )
    assert unset.code == 1 and "NO_SUCH_VAR_XYZ is not set" in unset.err
    assert await vault_sql.fetchval("SELECT count(*) FROM credentials") == 1


# -- the canary ------------------------------------------------------------------------


async def test_canary_is_not_at_rest_in_logs_or_in_listings(
    fleet_cli: RunCli,
    spawn_worker: SpawnWorker,
    vault_db: str,
    vault_sql: asyncpg.Connection,
    client: FleetClient,
) -> None:
    outputs: list[str] = []
    piped = await cli_add(fleet_cli, "canary-stdin", CANARY_KEY)
    res = await fleet_cli(
        "creds",
        "add",
        "--tenant",
        TENANT,
        "--provider",
        "mock",
        "--name",
        "canary-env",
        "--from-env",
        "CANARY_VAR",
        env={"CANARY_VAR": CANARY_KEY},
    )
    assert res.code == 0, res.err
    from_env = res.out.strip()
    as_json = await cli_add(fleet_cli, "canary-json", f'{{"api_key": "{CANARY_KEY}"}}')
    outputs += [res.out, res.err]
    worker = await spawn_worker(env=db_env(vault_db))
    for cid in (piped, from_env, as_json):
        assert (await client.chat(by_id(cid), HELLO)).message is not None
        assert (await client.verify(by_id(cid))).ok
    # Failure paths log too: a revoked credential and one named for the wrong provider.
    revoked = await fleet_cli("creds", "revoke", piped)
    outputs += [revoked.out, revoked.err]
    with pytest.raises(Unauthorized):
        await client.chat(by_id(piped), HELLO)
    with pytest.raises(BadRequest):
        await client.chat(by_id(from_env, provider="openai"), HELLO)
    listing = await fleet_cli("creds", "list", "--all")
    assert listing.code == 0 and piped in listing.out and "canary-stdin" in listing.out
    for args in (("creds", "list"), ("creds", "verify", as_json)):
        res = await fleet_cli(*args)
        assert res.code == 0, res.err
        outputs += [res.out, res.err]
    outputs += [listing.out, listing.err]

    dump = await asyncio.create_subprocess_exec(
        "/usr/bin/pg_dump",
        "--data-only",
        "--dbname",
        vault_db,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    raw, err = await dump.communicate()
    assert dump.returncode == 0, err
    assert b"COPY public.credentials" in raw and piped.encode() in raw  # the rows are in the dump
    canary = CANARY_KEY.encode()
    for form in (canary, canary.hex().encode(), base64.b64encode(canary)):
        assert form not in raw, "canary at rest in PostgreSQL"
    logs = worker.logs()
    assert "job_refused" in logs and "was revoked" in logs  # the failure paths were logged
    assert CANARY_KEY not in logs, "canary in worker logs"
    for text in outputs:
        assert CANARY_KEY not in text


# -- things that must fail, clearly ----------------------------------------------------


async def test_each_broken_credential_gets_its_clear_error(
    fleet_cli: RunCli,
    spawn_worker: SpawnWorker,
    vault_db: str,
    vault: Vault,
    vault_sql: asyncpg.Connection,
    client: FleetClient,
    amqp_url: str,
) -> None:
    good = await vault.add(TENANT, "mock", "good", {"api_key": MOCK_KEY})
    donor = await vault.add(TENANT, "mock", "donor", {"api_key": MOCK_KEY})
    tampered = await vault.add(TENANT, "mock", "tampered", {"api_key": MOCK_KEY})
    swapped = await vault.add(TENANT, "mock", "swapped", {"api_key": "sk-other-key-000111"})
    revoked = await vault.add(TENANT, "mock", "revoked", {"api_key": MOCK_KEY})
    await spawn_worker(env=db_env(vault_db))

    ct = bytearray(
        await vault_sql.fetchval(
            "SELECT ciphertext FROM credentials WHERE id = $1", uuid.UUID(tampered)
        )
    )
    ct[3] ^= 0x01
    await vault_sql.execute(
        "UPDATE credentials SET ciphertext = $2 WHERE id = $1", uuid.UUID(tampered), bytes(ct)
    )
    # The swapped row gets another row's nonce and ciphertext: a valid ciphertext, wrong
    # row. UNIQUE (key_id, nonce) refuses the copy while the donor row exists, so the
    # donor goes first.
    donated = await vault_sql.fetchrow(
        "DELETE FROM credentials WHERE id = $1 RETURNING nonce, ciphertext", uuid.UUID(donor)
    )
    await vault_sql.execute(
        "UPDATE credentials SET nonce = $2, ciphertext = $3 WHERE id = $1",
        uuid.UUID(swapped),
        donated["nonce"],
        donated["ciphertext"],
    )
    res = await fleet_cli("creds", "revoke", revoked)
    assert res.code == 0 and f"revoked {revoked}" in res.out
    assert "already revoked" in (await fleet_cli("creds", "revoke", revoked)).out

    cases: list[tuple[Target, type[FleetError], str]] = [
        (by_id(tampered), Unauthorized, "is damaged: its stored row does not decrypt"),
        (by_id(swapped), Unauthorized, "is damaged: its stored row does not decrypt"),
        (by_id(revoked), Unauthorized, "was revoked"),
        (by_id(str(uuid.uuid4())), NotFound, "does not exist"),
        (by_id("not-a-uuid"), NotFound, "not a uuid"),
        (by_id(good, provider="openai"), BadRequest, "belongs to provider 'mock'"),
    ]
    for target, error, words in cases:
        with pytest.raises(error) as info:
            await client.chat(target, HELLO)
        assert words in str(info.value), (target, info.value)
        assert MOCK_KEY not in str(info.value)
    assert (await client.chat(by_id(good), HELLO)).message is not None  # the good one still works
    # Each of them can never succeed, so each is also dead-lettered for operators.
    dead = await drain_queue(amqp_url, t.DEAD_QUEUE, wait=0.3)
    assert Counter((m.headers or {}).get(t.HDR_DEAD_CODE) for m in dead) == {
        "unauthorized": 3,
        "not_found": 2,
        "bad_request": 1,
    }


async def test_worker_with_a_wrong_or_missing_key_refuses_to_start(
    spawn_worker: SpawnWorker,
    vault_db: str,
    vault_sql: asyncpg.Connection,
    client: FleetClient,
    free_port: int,
) -> None:
    k1 = new_key()
    writer = Vault(
        vault_db,
        Keyring.from_env({"INTEGRATION_CRYPTO_KEY": k1, "INTEGRATION_CRYPTO_KEYS": f"k1:{k1}"}),
    )
    cid = await writer.add(TENANT, "mock", "n", {"api_key": MOCK_KEY})
    await writer.close()

    with pytest.raises(RuntimeError) as missing:
        await spawn_worker(env=db_env(vault_db, INTEGRATION_CRYPTO_KEY=new_key()))
    assert "encrypted under key id 'k1' which INTEGRATION_CRYPTO_KEY(S) does not provide" in str(
        missing.value
    )
    with pytest.raises(RuntimeError) as wrong:
        await spawn_worker(env=db_env(vault_db, INTEGRATION_CRYPTO_KEYS=f"k1:{new_key()}"))
    # `add` recorded k1's key-check record; the wrong key does not open it.
    assert "key id 'k1': the key INTEGRATION_CRYPTO_KEY(S) gives for it does not open its " in str(
        wrong.value
    )
    assert "wrong key" in str(wrong.value)

    await spawn_worker(
        env=db_env(vault_db, INTEGRATION_CRYPTO_KEYS=f"k1:{k1}", FLEET_HEALTH_PORT=str(free_port))
    )
    assert (await client.chat(by_id(cid), HELLO)).message is not None
    async with httpx.AsyncClient() as http:
        ready = (await http.get(f"http://127.0.0.1:{free_port}/readiness/")).json()
    assert ready["checks"] == {"broker": True, "database": True, "audit": True}


async def test_worker_starts_when_the_database_is_down_and_says_so(
    spawn_worker: SpawnWorker,
    client: FleetClient,
    target: Target,
    free_port: int,
) -> None:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        dead_port = s.getsockname()[1]  # nothing listens here once closed
    url = f"postgresql://postgres@127.0.0.1:{dead_port}/llm_fleet"
    worker = await spawn_worker(env={"DATABASE_URL": url, "FLEET_HEALTH_PORT": str(free_port)})
    assert "credential_store_unreachable_at_start" in worker.logs()
    assert (await client.chat(target, HELLO)).message is not None  # sealed credentials still work
    async with httpx.AsyncClient() as http:
        r = await http.get(f"http://127.0.0.1:{free_port}/readiness/")
    assert r.status_code == 503 and r.json()["checks"] == {
        "broker": True,
        "database": False,
        "audit": False,
    }
    with pytest.raises(ProviderUnavailable):
        await client.chat(by_id(str(uuid.uuid4())), HELLO, deadline=time.time() + 1.5)


# -- key-check records, damaged rows (issue 11) ----------------------------------------


async def damage(sql: asyncpg.Connection, cid: str) -> None:
    """Flip one ciphertext bit: the row stays well-formed but no longer authenticates."""
    ct = bytearray(
        await sql.fetchval("SELECT ciphertext FROM credentials WHERE id = $1", uuid.UUID(cid))
    )
    ct[5] ^= 0x40
    await sql.execute(
        "UPDATE credentials SET ciphertext = $2 WHERE id = $1", uuid.UUID(cid), bytes(ct)
    )


def log_events(worker: WorkerProc, event: str) -> list[dict[str, Any]]:
    found = []
    for line in worker.logs().splitlines():
        with contextlib.suppress(ValueError):
            record = json.loads(line)
            if isinstance(record, dict) and record.get("event") == event:
                found.append(record)
    return found


def listed_states(listing: str) -> dict[str, str]:
    """Credential id -> the STATE column of `creds list`."""
    lines = listing.splitlines()
    assert lines[0].split()[-1] == "STATE", lines[0]
    return {line.split()[0]: line.split()[-1] for line in lines[1:]}


async def test_a_right_key_with_three_damaged_rows_starts_and_reports_them(
    fleet_cli: RunCli,
    spawn_worker: SpawnWorker,
    vault_db: str,
    vault: Vault,
    vault_sql: asyncpg.Connection,
    client: FleetClient,
    amqp_url: str,
    keyring: Keyring,
    crypto_key: str,
) -> None:
    ids = [await vault.add(TENANT, "mock", f"c{i}", {"api_key": MOCK_KEY}) for i in range(5)]
    # The three oldest: exactly the rows the old start-up check sampled, so before the
    # key-check record this store stopped every worker holding the right key.
    broken = ids[:3]
    for cid in broken:
        await damage(vault_sql, cid)
    worker = await spawn_worker(env=db_env(vault_db))

    [report] = log_events(worker, "vault_damaged_rows")
    assert report["count"] == 3 and report["credential_ids"] == sorted(broken)
    assert report["key_ids"] == [keyring.active_kid]
    assert not log_events(worker, "credential_keys_missing")
    for cid in ids[3:]:
        assert (await client.chat(by_id(cid), HELLO)).message is not None
    for cid in broken:
        with pytest.raises(Unauthorized) as info:
            await client.chat(by_id(cid), HELLO)
        assert f"credential {cid} is damaged" in info.value.message
        assert MOCK_KEY not in info.value.message
    dead = await drain_queue(amqp_url, t.DEAD_QUEUE, wait=0.3)
    assert sorted((m.headers or {}).get(t.HDR_DEAD_CODE) for m in dead) == ["unauthorized"] * 3
    assert MOCK_KEY not in worker.logs() and crypto_key not in worker.logs()

    listing = await fleet_cli("creds", "list")
    assert listing.code == 0, listing.err
    states = listed_states(listing.out)
    assert {cid: states[cid] for cid in ids} == {
        **{cid: "damaged" for cid in broken},
        **{cid: "ok" for cid in ids[3:]},
    }
    bare = await fleet_cli("creds", "list", env={"INTEGRATION_CRYPTO_KEY": ""})
    assert bare.code == 0 and "STATE" not in bare.out and broken[0] in bare.out

    k2 = new_key()
    rotation_env = {
        "INTEGRATION_CRYPTO_KEY": k2,
        "INTEGRATION_CRYPTO_KEYS": f"{keyring.active_kid}:{crypto_key},k2:{k2}",
    }
    rotated = await fleet_cli("creds", "rotate", env=rotation_env)
    assert rotated.code == 1
    assert "re-encrypted 2 credential(s) under key id 'k2'" in rotated.out
    for cid in broken:
        assert f"damaged {cid}: damaged: does not decrypt" in rotated.err
    assert "3 credential(s) are damaged" in rotated.err and "cannot read" not in rotated.err
    assert await kid_counts(vault_sql) == {keyring.active_kid: 3, "k2": 2}


async def test_a_wrong_key_is_refused_by_the_check_record_whatever_the_rows(
    spawn_worker: SpawnWorker, vault_db: str, vault_sql: asyncpg.Connection
) -> None:
    k1 = new_key()
    writer = Vault(vault_db, keys(k1, f"k1:{k1}"))
    ids = [await writer.add(TENANT, "mock", f"n{i}", {"api_key": MOCK_KEY}) for i in range(2)]
    await writer.close()
    assert await vault_sql.fetchval("SELECT count(*) FROM vault_key_checks") == 1
    for cid in ids:
        await damage(vault_sql, cid)

    # Every row damaged: no row can tell a right key from a wrong one, the record can.
    right = await spawn_worker(env=db_env(vault_db, INTEGRATION_CRYPTO_KEYS=f"k1:{k1}"))
    [report] = log_events(right, "vault_damaged_rows")
    assert report["count"] == 2 and report["credential_ids"] == sorted(ids)
    wrong_key = new_key()
    with pytest.raises(RuntimeError) as wrong:
        await spawn_worker(env=db_env(vault_db, INTEGRATION_CRYPTO_KEYS=f"k1:{wrong_key}"))
    message = str(wrong.value)
    assert "refused to start" in message and "does not open its key-check record" in message
    assert "key id 'k1'" in message and "vault_damaged_rows" not in message
    assert wrong_key not in message and k1 not in message

    # No rows at all: a wrong key is still refused, by the record alone.
    await vault_sql.execute("DELETE FROM credentials")
    with pytest.raises(RuntimeError, match="does not open its key-check record"):
        await spawn_worker(env=db_env(vault_db, INTEGRATION_CRYPTO_KEYS=f"k1:{new_key()}"))
    await spawn_worker(env=db_env(vault_db, INTEGRATION_CRYPTO_KEYS=f"k1:{k1}"))

    # ... and `creds add` will not write a row under it either.
    refused = Vault(vault_db, keys(wrong_key, f"k1:{wrong_key}"))
    try:
        with pytest.raises(Unauthorized, match="does not open its key-check record"):
            await refused.add(TENANT, "mock", "never", {"api_key": MOCK_KEY})
    finally:
        await refused.close()
    assert await vault_sql.fetchval("SELECT count(*) FROM credentials") == 0


async def test_rows_from_before_check_records_prove_the_key_and_the_first_open_records_it(
    fleet_cli: RunCli, spawn_worker: SpawnWorker, vault_db: str, vault_sql: asyncpg.Connection
) -> None:
    k1 = new_key()
    writer = Vault(vault_db, keys(k1, f"k1:{k1}"))
    ids = [await writer.add(TENANT, "mock", f"n{i}", {"api_key": MOCK_KEY}) for i in range(4)]
    await writer.close()
    await vault_sql.execute("TRUNCATE vault_key_checks")  # as if written before 0002
    for cid in ids[:3]:
        await damage(vault_sql, cid)

    with pytest.raises(RuntimeError) as wrong:
        await spawn_worker(env=db_env(vault_db, INTEGRATION_CRYPTO_KEYS=f"k1:{new_key()}"))
    assert "credentials under key id 'k1' do not decrypt" in str(wrong.value)
    assert await vault_sql.fetchval("SELECT count(*) FROM vault_key_checks") == 0

    worker = await spawn_worker(env=db_env(vault_db, INTEGRATION_CRYPTO_KEYS=f"k1:{k1}"))
    assert [e["key_id"] for e in log_events(worker, "vault_key_check_recorded")] == ["k1"]
    assert log_events(worker, "vault_damaged_rows")[0]["count"] == 3
    assert await vault_sql.fetchval("SELECT key_id FROM vault_key_checks") == "k1"
    # From now on the record decides: the one good row could be damaged too.
    await damage(vault_sql, ids[3])
    await spawn_worker(env=db_env(vault_db, INTEGRATION_CRYPTO_KEYS=f"k1:{k1}"))

    # `llm-fleet migrate` records keys too, and refuses a wrong one.
    await vault_sql.execute("TRUNCATE vault_key_checks")
    await vault_sql.execute("TRUNCATE credentials CASCADE")
    env = {"INTEGRATION_CRYPTO_KEY": k1, "INTEGRATION_CRYPTO_KEYS": f"k1:{k1}"}
    first = await fleet_cli("migrate", env=env)
    assert first.code == 0 and "key id 'k1': key-check record written" in first.out, first.err
    again = await fleet_cli("migrate", env=env)
    assert again.code == 0 and "key id 'k1': key-check record opens" in again.out
    other = new_key()
    bad = await fleet_cli(
        "migrate", env={"INTEGRATION_CRYPTO_KEY": other, "INTEGRATION_CRYPTO_KEYS": f"k1:{other}"}
    )
    assert bad.code == 1 and "key id 'k1'" in bad.err and "wrong key" in bad.err
    assert other not in bad.out + bad.err


async def test_constraints_refuse_bad_rows_in_sql(
    vault: Vault, vault_sql: asyncpg.Connection
) -> None:
    cid = await vault.add(TENANT, "mock", "base", {"api_key": MOCK_KEY})
    base = dict(
        await vault_sql.fetchrow(
            "SELECT key_id, nonce, ciphertext FROM credentials WHERE id = $1", uuid.UUID(cid)
        )
    )

    async def insert(**over: Any) -> None:
        row = {
            "id": uuid.uuid4(),
            "tenant": "t",
            "provider": "mock",
            "name": f"n-{uuid.uuid4().hex[:6]}",
            "key_id": base["key_id"],
            "nonce": os.urandom(12),
            "ciphertext": base["ciphertext"],
            **over,
        }
        cols = ", ".join(row)
        marks = ", ".join(f"${i}" for i in range(1, len(row) + 1))
        await vault_sql.execute(f"INSERT INTO credentials ({cols}) VALUES ({marks})", *row.values())

    for column in ("tenant", "provider", "name", "key_id"):
        with pytest.raises(asyncpg.CheckViolationError) as info:
            await insert(**{column: ""})
        assert info.value.constraint_name == f"credentials_{column}_not_empty"
    with pytest.raises(asyncpg.CheckViolationError) as early:
        await insert(
            created_at=datetime(2025, 5, 2, tzinfo=UTC), revoked_at=datetime(2025, 5, 1, tzinfo=UTC)
        )
    assert early.value.constraint_name == "credentials_revoked_after_created"
    with pytest.raises(asyncpg.CheckViolationError):
        await vault_sql.execute(
            "UPDATE credentials SET revoked_at = created_at - interval '1 second' WHERE id = $1",
            uuid.UUID(cid),
        )
    with pytest.raises(asyncpg.UniqueViolationError) as reused:
        await insert(nonce=base["nonce"])  # the same nonce under the same key id
    assert reused.value.constraint_name == "credentials_key_id_nonce_key"
    with pytest.raises(asyncpg.UniqueViolationError):
        day = datetime(2025, 5, 1, tzinfo=UTC)
        await insert(nonce=base["nonce"], created_at=day, revoked_at=day)  # revoked rows too
    await insert(nonce=base["nonce"], key_id="another-kid")  # same nonce, other key: fine
    await insert(
        created_at=datetime(2025, 5, 1, tzinfo=UTC), revoked_at=datetime(2025, 5, 1, tzinfo=UTC)
    )
    with pytest.raises(asyncpg.CheckViolationError):
        await vault_sql.execute(
            "INSERT INTO vault_key_checks (key_id, nonce, ciphertext) VALUES ('', $1, $2)",
            os.urandom(12),
            os.urandom(40),
        )
    # Every constraint is in force for all rows of a store migrated from empty.
    pending = await vault_sql.fetch(
        "SELECT conname FROM pg_constraint"
        " WHERE conrelid = 'credentials'::regclass AND NOT convalidated"
    )
    assert pending == []
    assert await vault_sql.fetchval("SELECT count(*) FROM credentials") == 3


# -- rotation --------------------------------------------------------------------------


async def kid_counts(sql: asyncpg.Connection) -> dict[str, int]:
    rows = await sql.fetch("SELECT key_id, count(*) AS n FROM credentials GROUP BY key_id")
    return {r["key_id"]: r["n"] for r in rows}


class JobLoop:
    """Keeps chat jobs flowing over a set of stored credentials and records every outcome."""

    def __init__(self, client: FleetClient, ids: list[str]) -> None:
        self._client, self._ids = client, ids
        self.ok = 0
        self.failures: list[str] = []
        self._stop = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []

    def start(self, lanes: int = 4) -> None:
        self._tasks = [asyncio.create_task(self._lane(i)) for i in range(lanes)]

    async def _lane(self, lane: int) -> None:
        n = lane
        while not self._stop.is_set():
            cid = self._ids[n % len(self._ids)]
            n += 4
            try:
                final = await self._client.chat(by_id(cid), HELLO)
                assert final.message is not None
                self.ok += 1
            except Exception as exc:
                self.failures.append(f"{cid}: {exc!r}")

    async def wait_for_more(self, n: int, patience: float = 60.0) -> None:
        target, give_up = self.ok + n, time.monotonic() + patience
        while self.ok < target:
            assert time.monotonic() < give_up and not self.failures, self.failures
            await asyncio.sleep(0.02)

    async def stop(self) -> None:
        self._stop.set()
        await asyncio.gather(*self._tasks)


async def test_rotation_is_resumable_and_a_worker_serves_throughout(
    fleet_cli: RunCli,
    spawn_worker: SpawnWorker,
    vault_db: str,
    vault_sql: asyncpg.Connection,
    client: FleetClient,
) -> None:
    k1, k2 = new_key(), new_key()
    both = f"k1:{k1},k2:{k2}"
    old = Vault(vault_db, keys(k1, both))
    ids = [await old.add(TENANT, "mock", f"c{i}", {"api_key": MOCK_KEY}) for i in range(30)]
    await old.revoke(ids.pop())  # revoked rows are rotated too (keys get retired later)
    await old.close()
    assert await kid_counts(vault_sql) == {"k1": 30}
    rotating = await spawn_worker(
        env=db_env(vault_db, INTEGRATION_CRYPTO_KEY=k1, INTEGRATION_CRYPTO_KEYS=both)
    )
    jobs = JobLoop(client, ids)
    jobs.start()
    try:
        await jobs.wait_for_more(10)
        new_env = {"INTEGRATION_CRYPTO_KEY": k2, "INTEGRATION_CRYPTO_KEYS": both}
        part = await fleet_cli(
            "creds", "rotate", "--batch-size", "5", "--max-batches", "2", env=new_env
        )
        assert part.code == 0, part.err
        assert "run again to continue" in part.out
        assert await kid_counts(vault_sql) == {"k1": 20, "k2": 10}  # interrupted half way
        await jobs.wait_for_more(30)  # served from a table holding both keys' rows
        rest = await fleet_cli("creds", "rotate", "--batch-size", "7", env=new_env)
        assert rest.code == 0, rest.err
        assert "re-encrypted 20 credential(s) under key id 'k2'" in rest.out
        assert await kid_counts(vault_sql) == {"k2": 30}
        await jobs.wait_for_more(20)
    finally:
        await jobs.stop()
    assert not jobs.failures, jobs.failures
    again = await fleet_cli("creds", "rotate", env=new_env)
    assert again.code == 0 and "re-encrypted 0 credential(s)" in again.out

    # Old key retired: rows written under k1 open for a worker that holds only k2, and a
    # worker that holds only k1 now refuses to start.
    rotating.signal(signal.SIGTERM)
    assert await rotating.wait() == 0
    with pytest.raises(RuntimeError, match="key id 'k2' which INTEGRATION_CRYPTO_KEY"):
        await spawn_worker(
            env=db_env(vault_db, INTEGRATION_CRYPTO_KEY=k1, INTEGRATION_CRYPTO_KEYS=f"k1:{k1}")
        )
    await spawn_worker(
        env=db_env(vault_db, INTEGRATION_CRYPTO_KEY=k2, INTEGRATION_CRYPTO_KEYS=f"k2:{k2}")
    )
    answers = await asyncio.gather(*(client.chat(by_id(cid), HELLO) for cid in ids))
    assert all(a.message is not None for a in answers)


async def test_rotate_reports_rows_it_cannot_read_and_leaves_them_alone(
    fleet_cli: RunCli, vault_db: str, vault_sql: asyncpg.Connection
) -> None:
    k0, k1, k2 = new_key(), new_key(), new_key()
    lost = Vault(vault_db, keys(k0, f"k0:{k0}"))
    orphan = await lost.add(TENANT, "mock", "orphan", {"api_key": MOCK_KEY})
    await lost.close()
    old = Vault(vault_db, keys(k1, f"k1:{k1}"))
    for i in range(5):
        await old.add(TENANT, "mock", f"c{i}", {"api_key": MOCK_KEY})
    await old.close()
    before = await vault_sql.fetchrow("SELECT * FROM credentials WHERE id = $1", uuid.UUID(orphan))

    new_env = {"INTEGRATION_CRYPTO_KEY": k2, "INTEGRATION_CRYPTO_KEYS": f"k1:{k1},k2:{k2}"}
    res = await fleet_cli("creds", "rotate", "--batch-size", "2", env=new_env)
    assert res.code == 1
    assert f"cannot read {orphan}" in res.err and "'k0'" in res.err
    assert "1 credential(s) could not be read and were left untouched" in res.err
    assert await kid_counts(vault_sql) == {"k0": 1, "k2": 5}
    after = await vault_sql.fetchrow("SELECT * FROM credentials WHERE id = $1", uuid.UUID(orphan))
    assert dict(after) == dict(before)


# -- PostgreSQL goes away mid-run -----------------------------------------------------


class CuttableProxy:
    """A TCP relay in front of PostgreSQL that the test can cut (drop every connection and
    refuse new ones) and restore, without touching the machine's real server."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self._up = (upstream_host, upstream_port)
        self._server: asyncio.Server | None = None
        self._transports: set[asyncio.BaseTransport] = set()
        self.port = 0
        self.connections = 0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._handle, "127.0.0.1", self.port)
        self.port = self._server.sockets[0].getsockname()[1]

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._up)
        except OSError:
            writer.transport.abort()
            return
        self.connections += 1
        self._transports |= {writer.transport, up_writer.transport}
        await asyncio.gather(self._pipe(reader, up_writer), self._pipe(up_reader, writer))

    @staticmethod
    async def _pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except OSError:
            pass
        finally:
            writer.transport.abort()

    async def cut(self) -> None:
        assert self._server is not None
        self._server.close()
        await self._server.wait_closed()
        for transport in self._transports:
            transport.abort()
        self._transports.clear()

    async def restore(self) -> None:
        await self.start()

    async def close(self) -> None:
        await self.cut()


async def test_database_outage_loses_no_job(
    spawn_worker: SpawnWorker,
    vault_db: str,
    vault: Vault,
    amqp_url: str,
) -> None:
    parts = urllib.parse.urlsplit(vault_db)
    proxy = CuttableProxy(parts.hostname or "127.0.0.1", parts.port or 5432)
    await proxy.start()
    netloc = parts.netloc.rpartition("@")[0] + f"@127.0.0.1:{proxy.port}"
    via_proxy = urllib.parse.urlunsplit(parts._replace(netloc=netloc.lstrip("@")))
    cid = await vault.add(TENANT, "mock", "outage", {"api_key": MOCK_KEY})
    worker: WorkerProc = await spawn_worker(env=db_env(via_proxy))
    terminal: Counter[str] = Counter()
    client = FleetClient(amqp_url, default_timeout=90)
    original = client._on_reply

    async def tap(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        for frame in decode_frames(message.body):
            if isinstance(frame, Final | Error):
                terminal[frame.request_id] += 1
        await original(message)

    client._on_reply = tap  # type: ignore[method-assign]
    try:
        async with client:
            assert (await client.chat(by_id(cid), HELLO)).message is not None  # warm pool
            await proxy.cut()
            patient = [asyncio.create_task(client.chat(by_id(cid), HELLO)) for _ in range(7)]
            hasty = [
                asyncio.create_task(client.chat(by_id(cid), HELLO, deadline=time.time() + 1.0))
                for _ in range(3)
            ]
            # The outage outlasts the hasty jobs' deadlines (they must give up) but not the
            # patient ones' (they must wait and then succeed).
            done, _ = await asyncio.wait(hasty, timeout=30)
            assert done == set(hasty)
            assert not any(t.done() for t in patient)
            await proxy.restore()
            answers = await asyncio.gather(*patient)
            for task in hasty:
                exc = task.exception()
                assert isinstance(exc, ProviderUnavailable), exc
                assert "credential store unreachable" in str(exc)
            assert all(a.message is not None for a in answers)
            await asyncio.sleep(0.5)  # any duplicate frame would have arrived by now
    finally:
        await proxy.close()
    assert len(terminal) == 11 and set(terminal.values()) == {1}, terminal
    assert "credential_store_unavailable" in worker.logs()
    assert proxy.connections >= 2  # the worker reconnected through the restored relay
    assert await drain_queue(amqp_url, "llm.dead") == []
    assert await drain_queue(amqp_url, "llm.chat") == []


async def test_revocation_reaches_workers_holding_a_cached_row(
    spawn_worker: SpawnWorker, client: FleetClient, vault: Vault, vault_db: str, fleet_cli: RunCli
) -> None:
    """A worker caching encrypted rows for a minute refuses a credential right after revoke."""
    cid = await vault.add(TENANT, "mock", "cached", {"api_key": MOCK_KEY})
    await spawn_worker(env={"DATABASE_URL": vault_db, "FLEET_VAULT_CACHE_SECONDS": "60"})
    target = Target(provider="mock", model="mock-model", credential=Credential(id=cid))
    msgs = [Message(role="user", content="cache me")]
    assert (await client.chat(target, msgs)).message is not None  # the row is now cached
    res = await fleet_cli("creds", "revoke", cid)
    assert res.code == 0, res.err
    give_up = time.monotonic() + 10
    while True:
        try:
            await client.chat(target, msgs)
        except Unauthorized as exc:
            assert "revoked" in exc.message
            break
        assert time.monotonic() < give_up, "revocation never reached the worker's cache"
        await asyncio.sleep(0.1)
