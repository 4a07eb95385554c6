"""Key-check records and the judge that sorts rows into fine, damaged and wrong-key."""

from __future__ import annotations

import base64
import dataclasses
import os
import uuid

import pytest
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contracts.errors import Unauthorized
from workers.crypto import Keyring
from workers.vault import (
    LEGACY_SCHEME,
    SCHEME,
    KeyCheck,
    RowDamaged,
    RowJudge,
    RowSealedShut,
    SealedRow,
    decrypt_row,
    encrypt_fields,
    key_check_aad,
    key_check_text,
    probe_row,
    row_aad,
)

PLAIN = "sk-unit-keycheck-plaintext-9731"


def ring(active: bytes, **named: bytes) -> Keyring:
    b64 = {k: base64.b64encode(v).decode() for k, v in named.items()}
    return Keyring.from_env(
        {
            "INTEGRATION_CRYPTO_KEYS": ",".join(f"{k}:{v}" for k, v in b64.items()),
            "INTEGRATION_CRYPTO_KEY": base64.b64encode(active).decode(),
        }
    )


def row(keyring: Keyring, provider: str = "openai") -> SealedRow:
    cid = str(uuid.uuid4())
    kid, nonce, ct = encrypt_fields(keyring, cid, provider, "t", {"api_key": PLAIN})
    return SealedRow(cid, "t", provider, kid, nonce, ct, revoked=False)


def damaged(r: SealedRow) -> SealedRow:
    flipped = bytes([r.ciphertext[0] ^ 1]) + r.ciphertext[1:]
    return dataclasses.replace(r, ciphertext=flipped)


def test_a_check_record_opens_only_with_the_key_that_wrote_it() -> None:
    k1 = os.urandom(32)
    right = ring(k1, k1=k1)
    check = KeyCheck.make(right, "k1")
    assert check.key_id == "k1" and len(check.nonce) == 12
    assert check.opens_with(right)
    other = os.urandom(32)
    assert not check.opens_with(ring(other, k1=other))  # same id, another key
    assert not check.opens_with(ring(os.urandom(32)))  # key id not held at all
    # Fresh nonce each time: two records of one key never share a nonce.
    assert KeyCheck.make(right, "k1").nonce != check.nonce


def test_a_check_record_is_bound_to_its_key_id_and_purpose() -> None:
    key = os.urandom(32)
    both = ring(key, k1=key, k2=key)  # one key under two ids
    check = KeyCheck.make(both, "k1")
    relabelled = KeyCheck("k2", check.nonce, check.ciphertext)
    assert not relabelled.opens_with(both)
    # Nothing secret in it: the plaintext is public and names the key id.
    assert b"k1" in key_check_text("k1") and PLAIN.encode() not in key_check_text("k1")
    # Its associated data can never be a credential row's, so neither passes for the other
    # (and, since scheme 2, a record is written under a key of its own).
    assert key_check_aad("k1").startswith(b"llm-fleet:key-check:")
    assert row_aad("k1", "openai", "t").startswith(b'["llm-fleet:vault"')
    as_row = SealedRow(str(uuid.uuid4()), "t", "openai", "k1", check.nonce, check.ciphertext, False)
    with pytest.raises(RowSealedShut):
        decrypt_row(both, as_row)
    r = row(both)
    assert not KeyCheck(r.key_id, r.nonce, r.ciphertext).opens_with(both)


def test_a_record_whose_text_is_not_the_check_text_does_not_count() -> None:
    key = os.urandom(32)
    keyring = ring(key, k1=key)
    nonce, ct = keyring.encrypt_under("k1", b"something else", key_check_aad("k1"), "check")
    assert not KeyCheck("k1", nonce, ct).opens_with(keyring)


def test_records_written_with_the_fleet_key_itself_still_prove_it() -> None:
    key = os.urandom(32)
    keyring = ring(key, k1=key)
    nonce = os.urandom(12)
    ct = AESGCM(key).encrypt(nonce, key_check_text("k1"), key_check_aad("k1"))
    assert KeyCheck("k1", nonce, ct, scheme=LEGACY_SCHEME).opens_with(keyring)
    assert not KeyCheck("k1", nonce, ct).opens_with(keyring)  # not a scheme-2 record
    other = os.urandom(32)
    assert not KeyCheck("k1", nonce, ct, scheme=LEGACY_SCHEME).opens_with(ring(other, k1=other))
    # A new record is under the key-check key, never the fleet key itself.
    new = KeyCheck.make(keyring, "k1")
    assert new.scheme == SCHEME
    with pytest.raises(InvalidTag):
        AESGCM(key).decrypt(new.nonce, new.ciphertext, key_check_aad("k1"))


