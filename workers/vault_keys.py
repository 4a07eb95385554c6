"""Keys versus stored rows: the worker's start-up check, key rotation, and the
constraints of migration 0003 that existing rows may still break.

Rotation re-encrypts rows that are not under the active key, or still written
the scheme-1 way (the fleet key itself, no tenant in the associated data), as
scheme-2 rows under the active key, a batch per transaction. `FOR UPDATE SKIP
LOCKED` lets it run beside live workers (which only read, and open both schemes)
and beside another rotation; each row changes in a single UPDATE that only
applies to the exact version read (compare-and-set), so a reader sees one
complete version or the other. Stopping it at any point loses nothing: the next
run picks up the rows still to do. Key-check records written with the fleet key
itself are rewritten under the key-check key the same way.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

import asyncpg
import structlog

from contracts.errors import Unauthorized
from workers.crypto import Keyring
from workers.vault import (
    LEGACY_SCHEME,
    SCHEME,
    SEALED_COLUMNS,
    KeyCheck,
    RowJudge,
    SealedRow,
    Vault,
    WrongKey,
    load_key_checks,
    reencrypt_row,
    store_key_check,
)

log = structlog.get_logger("llm_fleet.vault")

_SCAN_BATCH = 1000
# Rows rotation moves: under another key than the active one ($1), or scheme 1.
_TO_DO = f"(key_id <> $1 OR scheme = {LEGACY_SCHEME})"
# Damaged ids named in one log line; the count is always whole.
MAX_IDS_LOGGED = 100


@dataclass(slots=True)
class KeyCheckReport:
    """The start-up check's findings; `problems` non-empty means: do not start."""

    problems: list[str] = field(default_factory=list)
    right: dict[str, str] = field(default_factory=dict)  # kid -> "check record" | "rows"
    damaged: dict[str, str] = field(default_factory=dict)  # credential id -> kid
    recorded: list[str] = field(default_factory=list)  # check records written by this check
    scanned: int = 0
    legacy: int = 0  # rows, revoked ones too, still to move to scheme 2 (`creds rotate`)
    has_check_table: bool = True


async def check_keys(vault: Vault, keyring: Keyring) -> KeyCheckReport:
    """Judge every key id against this keyring, and every live row under a right key.

    A key id is wrong when the keyring's key does not open its check record; without
    a record (rows from before records existed), when none of its live rows opens,
    and the first row that does open writes the record. Live rows under a key id
    the keyring lacks are a problem as before. Rows that do not open under a right
    key are damaged: reported, never a reason to refuse. Every live row is opened
    once (AES-GCM over a few hundred bytes), so damage is found at start-up, not by
    the first job that names it.
    """
    report = KeyCheckReport()
    async with vault.connection() as conn:
        checks = await load_key_checks(conn)
        report.has_check_table = checks is not None
        judge = RowJudge(keyring, checks or {})
        after: uuid.UUID | None = None
        while True:
            batch = await conn.fetch(
                f"SELECT {SEALED_COLUMNS} FROM credentials"
                " WHERE revoked_at IS NULL AND ($1::uuid IS NULL OR id > $1)"
                " ORDER BY id LIMIT $2",
                after,
                _SCAN_BATCH,
            )
            for rec in batch:
                judge.add(SealedRow.from_record(rec))
            report.scanned += len(batch)
            if len(batch) < _SCAN_BATCH:
                break
            after = batch[-1]["id"]
        verdicts = judge.verdicts()
        report.legacy = int(
            await conn.fetchval("SELECT count(*) FROM credentials WHERE scheme = $1", LEGACY_SCHEME)
        )
        if checks is not None:  # before migration 0002 there is nowhere to record
            for kid in verdicts.to_record:
                if await store_key_check(conn, keyring, kid):
                    report.recorded.append(kid)
                else:
                    # Another process recorded a different key for this id a moment ago,
                    # yet our key opened rows under it: the record is the wrong one.
                    report.problems.append(
                        f"key id {kid!r}: its rows open with this worker's key but the "
                        "key-check record just written for it does not; remove that record "
                        "(DELETE FROM vault_key_checks WHERE key_id = ...) and start again"
                    )
    for kid, n in verdicts.missing.items():
        report.problems.append(
            f"{n} credential(s) are encrypted under key id {kid!r} which "
            f"INTEGRATION_CRYPTO_KEY(S) does not provide (this worker holds: "
            f"{', '.join(sorted(keyring.kids))})"
        )
    for kid, evidence in verdicts.wrong.items():
        if evidence == "its key-check record":
            report.problems.append(str(WrongKey(kid, evidence)))
        else:
            report.problems.append(
                f"credentials under key id {kid!r} do not decrypt with the key "
                f"INTEGRATION_CRYPTO_KEY(S) gives for {kid!r} (none of its live rows opens "
                "and it has no key-check record yet): it is the wrong key"
            )
    report.right = verdicts.right
    report.damaged = verdicts.damaged
    vault.note_right_kids(verdicts.right)
    if report.legacy and not report.problems:
        log.warning(
            "vault_legacy_rows",
            count=report.legacy,
            hint="these credentials are encrypted under the fleet key itself, without their "
            "tenant in the associated data; they keep working. Run `llm-fleet creds rotate` "
            "(safe beside running workers, resumable) to move them to the vault-row key",
        )
    return report


