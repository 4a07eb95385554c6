"""Keys versus stored rows: the worker's start-up check and key rotation.

Rotation re-encrypts rows that are not under the active key, a batch per
transaction. `FOR UPDATE SKIP LOCKED` lets it run beside live workers (which only
read) and beside another rotation; each row changes from old key id to new key
id in a single UPDATE, so a reader sees one complete version or the other.
Stopping it at any point loses nothing: the next run picks up the rows still
under old keys.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass, field

from contracts.errors import Unauthorized
from workers.crypto import Keyring
from workers.vault import SealedRow, Vault, decrypt_row, reencrypt_row

_SAMPLE_PER_KEY = 3


async def check_keys(vault: Vault, keyring: Keyring) -> list[str]:
    """Problems that make stored credentials unreadable with this keyring (empty = fine).

    A key id is fine when the keyring has it and at least one of a few live rows
    under it decrypts: a wrong key fails them all, while one damaged row must not
    stop every worker from starting.
    """
    problems: list[str] = []
    async with vault.connection() as conn:
        kids = await conn.fetch(
            "SELECT key_id, count(*) AS n FROM credentials WHERE revoked_at IS NULL"
            " GROUP BY key_id ORDER BY key_id"
        )
        for rec in kids:
            kid, n = str(rec["key_id"]), int(rec["n"])
            if kid not in keyring.kids:
                problems.append(
                    f"{n} credential(s) are encrypted under key id {kid!r} which "
                    f"INTEGRATION_CRYPTO_KEY(S) does not provide (this worker holds: "
                    f"{', '.join(sorted(keyring.kids))})"
                )
                continue
            sample = await conn.fetch(
                "SELECT id, provider, key_id, nonce, ciphertext, revoked_at FROM credentials"
                " WHERE key_id = $1 AND revoked_at IS NULL ORDER BY created_at LIMIT $2",
                kid,
                _SAMPLE_PER_KEY,
            )
            if not any(_opens(keyring, SealedRow.from_record(r)) for r in sample):
                problems.append(
                    f"credentials under key id {kid!r} do not decrypt with the key "
                    f"INTEGRATION_CRYPTO_KEY(S) gives for {kid!r}: it is the wrong key"
                )
    return problems


def _opens(keyring: Keyring, row: SealedRow) -> bool:
    try:
        decrypt_row(keyring, row)
    except Unauthorized:
        return False
    return True


@dataclass(slots=True)
class RotationReport:
    active_kid: str
    rotated: int = 0
    batches: int = 0
    unreadable: dict[str, str] = field(default_factory=dict)  # id -> reason (no contents)
    remaining: int = 0  # rows still under another key, not counting unreadable ones


async def _rotate_batch(vault: Vault, keyring: Keyring, size: int, report: RotationReport) -> int:
    """Re-encrypt up to `size` rows in one transaction; return how many rows were looked at."""
    skip = [uuid.UUID(i) for i in report.unreadable]
    async with vault.connection() as conn, conn.transaction():
        rows = await conn.fetch(
            "SELECT id, provider, key_id, nonce, ciphertext, revoked_at FROM credentials"
            " WHERE key_id <> $1 AND NOT (id = ANY($2::uuid[]))"
            " ORDER BY id LIMIT $3 FOR UPDATE SKIP LOCKED",
            keyring.active_kid,
            skip,
            size,
        )
        for rec in rows:
            row = SealedRow.from_record(rec)
            try:
                kid, nonce, ct = reencrypt_row(keyring, row)
            except Unauthorized as exc:
                report.unreadable[row.id] = exc.message
                continue
            await conn.execute(
                "UPDATE credentials SET key_id = $2, nonce = $3, ciphertext = $4,"
                " updated_at = now() WHERE id = $1 AND key_id = $5",
                rec["id"],
                kid,
                nonce,
                ct,
                row.key_id,
            )
            report.rotated += 1
    return len(rows)


async def rotate(
    vault: Vault,
    keyring: Keyring,
    *,
    batch_size: int = 100,
    max_batches: int | None = None,
    on_batch: Callable[[RotationReport], None] | None = None,
) -> RotationReport:
    """Move every row (revoked ones too) under the active key; see the module docstring."""
    if batch_size < 1:
        raise ValueError("batch size must be at least 1")
    report = RotationReport(active_kid=keyring.active_kid)
    while max_batches is None or report.batches < max_batches:
        seen = await _rotate_batch(vault, keyring, batch_size, report)
        if seen == 0:
            break
        report.batches += 1
        if on_batch is not None:
            on_batch(report)
    async with vault.connection() as conn:
        report.remaining = int(
            await conn.fetchval(
                "SELECT count(*) FROM credentials"
                " WHERE key_id <> $1 AND NOT (id = ANY($2::uuid[]))",
                keyring.active_kid,
                [uuid.UUID(i) for i in report.unreadable],
            )
        )
    return report
