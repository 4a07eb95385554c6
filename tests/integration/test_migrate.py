"""The migration runner against real PostgreSQL, each test in a database of its own."""

from __future__ import annotations

import asyncio
import os
import shutil
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import asyncpg
import pytest

from tests.integration.conftest import RunCli, drop_database
from workers.migrate import SCHEMA_TABLE, MigrationError, migrate, migrations_dir, with_database
from workers.vault import Vault

pytestmark = pytest.mark.integration

FILES = {
    "0001_things.sql": "CREATE TABLE things (id int PRIMARY KEY);",
    "0002_seed.sql": "INSERT INTO things VALUES (1), (2);",  # needs 0001 first
    "0003_more.sql": "ALTER TABLE things ADD COLUMN label text; UPDATE things SET label = 'x';",
}


@pytest.fixture
async def fresh_db(database_url: str) -> AsyncIterator[str]:
    """The URL of a database that does not exist yet (migrate creates it)."""
    url = with_database(database_url, f"llm_fleet_mig_{uuid.uuid4().hex[:12]}")
    yield url
    await drop_database(database_url, url)


def write(directory: Path, files: dict[str, str]) -> Path:
    directory.mkdir(exist_ok=True)
    for name, sql in files.items():
        (directory / name).write_text(sql)
    return directory


async def fetch(url: str, query: str) -> list[asyncpg.Record]:
    conn = await asyncpg.connect(url)
    try:
        return list(await conn.fetch(query))
    finally:
        await conn.close()


async def test_creates_the_database_applies_in_order_once(fresh_db: str, tmp_path: Path) -> None:
    d = write(tmp_path / "m", FILES)
    assert await migrate(fresh_db, d) == list(FILES)
    assert await migrate(fresh_db, d) == []
    rows = await fetch(fresh_db, f"SELECT version, name, checksum FROM {SCHEMA_TABLE} ORDER BY 1")
    assert [(r["version"], r["name"]) for r in rows] == [(1, "things"), (2, "seed"), (3, "more")]
    assert all(len(r["checksum"]) == 64 for r in rows)
    assert [tuple(r) for r in await fetch(fresh_db, "SELECT * FROM things ORDER BY id")] == [
        (1, "x"),
        (2, "x"),
    ]
    write(d, {"0004_next.sql": "INSERT INTO things VALUES (3, 'y');"})
    assert await migrate(fresh_db, d) == ["0004_next.sql"]


async def test_refuses_edited_or_unknown_applied_migrations(fresh_db: str, tmp_path: Path) -> None:
    d = write(tmp_path / "m", FILES)
    await migrate(fresh_db, d)
    (d / "0002_seed.sql").write_text("INSERT INTO things VALUES (1), (2), (3);")
    with pytest.raises(MigrationError, match=r"0002_seed\.sql was changed after it was applied"):
        await migrate(fresh_db, d)
    older = write(tmp_path / "older", {k: v for k, v in FILES.items() if k != "0003_more.sql"})
    with pytest.raises(MigrationError, match="0003_more applied, which this code does not have"):
        await migrate(fresh_db, older)


async def test_a_failing_migration_leaves_nothing_behind(fresh_db: str, tmp_path: Path) -> None:
    # The second statement fails at run time, after the first has created its table.
    broken = "CREATE TABLE half (x int); INSERT INTO things VALUES (1, 'dup');"
    d = write(tmp_path / "m", {**FILES, "0004_broken.sql": broken})
    with pytest.raises(asyncpg.UniqueViolationError):
        await migrate(fresh_db, d)
    assert [r["version"] for r in await fetch(fresh_db, f"SELECT version FROM {SCHEMA_TABLE}")] == [
        1,
        2,
        3,
    ]
    assert await fetch(fresh_db, "SELECT to_regclass('half') AS t") == [(None,)]


async def test_concurrent_runs_create_and_apply_exactly_once(fresh_db: str, tmp_path: Path) -> None:
    d = write(tmp_path / "m", FILES)
    results = await asyncio.gather(*(migrate(fresh_db, d) for _ in range(6)))
    applied = [name for r in results for name in r]
    assert sorted(applied) == sorted(FILES)  # each file by exactly one of the runs
    assert len(await fetch(fresh_db, f"SELECT * FROM {SCHEMA_TABLE}")) == 3


