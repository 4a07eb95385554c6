"""A content-hash cache of embeddings, so no text is paid for twice.

A vector depends on what was asked (provider, model, dimensions, input_type) and
the text, nothing else, so those make the key, and the key is all the backfill
looks up: a text seen before, in this corpus, another output, or another run, is
served from the table instead of the provider. The tenant (the producer's broker
login) is part of the key too: otherwise a tenant could learn, by timing or cost,
whether another tenant had embedded some text. Only the hash is stored, never
the text.

The key is SHA-256 over a versioned, length-prefixed encoding of each field, with
None kept apart from "" (dimensions None is the model's default, a different
vector), so no two different requests can be made to encode alike.

A cache saves money and must never stop a backfill: `lookup` answers "nothing
known" while the database is unreachable (and stops asking it for a while, so a
dead server does not add a timeout to every batch). `store` raises, and the
caller logs it. Only opening it fails loudly, with what to do about it.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Sequence
from typing import Protocol

import asyncpg

from workers.backfill.inputs import dsn_without_password
from workers.backfill.items import BackfillError

__all__ = ["EmbeddingCache", "NoCache", "PostgresEmbeddingCache", "cache_key", "open_cache"]

log = logging.getLogger(__name__)

TABLE = "embedding_cache"
_KEY_VERSION = b"llm-fleet embedding cache v1\x00"
_BATCH = 5_000  # keys or rows per statement
_CONNECT_TIMEOUT = 10.0
_COMMAND_TIMEOUT = 30.0
_QUIET_AFTER_FAILURE = 30.0  # seconds lookups skip the database after it failed


def cache_key(
    *,
    tenant: str,
    provider: str,
    model: str,
    dimensions: int | None,
    input_type: str | None,
    text: str,
) -> bytes:
    """The 32-byte key of one text's vector for one tenant and target."""
    digest = hashlib.sha256(_KEY_VERSION)
    fields = (tenant, provider, model, None if dimensions is None else str(dimensions), input_type)
    for value in (*fields, text):
        if value is None:
            digest.update(b"\x00")
            continue
        data = value.encode("utf-8", "surrogatepass")
        digest.update(b"\x01" + len(data).to_bytes(8, "big"))
        digest.update(data)
    return digest.digest()


class EmbeddingCache(Protocol):
    async def lookup(self, keys: Sequence[bytes]) -> dict[bytes, tuple[int, bytes]]:
        """The known vectors among `keys`: key -> (dims, float32 LE bytes)."""
        ...

    async def store(self, entries: Sequence[tuple[bytes, int, bytes]]) -> None:
        """Remember (key, dims, vector bytes) entries; a key already known is kept as is."""
        ...

    async def close(self) -> None: ...


class NoCache:
    """The cache when there is none (`--no-cache`, or no database)."""

    async def lookup(self, keys: Sequence[bytes]) -> dict[bytes, tuple[int, bytes]]:
        return {}

    async def store(self, entries: Sequence[tuple[bytes, int, bytes]]) -> None:
        return None

    async def close(self) -> None:
        return None


class PostgresEmbeddingCache:
    """The `embedding_cache` table (migrations/0006_embedding_cache.sql) on a small pool."""

    def __init__(self, pool: asyncpg.Pool) -> None:
        self._pool = pool
        self._quiet_until = 0.0
        self.lookup_failures = 0

    async def lookup(self, keys: Sequence[bytes]) -> dict[bytes, tuple[int, bytes]]:
        if not keys or time.monotonic() < self._quiet_until:
            return {}
        unique = list(dict.fromkeys(keys))
        found: dict[bytes, tuple[int, bytes]] = {}
        try:
            for start in range(0, len(unique), _BATCH):
                rows = await self._pool.fetch(
                    f"SELECT key, dims, vector FROM {TABLE} WHERE key = ANY($1::bytea[])",
                    unique[start : start + _BATCH],
                )
                for row in rows:
                    dims, vector = int(row["dims"]), bytes(row["vector"])
                    if dims > 0 and len(vector) == dims * 4:
                        found[bytes(row["key"])] = (dims, vector)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            self.lookup_failures += 1
            self._quiet_until = time.monotonic() + _QUIET_AFTER_FAILURE
            log.warning(
                "content cache lookup failed (%s); embedding without it for %.0f s",
                type(exc).__name__,
                _QUIET_AFTER_FAILURE,
            )
            return {}
        return found

    async def store(self, entries: Sequence[tuple[bytes, int, bytes]]) -> None:
        unique = list({key: (key, dims, vector) for key, dims, vector in entries}.values())
        for start in range(0, len(unique), _BATCH):
            part = unique[start : start + _BATCH]
            await self._pool.execute(
                f"""INSERT INTO {TABLE} (key, dims, vector)
                    SELECT * FROM unnest($1::bytea[], $2::integer[], $3::bytea[])
                    ON CONFLICT (key) DO NOTHING""",
                [key for key, _, _ in part],
                [dims for _, dims, _ in part],
                [vector for _, _, vector in part],
            )

    async def close(self) -> None:
        await self._pool.close()


async def open_cache(dsn: str) -> PostgresEmbeddingCache:
    """The cache in the database at `dsn`; BackfillError when it cannot be used."""
    shown = dsn_without_password(dsn)
    try:
        pool = await asyncpg.create_pool(
            dsn,
            min_size=1,
            max_size=4,
            timeout=_CONNECT_TIMEOUT,
            command_timeout=_COMMAND_TIMEOUT,
        )
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        raise BackfillError(f"cannot connect to the cache database {shown}: {exc}") from None
    try:
        found = await pool.fetchval("SELECT to_regclass($1)::text", TABLE)
    except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
        await pool.close()
        raise BackfillError(f"cannot read the cache database {shown}: {exc}") from None
    if found is None:
        await pool.close()
        raise BackfillError(
            f"the cache database {shown} has no {TABLE} table: run `llm-fleet migrate` "
            "(with DATABASE_URL set to it), or pass --no-cache"
        )
    return PostgresEmbeddingCache(pool)
