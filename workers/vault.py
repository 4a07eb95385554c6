"""The credential vault: provider keys encrypted at rest in PostgreSQL, opened per call.

A row holds AES-256-GCM ciphertext of a small JSON map (`api_key` plus provider
fields such as `base_url`), under the vault-row key derived from the fleet key
(`workers.crypto`). The associated data names the row's id, provider and owner
tenant, so ciphertext copied onto another row, or a row relabelled for another
provider or tenant, does not open: it reads as damaged. Rows written before
(scheme 1: the fleet key itself, no tenant in the associated data) still open
until `creds rotate` rewrites them. Workers may keep the *encrypted* row in
memory for a few seconds (every job would otherwise cost a query); the plaintext
is decrypted per call and lives only in the returned `Secret`.

A credential belongs to its row's tenant: a job may open it only when the job's
tenant (the broker user that published it) owns it or the owner shared it with
that tenant (`credential_shares`). Any other job is told the id does not exist,
exactly as for an unknown id, so ids cannot be probed.

Whether a key is the right one for its key id is decided by that key id's
*key-check record* (table `vault_key_checks`), never by how many rows open: a
fixed, public text naming the key id, encrypted under associated data that names
this purpose. A row that does not open under a key whose record opens is
*damaged* (altered, or copied from another row), and is reported as such; one bad
row can no longer make a right key look wrong. A key id written before records
existed is judged by its rows until one opens, which writes its record.

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
from collections.abc import AsyncIterator, Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Literal

import asyncpg
import structlog
from cryptography.exceptions import InvalidTag

from contracts.errors import BadRequest, NotFound, ProviderUnavailable, Unauthorized
from providers.core.types import Secret
from workers.crypto import NONCE_BYTES, Keyring, Purpose

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

# How a row or key-check record was written (migration 0004's `scheme` column).
LEGACY_SCHEME = 1  # under the fleet key itself; row AAD without the tenant
SCHEME = 2  # under the key derived for the purpose; row AAD names the tenant

_SHARED_WITH = (
    "coalesce((SELECT array_agg(s.tenant ORDER BY s.tenant) FROM credential_shares s"
    " WHERE s.credential_id = credentials.id), '{}') AS shared_with"
)
_COLUMNS = (
    "id, tenant, provider, name, key_id, scheme, created_at, updated_at, revoked_at, "
    + _SHARED_WITH
)
SEALED_COLUMNS = "id, tenant, provider, key_id, scheme, nonce, ciphertext, revoked_at"
# The unique index behind CredentialExists; any other unique violation is not a name clash.
_LIVE_NAME_INDEX = "credentials_live_name"
# Rows tried when a key id has no check record yet and a key must be proven before it
# encrypts (`creds add`, `creds rotate`, `migrate`): a wrong key opens none of them,
# and a right one is refused only if every one of them is damaged.
_PROOF_SAMPLE = 25


class CredentialExists(ValueError):
    """A live credential with this tenant, provider and name already exists."""


class RowSealedShut(Unauthorized):
    """A row's ciphertext does not open under the key its key id names."""


class RowDamaged(Unauthorized):
    """A row that cannot be opened although its key is proven right: the row is damaged.

    `unauthorized`, like a revoked credential, because the caller's next step is the
    same: this credential id cannot work on any worker or on any retry, and the key
    must be stored again under a new id. `internal` would say the fleet is broken and
    invite a retry later, yet every other credential works and the worker is fine.
    """


class WrongKey(Unauthorized):
    """The key configured for a key id is not the one its rows were written with."""

    def __init__(self, kid: str, evidence: str) -> None:
        super().__init__(
            f"key id {kid!r}: the key INTEGRATION_CRYPTO_KEY(S) gives for it does not open "
            f"{evidence}: it is the wrong key"
        )
        self.kid = kid


def row_aad(credential_id: str, provider: str, tenant: str) -> bytes:
    """Associated data binding a ciphertext to exactly one row and its owner."""
    return json.dumps(
        ["llm-fleet:vault", SCHEME, credential_id, provider, tenant], separators=(",", ":")
    ).encode()


def legacy_row_aad(credential_id: str, provider: str) -> bytes:
    """A scheme-1 row's associated data: id and provider only."""
    return f"llm-fleet:vault:v1:{credential_id}:{provider}".encode()