async def test_cli_migrate(fleet_cli: RunCli, fresh_db: str, tmp_path: Path) -> None:
    d = write(tmp_path / "m", FILES)
    env = {"DATABASE_URL": fresh_db, "FLEET_MIGRATIONS_DIR": str(d)}
    first = await fleet_cli("migrate", env=env)
    assert first.code == 0 and "applied 0001_things.sql" in first.out, first.err
    second = await fleet_cli("migrate", env=env)
    assert second.code == 0 and "up to date" in second.out
    (d / "0001_things.sql").write_text("-- edited")
    edited = await fleet_cli("migrate", env=env)
    assert edited.code == 1 and "was changed after it was applied" in edited.err
    shipped = await fleet_cli("migrate", env={"DATABASE_URL": fresh_db + "_shipped"})
    try:
        assert shipped.code == 0, shipped.err
        for name in SHIPPED:
            assert f"applied {name}" in shipped.out, shipped.out
        assert "key-check record written" in shipped.out  # the active key's first use
        assert "warning" not in shipped.err  # no rows, so every constraint holds at once
    finally:
        await drop_database(fresh_db, fresh_db + "_shipped")


# -- the shipped migrations over a store that already has rows (issue 11) ----------------

# The columns of a row as 0001 made them (later migrations add others).
_ROW = "id, tenant, provider, name, key_id, nonce, ciphertext, created_at, updated_at, revoked_at"

SHIPPED = [
    "0001_credentials.sql",
    "0002_vault_key_checks.sql",
    "0003_credentials_constraints.sql",
    "0004_tenant_keys_and_shares.sql",
    "0005_audit.sql",
    "0006_embedding_cache.sql",
]


def only_0001(tmp_path: Path) -> Path:
    d = tmp_path / "only_0001"
    d.mkdir()
    shutil.copy(migrations_dir() / "0001_credentials.sql", d)
    return d


async def add_row(conn: asyncpg.Connection, **over: object) -> uuid.UUID:
    row: dict[str, object] = {
        "id": uuid.uuid4(),
        "tenant": "t",
        "provider": "mock",
        "name": f"n-{uuid.uuid4().hex[:8]}",
        "key_id": "k1",
        "nonce": os.urandom(12),
        "ciphertext": os.urandom(40),
        **over,
    }
    marks = ", ".join(f"${i}" for i in range(1, len(row) + 1))
    await conn.execute(
        f"INSERT INTO credentials ({', '.join(row)}) VALUES ({marks})", *row.values()
    )
    return row["id"]  # type: ignore[return-value]


async def validated(conn: asyncpg.Connection) -> dict[str, bool]:
    rows = await conn.fetch(
        "SELECT conname, convalidated FROM pg_constraint WHERE conrelid = 'credentials'::regclass"
    )
    return {r["conname"]: r["convalidated"] for r in rows}