async def record_keys(vault: Vault, keyring: Keyring) -> dict[str, str] | None:
    """Prove and record each key of the keyring (`llm-fleet migrate`); kid -> outcome.

    Outcomes are those of `Vault.ensure_key_check`; a wrong key raises `WrongKey`.
    None when the schema has no `vault_key_checks` table (another migrations directory).
    """
    outcomes: dict[str, str] = {}
    async with vault.connection() as conn:
        if await conn.fetchval("SELECT to_regclass('vault_key_checks')") is None:
            return None
        for kid in sorted(keyring.kids, key=lambda k: (k != keyring.active_kid, k)):
            outcomes[kid] = await vault.ensure_key_check(conn, kid)
    return outcomes


@dataclass(slots=True)
class RotationReport:
    active_kid: str
    rotated: int = 0
    upgraded: int = 0  # of `rotated`, rows moved from scheme 1
    checks_upgraded: list[str] = field(default_factory=list)  # key-check records rewritten
    batches: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)  # id -> reason (no contents)
    # Rows that do not open although their key is proven right (see workers.vault).
    damaged: dict[str, str] = field(default_factory=dict)  # id -> reason
    # Rows the database refused to change: they break a constraint of migration 0003.
    refused: dict[str, str] = field(default_factory=dict)  # id -> constraint
    remaining: int = 0  # rows still to do (another key or scheme 1), not counting the above
    opened_kids: set[str] = field(default_factory=set)

    def skipped(self) -> list[uuid.UUID]:
        return [uuid.UUID(i) for i in (*self.unreadable, *self.damaged, *self.refused)]


async def _rotate_batch(vault: Vault, keyring: Keyring, size: int, report: RotationReport) -> int:
    """Re-encrypt up to `size` rows in one transaction; return how many rows were looked at."""
    async with vault.connection() as conn, conn.transaction():
        rows = await conn.fetch(
            f"SELECT {SEALED_COLUMNS} FROM credentials"
            f" WHERE {_TO_DO} AND NOT (id = ANY($2::uuid[]))"
            " ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED",
            keyring.active_kid,
            report.skipped(),
            size,
        )
        for rec in rows:
            row = SealedRow.from_record(rec)
            try:
                kid, nonce, ct = reencrypt_row(keyring, row)
            except Unauthorized as exc:
                report.unreadable[row.id] = exc.message
                continue
            report.opened_kids.add(row.key_id)
            try:
                # A savepoint per row: one row that breaks a constraint of 0003 (still
                # NOT VALID for old rows, but checked on every change) must not undo
                # the rest of the batch.
                async with conn.transaction():
                    # Only the version read (and re-encrypted) is replaced: the row is
                    # locked, but the owner and provider are in the new associated data.
                    status = await conn.execute(
                        "UPDATE credentials SET key_id = $2, nonce = $3, ciphertext = $4,"
                        " scheme = $5, updated_at = now()"
                        " WHERE id = $1 AND key_id = $6 AND nonce = $7 AND scheme = $8"
                        " AND tenant = $9 AND provider = $10",
                        rec["id"],
                        kid,
                        nonce,
                        ct,
                        SCHEME,
                        row.key_id,
                        row.nonce,
                        row.scheme,
                        row.tenant,
                        row.provider,
                    )
            except asyncpg.CheckViolationError as exc:
                report.refused[row.id] = str(exc.constraint_name)
                continue
            if status != "UPDATE 1":
                continue  # changed since it was read: the next batch sees the new version
            report.rotated += 1
            if row.scheme == LEGACY_SCHEME:
                report.upgraded += 1
    return len(rows)


