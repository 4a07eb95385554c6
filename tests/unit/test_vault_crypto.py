"""Vault rows: associated data binds a ciphertext to its row and owner; errors never carry
plaintext. Rows written the scheme-1 way (the fleet key itself) keep opening."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import uuid
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contracts.errors import Unauthorized
from workers.crypto import Keyring
from workers.migrate import MigrationError, load_migrations
from workers.vault import (
    LEGACY_SCHEME,
    SCHEME,
    SealedRow,
    _RowCache,
    decrypt_row,
    encrypt_fields,
    legacy_row_aad,
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


def sealed(ring: Keyring, cid: str, provider: str = "openai", tenant: str = "a") -> SealedRow:
    fields = {"api_key": PLAIN, "base_url": "http://x"}
    kid, nonce, ct = encrypt_fields(ring, cid, provider, tenant, fields)
    return SealedRow(cid, tenant, provider, kid, nonce, ct, revoked=False)


def moved(row: SealedRow, **to: object) -> SealedRow:
    return dataclasses.replace(row, **to)  # type: ignore[arg-type]


def legacy(raw_key: bytes, kid: str, cid: str, tenant: str = "a") -> SealedRow:
    """A row as written before scheme 2: the fleet key itself, AAD without the tenant."""
    nonce = os.urandom(12)
    plaintext = json.dumps({"api_key": PLAIN}).encode()
    ct = AESGCM(raw_key).encrypt(nonce, plaintext, legacy_row_aad(cid, "openai"))
    return SealedRow(cid, tenant, "openai", kid, nonce, ct, False, scheme=LEGACY_SCHEME)


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
    assert "does not decrypt" in refused(ring, moved(row, id=b))
    assert "does not decrypt" in refused(ring, moved(row, provider="anthropic"))
    assert "does not decrypt" in refused(ring, moved(row, tenant="b"))  # relabelled owner
    flipped = bytes([row.ciphertext[0] ^ 1]) + row.ciphertext[1:]
    assert "does not decrypt" in refused(ring, moved(row, ciphertext=flipped))
    # Not under the fleet key itself, whatever the scheme column claims.
    assert "does not decrypt" in refused(ring, moved(row, scheme=LEGACY_SCHEME))


def test_a_legacy_row_opens_and_rotation_makes_it_scheme_2() -> None:
    raw = os.urandom(32)
    ring = keyring(k1=raw)
    cid = str(uuid.uuid4())
    old = legacy(raw, "k1", cid, tenant="a")
    assert decrypt_row(ring, old).api_key == PLAIN
    # Scheme 1 does not bind the owner: the reason rows are upgraded.
    assert decrypt_row(ring, moved(old, tenant="b")).api_key == PLAIN
    kid, nonce, ct = reencrypt_row(ring, old)
    new = SealedRow(cid, "a", "openai", kid, nonce, ct, False, scheme=SCHEME)
    assert decrypt_row(ring, new).api_key == PLAIN
    assert "does not decrypt" in refused(ring, moved(new, tenant="b"))
    with pytest.raises(Exception):  # noqa: B017 - InvalidTag: the fleet key opens nothing new
        AESGCM(raw).decrypt(nonce, ct, legacy_row_aad(cid, "openai"))


def test_missing_and_wrong_keys_are_named() -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    row = sealed(keyring(k1=k1), str(uuid.uuid4()))
    assert "key id 'k1'" in refused(keyring(k2=k2), row)
    assert "key id 'k1'" in refused(keyring(k2=k2), legacy(k1, "k1", row.id))
    assert "does not decrypt with key id 'k1'" in refused(keyring(k1=os.urandom(32)), row)


def test_reencrypt_moves_a_row_to_the_active_key() -> None:
    k1, k2 = os.urandom(32), os.urandom(32)
    cid = str(uuid.uuid4())
    row = sealed(keyring(k1=k1), cid)
    both = keyring(k2=k2, k1=k1)  # first named key is the active one
    kid, nonce, ct = reencrypt_row(both, row)
    assert kid == "k2" and nonce != row.nonce
    rotated = SealedRow(cid, "a", "openai", kid, nonce, ct, False)
    assert decrypt_row(keyring(k2=k2), rotated).api_key == PLAIN


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
