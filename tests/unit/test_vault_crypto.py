"""Vault rows: associated data binds a ciphertext to its row; errors never carry plaintext."""

from __future__ import annotations

import base64
import os
import uuid
from pathlib import Path

import pytest

from contracts.errors import Unauthorized
from workers.crypto import Keyring
from workers.migrate import MigrationError, load_migrations
from workers.vault import (
    SealedRow,
    _RowCache,
    decrypt_row,
    encrypt_fields,
    parse_id,
    reencrypt_row,
)

PLAIN = "sk-unit-plaintext-4242"


def keyring(**named: bytes) -> Keyring:
    b64 = {k: base64.b64encode(v).decode() for k, v in named.items()}
    return Keyring.from_env(
        {
            "INTEGRATION_CRYPTO_KEYS": ",".join(f"{k}:{v}" for k, v in b64.items()),
            "INTEGRATION_CRYPTO_KEY": next(iter(b64.values())),
        }
    )


def sealed(ring: Keyring, cid: str, provider: str = "openai") -> SealedRow:
    kid, nonce, ct = encrypt_fields(ring, cid, provider, {"api_key": PLAIN, "base_url": "http://x"})
    return SealedRow(cid, provider, kid, nonce, ct, revoked=False)


def refused(ring: Keyring, row: SealedRow) -> str:
    with pytest.raises(Unauthorized) as info:
        decrypt_row(ring, row)
    assert PLAIN not in info.value.message
    return info.value.message


def test_a_row_opens_only_as_itself() -> None:
    ring = keyring(k1=os.urandom(32))
    a, b = str(uuid.uuid4()), str(uuid.uuid4())
    row = sealed(ring, a)
    secret = decrypt_row(ring, row)
    assert secret.api_key == PLAIN and secret.get("base_url") == "http://x"
    assert PLAIN not in repr(secret)
    moved = SealedRow(b, row.provider, row.key_id, row.nonce, row.ciphertext, False)
    assert "does not decrypt" in refused(ring, moved)
    relabelled = SealedRow(a, "anthropic", row.key_id, row.nonce, row.ciphertext, False)
    assert "does not decrypt" in refused(ring, relabelled)
    flipped = bytes([row.ciphertext[0] ^ 1]) + row.ciphertext[1:]
    tampered = SealedRow(a, "openai", "k1", row.nonce, flipped, False)
    assert "does not decrypt" in refused(ring, tampered)


def test_missing_and_wrong_keys_are_named() -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    row = sealed(keyring(k1=k1), str(uuid.uuid4()))
    assert "key id 'k1'" in refused(keyring(k2=k2), row)
    assert "does not decrypt with key id 'k1'" in refused(keyring(k1=os.urandom(32)), row)


def test_reencrypt_moves_a_row_to_the_active_key() -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    cid = str(uuid.uuid4())
    row = sealed(keyring(k1=k1), cid)
    both = keyring(k2=k2, k1=k1)  # first named key is the active one
    kid, nonce, ct = reencrypt_row(both, row)
    assert kid == "k2" and nonce != row.nonce
    moved = SealedRow(cid, "openai", kid, nonce, ct, False)
    assert decrypt_row(keyring(k2=k2), moved).api_key == PLAIN


def test_parse_id() -> None:
    u = uuid.uuid4()
    assert parse_id(str(u).upper()) == str(u)
    assert parse_id("nope") is None and parse_id("") is None


def test_row_cache_is_bounded_and_expires(monkeypatch: pytest.MonkeyPatch) -> None:
    now = [1000.0]
    monkeypatch.setattr("workers.vault.time.monotonic", lambda: now[0])
    ring = keyring(k1=os.urandom(32))
    rows = [sealed(ring, str(uuid.uuid4())) for _ in range(3)]
    cache = _RowCache(ttl=10, size=2)
    for r in rows:
        cache.put(r)
    assert cache.get(rows[0].id) is None  # evicted: over the size bound
    assert cache.get(rows[2].id) == rows[2]
    now[0] += 11
    assert cache.get(rows[2].id) is None  # expired
    off = _RowCache(ttl=0, size=10)
    off.put(rows[0])
    assert off.get(rows[0].id) is None


def test_migration_files_are_ordered_and_validated(tmp_path: Path) -> None:
    (tmp_path / "0010_later.sql").write_text("SELECT 10;")
    (tmp_path / "0002_first.sql").write_text("SELECT 2;")
    assert [m.filename for m in load_migrations(tmp_path)] == ["0002_first.sql", "0010_later.sql"]
    (tmp_path / "0002_again.sql").write_text("SELECT 2;")
    with pytest.raises(MigrationError, match="share version 0002"):
        load_migrations(tmp_path)
    (tmp_path / "0002_again.sql").unlink()
    (tmp_path / "3_bad-name.sql").write_text("")
    with pytest.raises(MigrationError, match="NNNN_snake_case"):
        load_migrations(tmp_path)


def test_the_shipped_migrations_load() -> None:
    from workers.migrate import migrations_dir

    assert [m.version for m in load_migrations(migrations_dir())][:1] == [1]