def key_check_aad(kid: str) -> bytes:
    """Associated data of a key-check record: a purpose no credential row's AAD can name."""
    return f"llm-fleet:key-check:v1:{kid}".encode()


def key_check_text(kid: str) -> bytes:
    """The record's plaintext: public, fixed, and bound to its key id."""
    return f"llm-fleet key check v1: this key is key id {kid}".encode()


@dataclass(frozen=True, slots=True)
class KeyCheck:
    """A key id's check record: proof of which key wrote it, and nothing secret."""

    key_id: str
    nonce: bytes
    ciphertext: bytes
    # Scheme 1 records were written with the fleet key itself; new ones with the key
    # derived for key checks. Either proves the fleet key (derivation is fixed).
    scheme: int = SCHEME

    @classmethod
    def make(cls, keyring: Keyring, kid: str) -> KeyCheck:
        nonce, ct = keyring.encrypt_under(kid, key_check_text(kid), key_check_aad(kid), "check")
        return cls(kid, nonce, ct)

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> KeyCheck:
        return cls(r["key_id"], bytes(r["nonce"]), bytes(r["ciphertext"]), int(r["scheme"]))

    def opens_with(self, keyring: Keyring) -> bool:
        if self.key_id not in keyring.kids or self.scheme not in (LEGACY_SCHEME, SCHEME):
            return False
        try:
            text = keyring.decrypt(
                self.key_id,
                self.nonce,
                self.ciphertext,
                key_check_aad(self.key_id),
                "legacy" if self.scheme == LEGACY_SCHEME else "check",
            )
        except (InvalidTag, ValueError):
            return False
        return text == key_check_text(self.key_id)


async def load_key_checks(conn: asyncpg.Connection) -> dict[str, KeyCheck] | None:
    """Every key-check record; None when the table does not exist yet (migration 0002)."""
    if await conn.fetchval("SELECT to_regclass('vault_key_checks')") is None:
        return None
    rows = await conn.fetch("SELECT key_id, nonce, ciphertext, scheme FROM vault_key_checks")
    return {r["key_id"]: KeyCheck.from_record(r) for r in rows}


async def store_key_check(conn: asyncpg.Connection, keyring: Keyring, kid: str) -> bool:
    """Write `kid`'s record unless one exists; True when the stored one opens with our key.

    Callers prove the key first (a row opened with it, or it is about to encrypt the
    first row under its key id). Two processes with different keys under one key id
    race on the primary key; the loser finds a record it cannot open and is told so.
    """
    check = KeyCheck.make(keyring, kid)
    await conn.execute(
        "INSERT INTO vault_key_checks (key_id, nonce, ciphertext, scheme) VALUES ($1, $2, $3, $4)"
        " ON CONFLICT (key_id) DO NOTHING",
        kid,
        check.nonce,
        check.ciphertext,
        check.scheme,
    )
    r = await conn.fetchrow(
        "SELECT key_id, nonce, ciphertext, scheme FROM vault_key_checks WHERE key_id = $1", kid
    )
    return r is not None and KeyCheck.from_record(r).opens_with(keyring)


def parse_id(credential_id: str) -> str | None:
    """The canonical form of a uuid, or None when the text is not one."""
    try:
        return str(uuid.UUID(credential_id))
    except (ValueError, AttributeError, TypeError):
        return None


@dataclass(frozen=True, slots=True)
class SealedRow:
    """What is needed to open a credential, and who may: never the plaintext."""

    id: str
    tenant: str  # the owner
    provider: str
    key_id: str
    nonce: bytes
    ciphertext: bytes
    revoked: bool
    scheme: int = SCHEME
    shared_with: frozenset[str] = frozenset()

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> SealedRow:
        return cls(
            id=str(r["id"]),
            tenant=r["tenant"],
            provider=r["provider"],
            key_id=r["key_id"],
            nonce=bytes(r["nonce"]),
            ciphertext=bytes(r["ciphertext"]),
            revoked=r["revoked_at"] is not None,
            scheme=int(r["scheme"]),
            shared_with=frozenset(r.get("shared_with") or ()),
        )

    def usable_by(self, tenant: str) -> bool:
        """The owner's jobs, and those of tenants it was shared with."""
        return bool(tenant) and (tenant == self.tenant or tenant in self.shared_with)

    def aad(self) -> bytes:
        if self.scheme == LEGACY_SCHEME:
            return legacy_row_aad(self.id, self.provider)
        return row_aad(self.id, self.provider, self.tenant)


