"""The migration runner against real PostgreSQL, each test in a database of its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import asyncpg
import pytest

from tests.integration.conftest import RunCli, drop_database
from workers.migrate import SCHEMA_TABLE, MigrationError, migrate, with_database

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
        assert shipped.code == 0 and "applied 0001_credentials.sql" in shipped.out, shipped.err
    finally:
        await drop_database(fresh_db, fresh_db + "_shipped")