def test_probe_row_tells_fine_damaged_shut_and_keyless_rows_apart() -> None:
    key = os.urandom(32)
    keyring = ring(key, k1=key)
    good = row(keyring)
    assert probe_row(keyring, good) == "ok"
    assert probe_row(keyring, damaged(good)) == "sealed_shut"
    assert probe_row(ring(os.urandom(32)), good) == "no_key"
    cid = str(uuid.uuid4())
    n, c = keyring.encrypt_under("k1", b"[1, 2]", row_aad(cid, "openai", "t"))
    not_a_map = SealedRow(cid, "t", "openai", "k1", n, c, False)
    assert probe_row(keyring, not_a_map) == "damaged"
    with pytest.raises(RowDamaged) as info:
        decrypt_row(keyring, not_a_map)
    assert "is damaged" in info.value.message
    assert isinstance(info.value, Unauthorized)  # answered `unauthorized`, dead-lettered


def test_with_a_record_three_damaged_rows_are_damaged_not_a_wrong_key() -> None:
    key = os.urandom(32)
    keyring = ring(key, k1=key)
    rows = [row(keyring) for _ in range(5)]
    bad = [damaged(r) for r in rows[:3]]
    judge = RowJudge(keyring, {"k1": KeyCheck.make(keyring, "k1")})
    for r in [*bad, *rows[3:]]:
        judge.add(r)
    v = judge.verdicts()
    assert v.right == {"k1": "check record"} and not v.wrong and not v.missing
    assert v.damaged == {r.id: "k1" for r in bad}
    assert v.to_record == []  # already recorded
    assert v.row_state(bad[0].id, "k1") == "damaged" and v.row_state(rows[4].id, "k1") == "ok"


def test_with_a_record_every_row_damaged_still_reads_as_right_key() -> None:
    key = os.urandom(32)
    keyring = ring(key, k1=key)
    judge = RowJudge(keyring, {"k1": KeyCheck.make(keyring, "k1")})
    for _ in range(4):
        judge.add(damaged(row(keyring)))
    v = judge.verdicts()
    assert v.right == {"k1": "check record"} and len(v.damaged) == 4


def test_a_wrong_key_is_told_by_its_record_with_no_rows_at_all() -> None:
    key = os.urandom(32)
    check = KeyCheck.make(ring(key, k1=key), "k1")
    other = os.urandom(32)
    wrong = ring(other, k1=other)
    v = RowJudge(wrong, {"k1": check}).verdicts()
    assert v.wrong == {"k1": "its key-check record"} and not v.right


def test_a_wrong_key_with_damaged_rows_is_still_wrong_and_its_rows_not_damaged() -> None:
    key, other = os.urandom(32), os.urandom(32)
    writer = ring(key, k1=key)
    wrong = ring(other, k1=other)
    judge = RowJudge(wrong, {"k1": KeyCheck.make(writer, "k1")})
    rows = [row(writer), damaged(row(writer))]
    for r in rows:
        judge.add(r)
    v = judge.verdicts()
    assert "k1" in v.wrong and v.damaged == {}
    assert set(v.wrong_key_rows) == {r.id for r in rows}
    assert v.row_state(rows[0].id, "k1") == "wrong key"


def test_without_a_record_one_row_that_opens_proves_the_key_and_asks_for_a_record() -> None:
    key = os.urandom(32)
    keyring = ring(key, k1=key)
    rows = [row(keyring) for _ in range(4)]
    judge = RowJudge(keyring, {})
    for r in [damaged(rows[0]), damaged(rows[1]), damaged(rows[2]), rows[3]]:
        judge.add(r)
    v = judge.verdicts()
    assert v.right == {"k1": "rows"} and v.to_record == ["k1"]
    assert set(v.damaged) == {r.id for r in rows[:3]}


def test_without_a_record_no_row_opening_means_wrong_key() -> None:
    key = os.urandom(32)
    writer = ring(key, k1=key)
    other = os.urandom(32)
    judge = RowJudge(ring(other, k1=other), {})
    for _ in range(3):
        judge.add(row(writer))
    v = judge.verdicts()
    assert v.wrong == {"k1": "any of the 3 credential row(s) under it"}
    assert v.to_record == [] and v.damaged == {}


def test_rows_under_a_key_id_not_held_are_missing_and_unused_keys_say_nothing() -> None:
    key = os.urandom(32)
    writer = ring(key, k0=key)
    reader_key = os.urandom(32)
    reader = ring(reader_key, k1=reader_key)
    judge = RowJudge(reader, {})
    judge.add(row(writer))
    judge.add(row(writer))
    v = judge.verdicts()
    assert v.missing == {"k0": 2}
    assert "k1" not in v.right and "k1" not in v.wrong  # nothing stored under it
    # A record of a key id this keyring lacks is a retired key: not a problem.
    v2 = RowJudge(reader, {"k0": KeyCheck.make(writer, "k0")}).verdicts()
    assert v2.missing == {} and v2.wrong == {}


def test_errors_and_verdicts_never_carry_plaintext_or_key() -> None:
    key = os.urandom(32)
    keyring = ring(key, k1=key)
    r = damaged(row(keyring))
    with pytest.raises(RowSealedShut) as info:
        decrypt_row(keyring, r)
    text = info.value.message + repr(RowJudge(keyring, {}).verdicts())
    assert PLAIN not in text and base64.b64encode(key).decode() not in text
