"""The credential vault: provider keys encrypted at rest in PostgreSQL, opened per call.

A row holds AES-256-GCM ciphertext of a small JSON map (`api_key` plus provider
fields such as `base_url`). The associated data names the row's id and provider,
so ciphertext copied onto another row, or a row relabelled for another provider,
does not open. Workers may keep the *encrypted* row in memory for a few seconds
(every job would otherwise cost a query); the plaintext is decrypted per call
and lives only in the returned `Secret`.

Whenever PostgreSQL cannot be reached the vault raises `ProviderUnavailable`,
which is retryable: the executor waits and tries again within the job's deadline.
"""

from __future__ import annotations

import asyncio
import builtins
import contextlib
import json
import time
import uuid
from collections import OrderedDict
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg
import structlog
from cryptography.exceptions import InvalidTag

from contracts.errors import BadRequest, NotFound, ProviderUnavailable, Unauthorized
from providers.core.types import Secret
from workers.crypto import NONCE_BYTES, Keyring

log = structlog.get_logger("llm_fleet.vault")

# Errors that mean "the database is not there right now", as opposed to a bug.
# InterfaceError covers a pool closed under us; OSError covers refused/reset sockets.
UNAVAILABLE_ERRORS: tuple[type[BaseException], ...] = (
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,  # admin shutdown, "the database system is starting up"
    asyncpg.InsufficientResourcesError,  # too many connections
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)

_COLUMNS = "id, tenant, provider, name, key_id, created_at, updated_at, revoked_at"
_SEALED_COLUMNS = "id, provider, key_id, nonce, ciphertext, revoked_at"


class CredentialExists(ValueError):
    """A live credential with this tenant, provider and name already exists."""


def row_aad(credential_id: str, provider: str) -> bytes:
    """Associated data binding a ciphertext to exactly one row."""
    return f"llm-fleet:vault:v1:{credential_id}:{provider}".encode()


def parse_id(credential_id: str) -> str | None:
    """The canonical form of a uuid, or None when the text is not one."""
    try:
        return str(uuid.UUID(credential_id))
    except (ValueError, AttributeError, TypeError):
        return None


@dataclass(frozen=True, slots=True)
class SealedRow:
    """What is needed to open a credential: never the plaintext."""

    id: str
    provider: str
    key_id: str
    nonce: bytes
    ciphertext: bytes
    revoked: bool

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> SealedRow:
        return cls(
            id=str(r["id"]),
            provider=r["provider"],
            key_id=r["key_id"],
            nonce=bytes(r["nonce"]),
            ciphertext=bytes(r["ciphertext"]),
            revoked=r["revoked_at"] is not None,
        )


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    """A credential's metadata, safe to print."""

    id: str
    tenant: str
    provider: str
    name: str
    key_id: str
    created_at: datetime
    updated_at: datetime
    revoked_at: datetime | None

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> CredentialInfo:
        return cls(
            id=str(r["id"]),
            tenant=r["tenant"],
            provider=r["provider"],
            name=r["name"],
            key_id=r["key_id"],
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            revoked_at=r["revoked_at"],
        )


def encrypt_fields(
    keyring: Keyring, credential_id: str, provider: str, fields: Mapping[str, str]
) -> tuple[str, bytes, bytes]:
    """(key id, nonce, ciphertext) of the fields, bound to this row."""
    plaintext = json.dumps(dict(fields), separators=(",", ":"), sort_keys=True).encode()
    return keyring.encrypt(plaintext, row_aad(credential_id, provider))


def reencrypt_row(keyring: Keyring, row: SealedRow) -> tuple[str, bytes, bytes]:
    """The row's plaintext under the active key (for rotation); the bytes never leave here."""
    return keyring.encrypt(_decrypt(keyring, row), row_aad(row.id, row.provider))


def decrypt_row(keyring: Keyring, row: SealedRow) -> Secret:
    """Open one row. Errors say which row and key id, never anything of the contents."""
    plaintext = _decrypt(keyring, row)
    try:
        fields = json.loads(plaintext)
    except ValueError:
        fields = None
    if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
        raise Unauthorized(f"credential {row.id} decrypts but does not hold a field map")
    return Secret(fields)


def _decrypt(keyring: Keyring, row: SealedRow) -> bytes:
    if row.key_id not in keyring.kids:
        raise Unauthorized(
            f"credential {row.id} is encrypted under key id {row.key_id!r}, "
            "which the configured INTEGRATION_CRYPTO_KEY(S) does not provide"
        )
    try:
        return keyring.decrypt(row.key_id, row.nonce, row.ciphertext, row_aad(row.id, row.provider))
    except (InvalidTag, ValueError):
        raise Unauthorized(
            f"credential {row.id} does not decrypt with key id {row.key_id!r}: the stored "
            "ciphertext was altered or moved from another row, or the key is wrong"
        ) from None