@dataclass(frozen=True, slots=True)
class CredentialInfo:
    """A credential's metadata, safe to print."""

    id: str
    tenant: str
    provider: str
    name: str
    key_id: str
    scheme: int
    created_at: datetime
    updated_at: datetime
    revoked_at: datetime | None
    shared_with: tuple[str, ...]

    @classmethod
    def from_record(cls, r: Mapping[str, Any]) -> CredentialInfo:
        return cls(
            id=str(r["id"]),
            tenant=r["tenant"],
            provider=r["provider"],
            name=r["name"],
            key_id=r["key_id"],
            scheme=int(r["scheme"]),
            created_at=r["created_at"],
            updated_at=r["updated_at"],
            revoked_at=r["revoked_at"],
            shared_with=tuple(r["shared_with"]),
        )


def encrypt_fields(
    keyring: Keyring, credential_id: str, provider: str, tenant: str, fields: Mapping[str, str]
) -> tuple[str, bytes, bytes]:
    """(key id, nonce, ciphertext) of the fields, bound to this row and owner (scheme 2)."""
    plaintext = json.dumps(dict(fields), separators=(",", ":"), sort_keys=True).encode()
    return keyring.encrypt(plaintext, row_aad(credential_id, provider, tenant))


def reencrypt_row(keyring: Keyring, row: SealedRow) -> tuple[str, bytes, bytes]:
    """The row's plaintext as a scheme-2 row under the active key (for rotation and the
    upgrade from scheme 1); the bytes never leave here."""
    return keyring.encrypt(_decrypt(keyring, row), row_aad(row.id, row.provider, row.tenant))


def decrypt_fields(keyring: Keyring, row: SealedRow) -> dict[str, str]:
    """Open one row. Errors say which row and key id, never anything of the contents."""
    plaintext = _decrypt(keyring, row)
    try:
        fields = json.loads(plaintext)
    except ValueError:
        fields = None
    if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
        # The tag verified, so the key is right and the row itself is wrong.
        raise RowDamaged(
            f"credential {row.id} is damaged: it decrypts but does not hold a field map"
        )
    return fields


def decrypt_row(keyring: Keyring, row: SealedRow) -> Secret:
    return Secret(decrypt_fields(keyring, row))


RowProbe = Literal["ok", "no_key", "sealed_shut", "damaged"]


def probe_row(keyring: Keyring, row: SealedRow) -> RowProbe:
    """How a row opens, without keeping anything of its contents."""
    try:
        decrypt_row(keyring, row)
    except RowSealedShut:
        return "sealed_shut"
    except RowDamaged:
        return "damaged"
    except Unauthorized:
        return "no_key"
    return "ok"


@dataclass(slots=True)
class KeyVerdicts:
    """What a set of rows and the check records say about each key id."""

    right: dict[str, str] = field(default_factory=dict)  # kid -> "check record" | "rows"
    wrong: dict[str, str] = field(default_factory=dict)  # kid -> what it failed to open
    missing: dict[str, int] = field(default_factory=dict)  # kid not held -> rows under it
    damaged: dict[str, str] = field(default_factory=dict)  # row id -> kid
    wrong_key_rows: dict[str, str] = field(default_factory=dict)  # row id -> kid
    to_record: list[str] = field(default_factory=list)  # proven by rows, no record yet

    def row_state(self, row_id: str, kid: str) -> str:
        """A word for `creds list`: ok, damaged, wrong key or no key."""
        if row_id in self.damaged:
            return "damaged"
        if row_id in self.wrong_key_rows:
            return "wrong key"
        return "no key" if kid in self.missing else "ok"