async def _upgrade_key_checks(vault: Vault, keyring: Keyring) -> list[str]:
    """Rewrite each scheme-1 key-check record that opens as a scheme-2 one; their key ids.

    A record that does not open is left alone (the key is wrong, or another
    process's): rotation refuses before anything is written under a wrong key.
    """
    done: list[str] = []
    async with vault.connection() as conn:
        rows = await conn.fetch(
            "SELECT key_id, nonce, ciphertext, scheme FROM vault_key_checks WHERE scheme = $1",
            LEGACY_SCHEME,
        )
        for r in rows:
            old = KeyCheck.from_record(r)
            if not old.opens_with(keyring):
                continue
            new = KeyCheck.make(keyring, old.key_id)
            status = await conn.execute(
                "UPDATE vault_key_checks SET nonce = $2, ciphertext = $3, scheme = $4"
                " WHERE key_id = $1 AND nonce = $5 AND scheme = $6",
                old.key_id,
                new.nonce,
                new.ciphertext,
                new.scheme,
                old.nonce,
                LEGACY_SCHEME,
            )
            if status == "UPDATE 1":
                done.append(old.key_id)
    return done


async def _sort_unreadable(vault: Vault, keyring: Keyring, report: RotationReport) -> None:
    """Move rows that failed under a key proven right from `unreadable` to `damaged`.

    Decided after the run, when every row that could prove its key has been tried,
    and record the check of any key a row proved (rotation is one of the moments a
    key not yet recorded gets its record).
    """
    async with vault.connection() as conn:
        checks = await load_key_checks(conn) or {}
        for kid in sorted(report.opened_kids - set(checks)):
            if kid in keyring.kids:
                await store_key_check(conn, keyring, kid)
    right = {kid for kid, c in checks.items() if c.opens_with(keyring)} | report.opened_kids
    kids = dict(await _kids_of(vault, list(report.unreadable)))
    for cid in list(report.unreadable):
        row_kid = kids.get(cid)
        if row_kid is None or row_kid not in keyring.kids:
            continue  # gone since, or under a key this keyring lacks: the reason stands
        if row_kid in right:
            report.damaged[cid] = (
                f"damaged: does not decrypt with key id {row_kid!r}, whose key is proven right"
            )
            del report.unreadable[cid]
        elif row_kid in checks:
            report.unreadable[cid] = str(WrongKey(row_kid, "its key-check record"))


async def _kids_of(vault: Vault, ids: list[str]) -> list[tuple[str, str]]:
    if not ids:
        return []
    async with vault.connection() as conn:
        rows = await conn.fetch(
            "SELECT id, key_id FROM credentials WHERE id = ANY($1::uuid[])",
            [uuid.UUID(i) for i in ids],
        )
    return [(str(r["id"]), str(r["key_id"])) for r in rows]


async def rotate(
    vault: Vault,
    keyring: Keyring,
    *,
    batch_size: int = 100,
    max_batches: int | None = None,
    on_batch: Callable[[RotationReport], None] | None = None,
) -> RotationReport:
    """Move every row (revoked ones too) under the active key; see the module docstring.

    Refuses (`WrongKey`) before touching anything when the active key does not open
    its key id's check record (or, with none yet, its rows).
    """
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    async with vault.connection() as conn:
        await vault.ensure_key_check(conn, keyring.active_kid)
    report = RotationReport(active_kid=keyring.active_kid)
    report.checks_upgraded = await _upgrade_key_checks(vault, keyring)
    while max_batches is None or report.batches < max_batches:
        seen = await _rotate_batch(vault, keyring, batch_size, report)
        if seen == 0:
            break
        report.batches += 1
        if on_batch is not None:
            on_batch(report)
    await _sort_unreadable(vault, keyring, report)
    async with vault.connection() as conn:
        report.remaining = int(
            await conn.fetchval(
                f"SELECT count(*) FROM credentials WHERE {_TO_DO} AND NOT (id = ANY($2::uuid[]))",
                keyring.active_kid,
                report.skipped(),
            )
        )
    return report


# -- constraints of migration 0003 -------------------------------------------------------


@dataclass(frozen=True, slots=True)
class ConstraintState:
    name: str
    validated: bool  # True: in force for every row from now on
    row_ids: tuple[str, ...]  # rows that break it (pending only; may be empty after a race)


async def finish_constraints(vault: Vault) -> list[ConstraintState]:
    """Validate what no row breaks any more; name the rows that still break the rest.

    Runs the function migration 0003 installed (absent before it: nothing to do).
    The lock timeout keeps a busy table from queueing workers' reads behind us;
    `asyncpg.LockNotAvailableError` means: try again later.
    """
    async with vault.connection() as conn:
        if (
            await conn.fetchval("SELECT to_regproc('llm_fleet_finish_credential_constraints')")
            is None
        ):
            return []
        async with conn.transaction():
            await conn.execute("SET LOCAL lock_timeout = '5s'")
            rows = await conn.fetch(
                "SELECT check_name, state, row_ids FROM llm_fleet_finish_credential_constraints()"
            )
    return [
        ConstraintState(
            str(r["check_name"]),
            r["state"] == "validated",
            tuple(str(i) for i in r["row_ids"] or ()),
        )
        for r in rows
    ]