class _RowCache:
    """A small TTL + LRU map of encrypted rows (id -> row)."""

    def __init__(self, ttl: float, size: int) -> None:
        self._ttl = ttl
        self._size = size
        self._rows: OrderedDict[str, tuple[float, SealedRow]] = OrderedDict()

    def get(self, credential_id: str) -> SealedRow | None:
        hit = self._rows.get(credential_id)
        if hit is None:
            return None
        if hit[0] < time.monotonic():
            del self._rows[credential_id]
            return None
        self._rows.move_to_end(credential_id)
        return hit[1]

    def put(self, row: SealedRow) -> None:
        if self._ttl <= 0 or self._size <= 0:
            return
        self._rows[row.id] = (time.monotonic() + self._ttl, row)
        self._rows.move_to_end(row.id)
        while len(self._rows) > self._size:
            self._rows.popitem(last=False)

    def drop(self, credential_id: str) -> None:
        self._rows.pop(credential_id, None)


class Vault:
    """Stored credentials (implements `workers.credentials.StoredCredentials`).

    The pool connects lazily (`min_size=0`), so building a Vault never fails and a
    worker can start while PostgreSQL is down; a connection that died with a
    server restart is discarded by the pool and replaced on the next acquire.
    """

    def __init__(
        self,
        database_url: str,
        keyring: Keyring | None = None,
        *,
        cache_ttl: float = 10.0,
        cache_size: int = 4096,
        pool_size: int = 10,
        connect_timeout: float = 5.0,
        command_timeout: float = 5.0,
    ) -> None:
        self._url = database_url
        self.keyring = keyring
        self._cache = _RowCache(cache_ttl, cache_size)
        self._pool_size = pool_size
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()

    # -- connections ---------------------------------------------------------

    async def _get_pool(self) -> asyncpg.Pool:
        async with self._pool_lock:
            if self._pool is None:
                self._pool = await asyncpg.create_pool(
                    self._url,
                    min_size=0,
                    max_size=self._pool_size,
                    timeout=self._connect_timeout,
                    command_timeout=self._command_timeout,
                    max_inactive_connection_lifetime=60.0,
                )
            return self._pool

    @contextlib.asynccontextmanager
    async def connection(self) -> AsyncIterator[asyncpg.Connection]:
        """A pooled connection; unreachable-database errors become `ProviderUnavailable`."""
        try:
            pool = await self._get_pool()
            async with pool.acquire(timeout=self._connect_timeout + self._command_timeout) as conn:
                yield conn
        except asyncpg.InvalidCatalogNameError:
            raise ProviderUnavailable(
                "credential store database does not exist: run `llm-fleet migrate`"
            ) from None
        except UNAVAILABLE_ERRORS as exc:
            raise ProviderUnavailable(
                f"credential store unreachable ({type(exc).__name__})"
            ) from None
        except asyncpg.UndefinedTableError:
            raise ProviderUnavailable(
                "credential store has no credentials table: run `llm-fleet migrate`"
            ) from None

    async def ping(self) -> bool:
        """Readiness: can we run a query right now?"""
        try:
            async with self.connection() as conn:
                await conn.fetchval("SELECT 1", timeout=2.0)
        except ProviderUnavailable:
            return False
        return True

    async def close(self) -> None:
        pool, self._pool = self._pool, None
        if pool is None:
            return
        try:
            await asyncio.wait_for(pool.close(), 5.0)
        except TimeoutError:
            pool.terminate()

    def _require_keyring(self) -> Keyring:
        if self.keyring is None:
            raise RuntimeError("this Vault was built without a keyring")
        return self.keyring

    # -- the worker's path ---------------------------------------------------

    async def open(self, credential_id: str, provider: str) -> Secret:
        """Decrypt a stored credential for one call (the `StoredCredentials` Protocol)."""
        keyring = self._require_keyring()
        cid = parse_id(credential_id)
        if cid is None:
            raise NotFound("credential id is not a uuid")
        cached = self._cache.get(cid)
        if cached is not None:
            try:
                return self._open_row(keyring, cached, provider)
            except Unauthorized:
                self._cache.drop(cid)  # revoked or re-encrypted since: ask the database
        row = await self.sealed_row(cid)
        if row is None:
            raise NotFound(f"credential {cid} does not exist")
        self._cache.put(row)
        return self._open_row(keyring, row, provider)

    @staticmethod
    def _open_row(keyring: Keyring, row: SealedRow, provider: str) -> Secret:
        if row.revoked:
            raise Unauthorized(f"credential {row.id} was revoked")
        if row.provider != provider:
            raise BadRequest(
                f"credential {row.id} belongs to provider {row.provider!r}, not {provider!r}"
            )
        return decrypt_row(keyring, row)

    async def sealed_row(self, credential_id: str) -> SealedRow | None:
        async with self.connection() as conn:
            r = await conn.fetchrow(
                f"SELECT {_SEALED_COLUMNS} FROM credentials WHERE id = $1", uuid.UUID(credential_id)
            )
        return None if r is None else SealedRow.from_record(r)

    # -- administration ------------------------------------------------------

    async def add(self, tenant: str, provider: str, name: str, fields: Mapping[str, str]) -> str:
        """Encrypt and store a credential; return its new id."""
        for label, value in (("tenant", tenant), ("provider", provider), ("name", name)):
            if not value.strip():
                raise ValueError(f"{label} must not be empty")
        if not any(fields.values()):
            raise ValueError("a credential needs at least one non-empty field (e.g. api_key)")
        cid = str(uuid.uuid4())
        kid, nonce, ct = encrypt_fields(self._require_keyring(), cid, provider, fields)
        assert len(nonce) == NONCE_BYTES
        try:
            async with self.connection() as conn:
                await conn.execute(
                    "INSERT INTO credentials"
                    " (id, tenant, provider, name, key_id, nonce, ciphertext)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7)",
                    uuid.UUID(cid),
                    tenant,
                    provider,
                    name,
                    kid,
                    nonce,
                    ct,
                )
        except asyncpg.UniqueViolationError:
            raise CredentialExists(
                f"tenant {tenant!r} already has a live {provider} credential named {name!r}; "
                "revoke it first or choose another name"
            ) from None
        log.info(
            "credential_added", credential_id=cid, tenant=tenant, provider=provider, key_id=kid
        )
        return cid

    async def list(
        self,
        *,
        provider: str | None = None,
        tenant: str | None = None,
        include_revoked: bool = False,
    ) -> builtins.list[CredentialInfo]:
        """Metadata only: the ciphertext is not even selected."""
        async with self.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM credentials"
                " WHERE ($1::text IS NULL OR provider = $1) AND ($2::text IS NULL OR tenant = $2)"
                " AND ($3 OR revoked_at IS NULL)"
                " ORDER BY tenant, provider, name, created_at",
                provider,
                tenant,
                include_revoked,
            )
        return [CredentialInfo.from_record(r) for r in rows]

    async def get_row(self, credential_id: str) -> CredentialInfo | None:
        cid = parse_id(credential_id)
        if cid is None:
            return None
        async with self.connection() as conn:
            r = await conn.fetchrow(
                f"SELECT {_COLUMNS} FROM credentials WHERE id = $1", uuid.UUID(cid)
            )
        return None if r is None else CredentialInfo.from_record(r)

    def forget(self, credential_id: str) -> None:
        """Drop a cached row (another process revoked or rotated it)."""
        cid = parse_id(credential_id)
        if cid is not None:
            self._cache.drop(cid)

    async def revoke(self, credential_id: str) -> bool:
        """Revoke; False when it already was. Unknown ids raise `NotFound`.

        Workers drop their cached copy when `creds revoke` broadcasts it; one that
        misses the broadcast still holds the encrypted row for at most the cache TTL.
        """
        cid = parse_id(credential_id)
        if cid is None:
            raise NotFound("credential id is not a uuid")
        async with self.connection() as conn:
            status = await conn.fetchval(
                "WITH target AS (SELECT id, revoked_at FROM credentials WHERE id = $1 FOR UPDATE),"
                " done AS (UPDATE credentials c SET revoked_at = now(), updated_at = now()"
                "   FROM target WHERE c.id = target.id AND target.revoked_at IS NULL"
                "   RETURNING c.id)"
                " SELECT CASE WHEN EXISTS (SELECT 1 FROM done) THEN 'revoked'"
                "   WHEN EXISTS (SELECT 1 FROM target) THEN 'already' ELSE 'missing' END",
                uuid.UUID(cid),
            )
        self._cache.drop(cid)
        if status == "missing":
            raise NotFound(f"credential {cid} does not exist")
        if status == "revoked":
            log.info("credential_revoked", credential_id=cid)
        return bool(status == "revoked")