class RowJudge:
    """Sorts rows, one at a time, into fine, damaged and under a wrong or missing key.

    A key id with a check record is right exactly when the record opens. One without
    (rows written before records existed) is right when any of its rows opens: AES-GCM
    opens nothing under a wrong key. Only the ids of rows that fail are kept.
    """

    def __init__(self, keyring: Keyring, checks: Mapping[str, KeyCheck]) -> None:
        self._keyring = keyring
        self._checks = checks
        self._rows: dict[str, int] = {}
        self._opened: set[str] = set()
        self._shut: dict[str, str] = {}  # row id -> kid: did not open
        self._damaged: dict[str, str] = {}  # row id -> kid: opened, contents wrong

    def add(self, row: SealedRow) -> None:
        self._rows[row.key_id] = self._rows.get(row.key_id, 0) + 1
        state = probe_row(self._keyring, row)
        if state in ("ok", "damaged"):
            self._opened.add(row.key_id)
        if state == "sealed_shut":
            self._shut[row.id] = row.key_id
        elif state == "damaged":
            self._damaged[row.id] = row.key_id

    def opened(self, kid: str) -> bool:
        return kid in self._opened

    def verdicts(self) -> KeyVerdicts:
        v = KeyVerdicts()
        for kid in sorted(self._keyring.kids | set(self._rows)):
            n = self._rows.get(kid, 0)
            check = self._checks.get(kid)
            if kid not in self._keyring.kids:
                v.missing[kid] = n
            elif check is not None:
                if check.opens_with(self._keyring):
                    v.right[kid] = "check record"
                else:
                    v.wrong[kid] = "its key-check record"
            elif kid in self._opened:
                v.right[kid] = "rows"
                v.to_record.append(kid)
            elif n:
                v.wrong[kid] = f"any of the {n} credential row(s) under it"
        for rid, kid in self._shut.items():
            if kid in v.right:
                v.damaged[rid] = kid
            elif kid in v.wrong:
                v.wrong_key_rows[rid] = kid
        v.damaged.update(self._damaged)
        return v


