"""Issue 11: credentials belong to tenants; per-purpose keys; sealed envelopes v2.

Real PostgreSQL (a database of this module's own), RabbitMQ and worker processes.
The system broker has one user, so the job's tenant is the test clients' user
(TENANT, `guest` by default) and "another tenant" is a row owned by someone else.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contracts import Message, NotFound, Unauthorized
from contracts import sealing as producer
from contracts.client import FleetClient
from contracts.jobs import Credential, Target
from tests.integration.conftest import (
    CANARY_KEY,
    MOCK_KEY,
    TENANT,
    RunCli,
    SpawnWorker,
    drop_database,
)
from tests.integration.test_vault import by_id, db_env, log_events
from workers.crypto import Keyring, seal
from workers.migrate import migrate, migrations_dir, with_database
from workers.vault import Vault, key_check_aad, key_check_text, legacy_row_aad
from workers.vault_keys import rotate

pytestmark = pytest.mark.integration

HELLO = [Message(role="user", content="hello tenants")]
OTHER = "tenant-b"


def shipped_migrations(into: Path, upto: int) -> Path:
    """A directory of the shipped migration files numbered up to `upto`."""
    into.mkdir()
    for path in sorted(migrations_dir().glob("*.sql")):
        if int(path.name[:4]) <= upto:
            shutil.copy(path, into)
    return into


async def fresh_database(admin_url: str, directory: Path | None = None) -> str:
    """A new database migrated with the shipped files (or those of `directory`)."""
    url = with_database(admin_url, f"llm_fleet_tenants_{uuid.uuid4().hex[:12]}")
    await migrate(url, directory)
    return url


@pytest.fixture(scope="module")
async def tenant_db(database_url: str) -> AsyncIterator[str]:
    url = await fresh_database(database_url)
    yield url
    await drop_database(database_url, url)


@pytest.fixture
async def sql(tenant_db: str) -> AsyncIterator[asyncpg.Connection]:
    conn = await asyncpg.connect(tenant_db)
    await conn.execute("TRUNCATE credentials, vault_key_checks CASCADE")
    yield conn
    await conn.close()


@pytest.fixture
async def store(tenant_db: str, sql: asyncpg.Connection, keyring: Keyring) -> AsyncIterator[Vault]:
    v = Vault(tenant_db, keyring, cache_ttl=0)
    yield v
    await v.close()


def same_but_id(message: str, cid: str) -> str:
    return message.replace(cid, "<id>")


async def refused_with(client: FleetClient, target: Target, error: type[Exception]) -> str:
    with pytest.raises(error) as info:
        await client.chat(target, HELLO)
    text = str(info.value)
    assert MOCK_KEY not in text and CANARY_KEY not in text
    return text


async def test_a_job_opens_only_its_tenants_credentials_and_shared_ones(
    fleet_cli: RunCli,
    spawn_worker: SpawnWorker,
    tenant_db: str,
    store: Vault,
    sql: asyncpg.Connection,
    client: FleetClient,
) -> None:
    own = await store.add(TENANT, "mock", "own", {"api_key": MOCK_KEY})
    foreign = await store.add(OTHER, "mock", "foreign", {"api_key": CANARY_KEY})
    lent = await store.add(OTHER, "mock", "lent", {"api_key": MOCK_KEY})
    gone = await store.add(OTHER, "mock", "gone", {"api_key": MOCK_KEY})
    await store.revoke(gone)
    # Someone with write access to the table relabels B's row as the job's tenant's:
    # the owner is in the row's associated data, so the row is damaged, not B's key.
    stolen = await store.add(OTHER, "mock", "stolen", {"api_key": CANARY_KEY})
    await sql.execute("UPDATE credentials SET tenant = $2 WHERE id = $1", uuid.UUID(stolen), TENANT)

    worker = await spawn_worker(env=db_env(tenant_db))
    [damaged] = log_events(worker, "vault_damaged_rows")  # reported; the worker started
    assert damaged["credential_ids"] == [stolen]
    assert (await client.chat(by_id(own), HELLO)).message is not None

    unknown = str(uuid.uuid4())
    expected = same_but_id(await refused_with(client, by_id(unknown), NotFound), unknown)
    assert f"tenant {TENANT!r}" in expected
    # Another tenant's credential, revoked or not, for this provider or another: the
    # very answer an unknown id gets, naming neither the owner nor the row's state.
    for cid, target in [
        (foreign, by_id(foreign)),
        (lent, by_id(lent)),
        (gone, by_id(gone)),
        (foreign, by_id(foreign, provider="openai")),
    ]:
        text = await refused_with(client, target, NotFound)
        assert same_but_id(text, cid) == expected
        assert OTHER not in text
    stolen_text = await refused_with(client, by_id(stolen), Unauthorized)
    assert f"credential {stolen} is damaged" in stolen_text

    shared = await fleet_cli("creds", "share", lent, "--with", TENANT, env=db_env(tenant_db))
    assert shared.code == 0 and f"shared {lent}" in shared.out, shared.err
    assert (await client.chat(by_id(lent), HELLO)).message is not None
    listing = await fleet_cli("creds", "list", "--tenant", TENANT, env=db_env(tenant_db))
    rows = {line.split()[0]: line.split() for line in listing.out.splitlines()[1:]}
    assert set(rows) == {own, lent, stolen}  # its own and the shared one (and the relabelled)
    assert rows[lent][1:3] == [OTHER, TENANT] and rows[own][2] == "-"
    assert rows[stolen][-1] == "damaged" and rows[own][-1] == "ok"

    unshared = await fleet_cli("creds", "unshare", lent, "--with", TENANT, env=db_env(tenant_db))
    assert unshared.code == 0 and "no longer shared" in unshared.out, unshared.err
    assert same_but_id(await refused_with(client, by_id(lent), NotFound), lent) == expected

    # An operator checks a tenant's credential: sent sealed for the CLI's own user.
    checked = await fleet_cli("creds", "verify", foreign, env=db_env(tenant_db))
    assert checked.code == 0 and checked.out.startswith("ok:"), checked.out + checked.err
    assert f"belongs to tenant {OTHER!r}" in checked.err
    for text in (checked.out, checked.err, listing.out, worker.logs()):
        assert CANARY_KEY not in text and MOCK_KEY not in text

    # The same rules in the vault itself, for two tenants neither of which is the CLI's.
    assert (await store.open(foreign, "mock", OTHER)).api_key == CANARY_KEY
    with pytest.raises(NotFound, match="tenant 'tenant-c'"):
        await store.open(foreign, "mock", "tenant-c")
    assert await store.share(foreign, "tenant-c") and not await store.share(foreign, "tenant-c")
    assert (await store.open(foreign, "mock", "tenant-c")).api_key == CANARY_KEY
    assert await store.unshare(foreign, "tenant-c")
    with pytest.raises(NotFound):
        await store.open(foreign, "mock", "tenant-c")
    with pytest.raises(NotFound):
        await store.open(foreign, "mock", "")


async def legacy_row(conn: asyncpg.Connection, raw: bytes, kid: str, name: str) -> str:
    """A row as the code before scheme 2 wrote it: the fleet key itself, no tenant in the AAD."""
    cid = str(uuid.uuid4())
    nonce = os.urandom(12)
    plaintext = json.dumps({"api_key": MOCK_KEY}).encode()
    ct = AESGCM(raw).encrypt(nonce, plaintext, legacy_row_aad(cid, "mock"))
    await conn.execute(
        "INSERT INTO credentials (id, tenant, provider, name, key_id, nonce, ciphertext)"
        " VALUES ($1, $2, 'mock', $3, $4, $5, $6)",
        uuid.UUID(cid),
        TENANT,
        name,
        kid,
        nonce,
        ct,
    )
    return cid


async def schemes(conn: asyncpg.Connection) -> dict[int, int]:
    rows = await conn.fetch("SELECT scheme, count(*) AS n FROM credentials GROUP BY scheme")
    return {r["scheme"]: r["n"] for r in rows}


async def test_legacy_rows_keep_opening_and_the_upgrade_is_resumable(
    fleet_cli: RunCli,
    spawn_worker: SpawnWorker,
    database_url: str,
    keyring: Keyring,
    crypto_key: str,
    client: FleetClient,
    tmp_path: Path,
) -> None:
    raw, kid = base64.b64decode(crypto_key), keyring.active_kid
    db = await fresh_database(database_url, shipped_migrations(tmp_path / "upto_0003", 3))
    conn = await asyncpg.connect(db)
    try:
        ids = [await legacy_row(conn, raw, kid, f"old{i}") for i in range(5)]
        nonce = os.urandom(12)
        check = AESGCM(raw).encrypt(nonce, key_check_text(kid), key_check_aad(kid))
        await conn.execute(
            "INSERT INTO vault_key_checks (key_id, nonce, ciphertext) VALUES ($1, $2, $3)",
            kid,
            nonce,
            check,
        )
        assert await migrate(db) == [
            "0004_tenant_keys_and_shares.sql",
            "0005_audit.sql",
            "0006_embedding_cache.sql",
        ]
        assert await schemes(conn) == {1: 5}

        worker = await spawn_worker(env=db_env(db))
        [legacy] = log_events(worker, "vault_legacy_rows")
        assert legacy["count"] == 5 and "llm-fleet creds rotate" in legacy["hint"]
        assert not log_events(worker, "vault_damaged_rows")
        listing = await fleet_cli("creds", "list", env=db_env(db))
        assert all(line.split()[6] == "v1" for line in listing.out.splitlines()[1:])
        assert "5 credential(s) listed use scheme v1" in listing.err
        assert "llm-fleet creds rotate" in listing.err

        async def all_open() -> None:
            answers = await asyncio.gather(*(client.chat(by_id(cid), HELLO) for cid in ids))
            assert all(a.message is not None for a in answers)

        await all_open()
        part = await fleet_cli(
            "creds", "rotate", "--batch-size", "2", "--max-batches", "1", env=db_env(db)
        )
        assert part.code == 0, part.err
        assert "re-encrypted 2 credential(s)" in part.out and "(2 upgraded from v1)" in part.out
        assert f"key-check record of key id {kid!r} upgraded to v2" in part.out
        assert await schemes(conn) == {1: 3, 2: 2}
        assert await conn.fetchval("SELECT scheme FROM vault_key_checks") == 2
        await all_open()  # a table of both schemes serves every row

        # The rest: two runners at once, beside a revocation; each row moves once.
        a, b = Vault(db, keyring, cache_ttl=0), Vault(db, keyring, cache_ttl=0)
        try:
            first, second, revoked = await asyncio.gather(
                rotate(a, keyring, batch_size=1),
                rotate(b, keyring, batch_size=1),
                a.revoke(ids[4]),
            )
        finally:
            await a.close()
            await b.close()
        assert revoked and first.upgraded + second.upgraded == 3
        assert await schemes(conn) == {2: 5}
        assert await conn.fetchval(
            "SELECT revoked_at IS NOT NULL FROM credentials WHERE id = $1", uuid.UUID(ids[4])
        )
        ids.pop()
        await all_open()
        again = await fleet_cli("creds", "rotate", env=db_env(db))
        assert again.code == 0 and "re-encrypted 0 credential(s)" in again.out, again.err
        # Upgraded rows bind their owner: relabelling one now makes it damaged.
        await conn.execute(
            "UPDATE credentials SET tenant = 'someone-else' WHERE id = $1", uuid.UUID(ids[0])
        )
        await conn.execute(
            "INSERT INTO credential_shares (credential_id, tenant) VALUES ($1, $2)",
            uuid.UUID(ids[0]),
            TENANT,
        )
        text = await refused_with(client, by_id(ids[0]), Unauthorized)
        assert "is damaged" in text
    finally:
        await conn.close()
        await drop_database(database_url, db)


async def test_a_tenants_sealing_key_seals_envelopes_the_worker_opens_for_it_only(
    fleet_cli: RunCli, spawn_worker: SpawnWorker, keyring: Keyring, client: FleetClient
) -> None:
    mine = await fleet_cli("seal-key", "--tenant", TENANT)
    theirs = await fleet_cli("seal-key", "--tenant", OTHER)
    assert mine.code == 0 and theirs.code == 0, mine.err + theirs.err
    my_key = producer.SealingKey.parse(mine.out)
    their_key = producer.SealingKey.parse(theirs.out)
    assert my_key.kid == keyring.active_kid and my_key.tenant == TENANT

    def target(envelope: str) -> Target:
        return Target(provider="mock", model="mock-chat", credential=Credential(sealed=envelope))

    await spawn_worker()
    fields = {"api_key": MOCK_KEY}
    ok = producer.seal(my_key, "mock", fields, ttl=600)
    assert (await client.chat(target(ok), HELLO)).message is not None

    foreign = producer.seal(their_key, "mock", fields, ttl=600)
    text = await refused_with(client, target(foreign), Unauthorized)
    assert f"sealed for tenant {OTHER!r}" in text and repr(TENANT) in text
    expired = producer.seal(my_key, "mock", fields, ttl=60, now=time.time() - 3600)
    assert "expired at" in await refused_with(client, target(expired), Unauthorized)
    wrong_provider = producer.seal(my_key, "openai", fields)
    assert "another provider" in await refused_with(client, target(wrong_provider), Unauthorized)
    old = "fleet1." + keyring.active_kid + "." + "A" * 60
    assert "re-seal" in await refused_with(client, target(old), Unauthorized)
    # The operator's own `seal` with the fleet key makes the same envelope kind.
    operator = seal(keyring, "mock", fields, tenant=TENANT, ttl=600)
    assert (await client.chat(target(operator), HELLO)).message is not None