async def test_shipped_migrations_apply_over_rows_from_0001_and_name_rows_that_break_them(
    fleet_cli: RunCli, fresh_db: str, tmp_path: Path
) -> None:
    assert await migrate(fresh_db, only_0001(tmp_path)) == ["0001_credentials.sql"]
    conn = await asyncpg.connect(fresh_db)
    try:
        good = [await add_row(conn) for _ in range(3)]
        empty_tenant = await add_row(conn, tenant="")
        created = datetime(2025, 6, 1, tzinfo=UTC)
        early = await add_row(conn, created_at=created, revoked_at=created - timedelta(days=1))
        nonce = os.urandom(12)
        twins = sorted([await add_row(conn, nonce=nonce), await add_row(conn, nonce=nonce)])
        before = await conn.fetch(f"SELECT {_ROW} FROM credentials ORDER BY id")

        env = {"DATABASE_URL": fresh_db, "INTEGRATION_CRYPTO_KEY": ""}
        first = await fleet_cli("migrate", env=env)
        assert first.code == 0, first.err
        assert "applied 0002_vault_key_checks.sql" in first.out
        assert "applied 0003_credentials_constraints.sql" in first.out
        for name, ids in [
            ("credentials_tenant_not_empty", [empty_tenant]),
            ("credentials_revoked_after_created", [early]),
            ("credentials_key_id_nonce_key", twins),
        ]:
            assert (
                f"warning: constraint {name} holds for new and changed rows only: "
                f"{len(ids)} existing row(s) break it: {', '.join(map(str, ids))}."
            ) in first.err, first.err
        assert "no key-check records written" in first.out
        # Nothing was changed or dropped; what no row breaks is already in force.
        assert await conn.fetch(f"SELECT {_ROW} FROM credentials ORDER BY id") == before
        state = await validated(conn)
        assert state["credentials_name_not_empty"] and state["credentials_key_id_not_empty"]
        assert not state["credentials_tenant_not_empty"]
        assert not state["credentials_revoked_after_created"]
        assert "credentials_key_id_nonce_key" not in state
        # NOT VALID still refuses every new row that breaks it.
        with pytest.raises(asyncpg.CheckViolationError):
            await add_row(conn, tenant="")
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "UPDATE credentials SET updated_at = now() WHERE id = $1", empty_tenant
            )

        store = Vault(fresh_db, cache_ttl=0)
        try:
            with pytest.raises(ValueError, match="breaks credentials_tenant_not_empty"):
                await store.revoke(str(empty_tenant))
        finally:
            await store.close()

        # The operator fixes the rows the report named; the next run completes the work.
        await conn.execute("UPDATE credentials SET tenant = 'fixed' WHERE id = $1", empty_tenant)
        await conn.execute("UPDATE credentials SET revoked_at = created_at WHERE id = $1", early)
        await conn.execute("DELETE FROM credentials WHERE id = $1", twins[1])
        second = await fleet_cli("migrate", env=env)
        assert second.code == 0 and "up to date" in second.out, second.err
        assert "warning" not in second.err
        for name in (
            "credentials_tenant_not_empty",
            "credentials_revoked_after_created",
            "credentials_key_id_nonce_key",
        ):
            assert f"constraint {name} now holds for every row" in second.out
        assert all((await validated(conn)).values())
        with pytest.raises(asyncpg.UniqueViolationError):
            await add_row(conn, nonce=nonce)
        third = await fleet_cli("migrate", env=env)
        assert third.code == 0 and "constraint" not in third.out + third.err
        assert len(good) == 3
    finally:
        await conn.close()


async def test_0003_gives_way_to_a_busy_table_and_a_later_run_applies_it(
    fresh_db: str, tmp_path: Path
) -> None:
    """On a live table, the migration waits at most its lock timeout, then rolls back whole."""
    await migrate(fresh_db, only_0001(tmp_path))
    conn = await asyncpg.connect(fresh_db)
    reader = await asyncpg.connect(fresh_db)
    try:
        row = await add_row(conn)
        tx = reader.transaction()
        await tx.start()
        await reader.fetch("SELECT * FROM credentials")  # a long reader holds ACCESS SHARE
        started = time.monotonic()
        with pytest.raises(asyncpg.LockNotAvailableError):
            await migrate(fresh_db)
        assert time.monotonic() - started < 20
        applied = await conn.fetch(f"SELECT name FROM {SCHEMA_TABLE} ORDER BY version")
        assert [r["name"] for r in applied] == ["credentials", "vault_key_checks"]
        assert "credentials_tenant_not_empty" not in await validated(conn)  # nothing half done
        await tx.rollback()
        assert await migrate(fresh_db) == [
            "0003_credentials_constraints.sql",
            "0004_tenant_keys_and_shares.sql",
            "0005_audit.sql",
            "0006_embedding_cache.sql",
        ]
        assert all((await validated(conn)).values())
        assert await conn.fetchval("SELECT count(*) FROM credentials WHERE id = $1", row) == 1
    finally:
        await reader.close()
        await conn.close()