def _decrypt(keyring: Keyring, row: SealedRow) -> bytes:
    if row.key_id not in keyring.kids:
        raise Unauthorized(
            f"credential {row.id} is encrypted under key id {row.key_id!r}, "
            "which the configured INTEGRATION_CRYPTO_KEY(S) does not provide"
        )
    purpose: Purpose = "legacy" if row.scheme == LEGACY_SCHEME else "row"
    try:
        if row.scheme not in (LEGACY_SCHEME, SCHEME):
            raise ValueError(f"unknown scheme {row.scheme}")
        return keyring.decrypt(row.key_id, row.nonce, row.ciphertext, row.aad(), purpose)
    except (InvalidTag, ValueError):
        raise RowSealedShut(
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
        # Key ids whose key this process has proven right (check record or a row that
        # opened): a row that will not open under one of them is damaged.
        self._right_kids: set[str] = set()

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
        except (asyncpg.UndefinedTableError, asyncpg.UndefinedColumnError) as exc:
            # The message names the relation or column ("credential_shares", "scheme"), no data.
            raise ProviderUnavailable(
                f"credential store schema is incomplete ({exc.args[0] if exc.args else exc}): "
                "run `llm-fleet migrate`"
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

    async def open(self, credential_id: str, provider: str, tenant: str) -> Secret:
        """Decrypt a stored credential for one call of a job of `tenant`.

        (The `StoredCredentials` Protocol.) A credential `tenant` neither owns nor was
        given is refused exactly like an unknown id, before anything else about it
        (revoked, provider, damaged) can show.
        """
        keyring = self._require_keyring()
        cid = parse_id(credential_id)
        if cid is None:
            raise NotFound("credential id is not a uuid")
        cached = self._cache.get(cid)
        if cached is not None and cached.usable_by(tenant):
            try:
                return self._open_row(keyring, cached, provider)
            except Unauthorized:
                self._cache.drop(cid)  # revoked or re-encrypted since: ask the database
        row = await self.sealed_row(cid)
        if row is None or not row.usable_by(tenant):
            raise NotFound(
                f"credential {cid} does not exist for tenant {tenant!r} (no such id, or it "
                "is neither this tenant's nor shared with it)"
            )
        self._cache.put(row)
        try:
            return self._open_row(keyring, row, provider)
        except RowSealedShut:
            if not await self._key_is_right(row.key_id):
                raise  # cannot tell a damaged row from a wrong key: the message says both
            log.warning("vault_damaged_row", credential_id=row.id, key_id=row.key_id)
            raise RowDamaged(
                f"credential {row.id} is damaged: its stored row does not decrypt with key id "
                f"{row.key_id!r} although that key is the right one (it opens the key id's "
                "check record): the ciphertext was altered or copied from another row. "
                "Store the key again under a new credential and revoke this one"
            ) from None

    @staticmethod
    def _open_row(keyring: Keyring, row: SealedRow, provider: str) -> Secret:
        if row.revoked:
            raise Unauthorized(f"credential {row.id} was revoked")
        if row.provider != provider:
            raise BadRequest(
                f"credential {row.id} belongs to provider {row.provider!r}, not {provider!r}"
            )
        return decrypt_row(keyring, row)

    def note_right_kids(self, kids: Iterable[str]) -> None:
        """Key ids the start-up check proved right (see `workers.vault_keys.check_keys`)."""
        self._right_kids.update(kids)

    async def _key_is_right(self, kid: str) -> bool:
        """Whether this process's key for `kid` opens the kid's check record.

        Asked only when a row failed to open, so it costs nothing on the hot path. A
        store that is unreachable or not yet migrated only means we cannot tell.
        """
        keyring = self._require_keyring()
        if kid in self._right_kids:
            return True
        if kid not in keyring.kids:
            return False
        try:
            async with self.connection() as conn:
                checks = await load_key_checks(conn)
        except ProviderUnavailable:
            return False
        check = None if checks is None else checks.get(kid)
        if check is None or not check.opens_with(keyring):
            return False
        self._right_kids.add(kid)
        return True

    async def ensure_key_check(self, conn: asyncpg.Connection, kid: str) -> str:
        """Prove this process's key for `kid` before it writes under it; record it if new.

        Returns "checked" (its record opens), "recorded" (no record yet: a row under
        it opened, or it is the active key and nothing is stored under it, so this
        write is its first use) or "unused" (an inactive key with nothing under it:
        nothing proves it, and recording a mistyped key would lock the right one out).
        Raises `WrongKey` instead of writing anything under a wrong key.
        """
        keyring = self._require_keyring()
        if kid in self._right_kids:
            return "checked"
        r = await conn.fetchrow(
            "SELECT key_id, nonce, ciphertext, scheme FROM vault_key_checks WHERE key_id = $1", kid
        )
        if r is not None:
            if not KeyCheck.from_record(r).opens_with(keyring):
                raise WrongKey(kid, "its key-check record")
            self._right_kids.add(kid)
            return "checked"
        rows = await conn.fetch(
            f"SELECT {SEALED_COLUMNS} FROM credentials WHERE key_id = $1"
            " ORDER BY revoked_at IS NOT NULL, created_at DESC LIMIT $2",
            kid,
            _PROOF_SAMPLE,
        )
        judge = RowJudge(keyring, {})
        for rec in rows:
            judge.add(SealedRow.from_record(rec))
        if rows and not judge.opened(kid):
            raise WrongKey(kid, f"any of {len(rows)} credential row(s) under it")
        if not rows and kid != keyring.active_kid:
            return "unused"
        if not await store_key_check(conn, keyring, kid):
            raise WrongKey(kid, "the key-check record another process wrote for it")
        self._right_kids.add(kid)
        log.info("vault_key_check_recorded", key_id=kid, proven_by="rows" if rows else "first use")
        return "recorded"

    async def judge_rows(self, ids: Iterable[str]) -> KeyVerdicts:
        """Which of these rows are damaged or under a wrong or missing key (for listings)."""
        keyring = self._require_keyring()
        async with self.connection() as conn:
            checks = await load_key_checks(conn)
            rows = await conn.fetch(
                f"SELECT {SEALED_COLUMNS} FROM credentials WHERE id = ANY($1::uuid[])",
                [uuid.UUID(i) for i in ids],
            )
        judge = RowJudge(keyring, checks or {})
        for rec in rows:
            judge.add(SealedRow.from_record(rec))
        return judge.verdicts()

    async def sealed_row(self, credential_id: str) -> SealedRow | None:
        """The encrypted row with the tenants it is shared with (one query)."""
        async with self.connection() as conn:
            r = await conn.fetchrow(
                f"SELECT {SEALED_COLUMNS}, {_SHARED_WITH} FROM credentials WHERE id = $1",
                uuid.UUID(credential_id),
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
        keyring = self._require_keyring()
        try:
            async with self.connection() as conn:
                # Never write a row under a key its key id's record says is wrong.
                await self.ensure_key_check(conn, keyring.active_kid)
                kid, nonce, ct = encrypt_fields(keyring, cid, provider, tenant, fields)
                assert len(nonce) == NONCE_BYTES
                await conn.execute(
                    "INSERT INTO credentials"
                    " (id, tenant, provider, name, key_id, nonce, ciphertext, scheme)"
                    " VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
                    uuid.UUID(cid),
                    tenant,
                    provider,
                    name,
                    kid,
                    nonce,
                    ct,
                    SCHEME,
                )
        except asyncpg.UniqueViolationError as exc:
            if exc.constraint_name != _LIVE_NAME_INDEX:
                raise  # (key_id, nonce): a repeated random 96-bit nonce, never a name clash
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
        """Metadata only: the ciphertext is not even selected.

        `tenant` keeps the credentials that tenant's jobs may use: its own and those
        shared with it.
        """
        async with self.connection() as conn:
            rows = await conn.fetch(
                f"SELECT {_COLUMNS} FROM credentials"
                " WHERE ($1::text IS NULL OR provider = $1)"
                " AND ($2::text IS NULL OR tenant = $2 OR EXISTS (SELECT 1 FROM credential_shares s"
                "  WHERE s.credential_id = credentials.id AND s.tenant = $2))"
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

    async def share(self, credential_id: str, tenant: str) -> bool:
        """Let `tenant`'s jobs use the credential; False when they already could.

        Unknown ids raise `NotFound`; a revoked credential or the owner itself, ValueError.
        """
        cid = parse_id(credential_id)
        if cid is None:
            raise NotFound("credential id is not a uuid")
        if not tenant.strip():
            raise ValueError("tenant must not be empty")
        async with self.connection() as conn, conn.transaction():
            row = await conn.fetchrow(
                "SELECT tenant, revoked_at FROM credentials WHERE id = $1 FOR SHARE",
                uuid.UUID(cid),
            )
            if row is None:
                raise NotFound(f"credential {cid} does not exist")
            if row["revoked_at"] is not None:
                raise ValueError(f"credential {cid} was revoked: there is nothing to share")
            if row["tenant"] == tenant:
                raise ValueError(f"credential {cid} belongs to {tenant!r} already")
            added = await conn.fetchval(
                "INSERT INTO credential_shares (credential_id, tenant) VALUES ($1, $2)"
                " ON CONFLICT DO NOTHING RETURNING true",
                uuid.UUID(cid),
                tenant,
            )
        if added:
            log.info("credential_shared", credential_id=cid, tenant=tenant)
        return bool(added)

    async def unshare(self, credential_id: str, tenant: str) -> bool:
        """Stop `tenant`'s jobs using the credential; False when it was not shared with it.

        Like a revocation, workers that miss the broadcast keep the old share for at
        most their row cache's TTL.
        """
        cid = parse_id(credential_id)
        if cid is None:
            raise NotFound("credential id is not a uuid")
        async with self.connection() as conn:
            removed = await conn.fetchval(
                "DELETE FROM credential_shares WHERE credential_id = $1 AND tenant = $2"
                " RETURNING true",
                uuid.UUID(cid),
                tenant,
            )
        self._cache.drop(cid)
        if removed:
            log.info("credential_unshared", credential_id=cid, tenant=tenant)
        return bool(removed)

    async def legacy_rows(self) -> int:
        """Rows still written the scheme-1 way (`creds rotate` upgrades them)."""
        async with self.connection() as conn:
            return int(
                await conn.fetchval(
                    "SELECT count(*) FROM credentials WHERE scheme = $1", LEGACY_SCHEME
                )
            )

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
        try:
            async with self.connection() as conn:
                status = await conn.fetchval(
                    "WITH target AS"
                    " (SELECT id, revoked_at FROM credentials WHERE id = $1 FOR UPDATE),"
                    " done AS (UPDATE credentials c SET revoked_at = now(), updated_at = now()"
                    "   FROM target WHERE c.id = target.id AND target.revoked_at IS NULL"
                    "   RETURNING c.id)"
                    " SELECT CASE WHEN EXISTS (SELECT 1 FROM done) THEN 'revoked'"
                    "   WHEN EXISTS (SELECT 1 FROM target) THEN 'already' ELSE 'missing' END",
                    uuid.UUID(cid),
                )
        except asyncpg.CheckViolationError as exc:
            # A row from before migration 0003 that breaks one of its constraints: any
            # change to it is refused until it is fixed (`llm-fleet migrate` lists it).
            raise ValueError(
                f"credential {cid} cannot be revoked: its row breaks {exc.constraint_name} "
                "(see `llm-fleet migrate`); fix or delete the row first"
            ) from None
        self._cache.drop(cid)
        if status == "missing":
            raise NotFound(f"credential {cid} does not exist")
        if status == "revoked":
            log.info("credential_revoked", credential_id=cid)
        return bool(status == "revoked")
