"""The backfill's content cache on a real PostgreSQL, migrated by `workers.migrate`."""

from __future__ import annotations

import struct
import time
import uuid
from collections.abc import AsyncIterator

import asyncpg
import pytest

from tests.integration.conftest import drop_database
from workers.backfill.cache import NoCache, PostgresEmbeddingCache, cache_key, open_cache
from workers.backfill.items import BackfillError
from workers.migrate import ensure_database, migrate, with_database

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
async def cache_db(database_url: str) -> AsyncIterator[str]:
    """A throwaway database with every shipped migration applied."""
    url = with_database(database_url, f"llm_fleet_cache_{uuid.uuid4().hex[:12]}")
    applied = await migrate(url)
    assert "0006_embedding_cache.sql" in applied
    yield url
    await drop_database(database_url, url)


@pytest.fixture
async def cache(cache_db: str) -> AsyncIterator[PostgresEmbeddingCache]:
    opened = await open_cache(cache_db)
    yield opened
    await opened.close()


def key(text: str, **changes: object) -> bytes:
    fields: dict[str, object] = {
        "tenant": "tenant-a",
        "provider": "openai",
        "model": "text-embedding-3-small",
        "dimensions": None,
        "input_type": None,
        "text": text,
    }
    fields.update(changes)
    return cache_key(**fields)  # type: ignore[arg-type]


def vector(*values: float) -> bytes:
    return struct.pack(f"<{len(values)}f", *values)


def test_keys_differ_by_every_field_and_are_unambiguous() -> None:
    base = key("hello")
    assert len(base) == 32 and key("hello") == base
    variants = [
        key("hello", tenant="tenant-b"),
        key("hello", provider="cohere"),
        key("hello", model="text-embedding-3-large"),
        key("hello", dimensions=256),
        key("hello", input_type="search_document"),
        key("hello", input_type=""),  # "" is not None
        key("hello "),
    ]
    assert len({base, *variants}) == len(variants) + 1
    # Length prefixes: moving a boundary between fields changes the key.
    assert key("x", tenant="ab", provider="c") != key("x", tenant="a", provider="bc")
    assert key("\ud800") != key("\ud801")  # lone surrogates are hashed, not refused


async def test_store_then_lookup_round_trips_vectors(cache: PostgresEmbeddingCache) -> None:
    a, b, unknown = key(f"a-{uuid.uuid4()}"), key(f"b-{uuid.uuid4()}"), key("never stored")
    await cache.store([(a, 3, vector(1, 2, 3)), (b, 2, vector(0.5, -0.5))])
    found = await cache.lookup([a, unknown, b, a])
    assert found == {a: (3, vector(1, 2, 3)), b: (2, vector(0.5, -0.5))}
    assert await cache.lookup([]) == {}


async def test_a_known_key_keeps_its_first_vector(cache: PostgresEmbeddingCache) -> None:
    k = key(f"dup-{uuid.uuid4()}")
    await cache.store([(k, 2, vector(1, 1)), (k, 2, vector(2, 2))])  # twice in one batch
    await cache.store([(k, 2, vector(3, 3))])  # and again later
    found = await cache.lookup([k])
    assert found[k][0] == 2 and found[k][1] in (vector(1, 1), vector(2, 2))
    assert found[k][1] != vector(3, 3)


async def test_the_table_refuses_a_vector_of_the_wrong_length(cache_db: str) -> None:
    conn = await asyncpg.connect(cache_db)
    try:
        with pytest.raises(asyncpg.CheckViolationError):
            await conn.execute(
                "INSERT INTO embedding_cache (key, dims, vector) VALUES ($1, 3, $2)",
                key("bad"),
                vector(1, 2),
            )
    finally:
        await conn.close()


async def test_many_keys_in_one_lookup(cache: PostgresEmbeddingCache) -> None:
    run = uuid.uuid4().hex
    entries = [(key(f"{run}-{n}"), 4, vector(n, n, n, n)) for n in range(6000)]
    started = time.perf_counter()
    await cache.store(entries)
    stored = time.perf_counter() - started
    keys = [k for k, _, _ in entries]
    started = time.perf_counter()
    found = await cache.lookup(keys[:1000])
    looked_up = time.perf_counter() - started
    assert len(found) == 1000
    everything = await cache.lookup(keys)  # more than one statement's batch
    assert len(everything) == 6000 and everything[keys[5999]] == (4, vector(*[5999] * 4))
    # Measured ~10-20 ms for 1,000 keys and ~0.1 s to store 6,000; bounds are generous.
    assert looked_up < 5.0 and stored < 30.0


async def test_lookup_survives_a_broken_database_and_store_reports_it(database_url: str) -> None:
    url = with_database(database_url, f"llm_fleet_cache_{uuid.uuid4().hex[:12]}")
    await migrate(url)
    cache = await open_cache(url)
    try:
        k = key("gone")
        await cache.store([(k, 1, vector(1))])
        conn = await asyncpg.connect(url)
        try:
            await conn.execute("DROP TABLE embedding_cache")
        finally:
            await conn.close()
        assert await cache.lookup([k]) == {}  # a miss, not a stopped backfill
        assert cache.lookup_failures == 1
        assert await cache.lookup([k]) == {}  # quiet for a while: not asked again
        assert cache.lookup_failures == 1
        with pytest.raises(asyncpg.UndefinedTableError):
            await cache.store([(k, 1, vector(1))])
    finally:
        await cache.close()
        await drop_database(database_url, url)


async def test_open_refuses_a_database_without_the_table(database_url: str) -> None:
    url = with_database(database_url, f"llm_fleet_cache_{uuid.uuid4().hex[:12]}")
    await ensure_database(url)  # created, never migrated
    try:
        with pytest.raises(BackfillError, match="no embedding_cache table: run `llm-fleet migr"):
            await open_cache(url)
    finally:
        await drop_database(database_url, url)


async def test_open_refuses_an_unreachable_database_without_showing_the_password() -> None:
    dsn = "postgresql://fleet:s3cret-pw@127.0.0.1:1/nowhere"
    with pytest.raises(BackfillError, match="cannot connect to the cache database") as caught:
        await open_cache(dsn)
    assert "s3cret-pw" not in str(caught.value)


async def test_no_cache_knows_nothing() -> None:
    none = NoCache()
    await none.store([(key("x"), 1, vector(1))])
    assert await none.lookup([key("x")]) == {}
    await none.close()
