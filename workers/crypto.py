"""The fleet keyring: one key per key id, and the per-purpose keys derived from each.

A fleet key (INTEGRATION_CRYPTO_KEY, older ones in INTEGRATION_CRYPTO_KEYS) is
never used to encrypt anything itself. From each, HKDF-SHA256 (RFC 5869) derives
one key per purpose:

    salt  = b"llm-fleet hkdf salt v1"            (fixed, public)
    info  = b"llm-fleet vault row key v2"         -> vault rows (scheme 2)
            b"llm-fleet key check key v2"         -> vault key-check records
            b"llm-fleet sealing key v2\\x00" + tenant (UTF-8) -> that tenant's envelopes

so the right to seal for one tenant (its sealing key, handed to a producer) is
not the right to read stored credentials or to seal for another tenant. Vault
rows and key-check records written before these keys existed (scheme 1) were
encrypted under the fleet key itself; they are still opened ("legacy" purpose)
until `llm-fleet creds rotate` rewrites them, and nothing new is written so.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Literal

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from contracts import sealing
from contracts.errors import Unauthorized
from contracts.sealing import Envelope, SealingKey
from providers.core.types import Secret

NONCE_BYTES = sealing.NONCE_BYTES

HKDF_SALT = b"llm-fleet hkdf salt v1"
INFO_VAULT_ROW = b"llm-fleet vault row key v2"
INFO_KEY_CHECK = b"llm-fleet key check key v2"
INFO_SEALING = b"llm-fleet sealing key v2\x00"

# "legacy" is the fleet key itself: it only ever decrypts (scheme-1 rows and records).
Purpose = Literal["row", "check", "legacy"]


class KeyringError(ValueError):
    """The configured keys are missing or malformed (raised at start-up)."""


def _decode_key(text: str, where: str) -> bytes:
    try:
        raw = base64.b64decode(text.strip(), validate=True)
    except (binascii.Error, ValueError):
        raise KeyringError(f"{where} is not valid base64") from None
    if len(raw) != 32:
        raise KeyringError(f"{where} must be base64 of 32 bytes, got {len(raw)} bytes")
    return raw


def fingerprint(key: bytes) -> str:
    """A stable, non-reversible key id for a key given without one."""
    return "fp" + hashlib.sha256(b"llm-fleet key id" + key).hexdigest()[:10]


def derive(fleet_key: bytes, info: bytes) -> bytes:
    """One purpose's 32-byte key (HKDF-SHA256 with the fixed salt)."""
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=HKDF_SALT, info=info).derive(fleet_key)


def sealing_key_bytes(fleet_key: bytes, tenant: str) -> bytes:
    return derive(fleet_key, INFO_SEALING + tenant.encode())


@dataclass(frozen=True, slots=True)
class Keyring:
    active_kid: str
    _fleet_keys: Mapping[str, bytes] = field(repr=False)
    _ciphers: Mapping[tuple[str, Purpose], AESGCM] = field(repr=False)

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Keyring:
        """Build from INTEGRATION_CRYPTO_KEY (active) and INTEGRATION_CRYPTO_KEYS (kid:b64,...)."""
        named: dict[str, bytes] = {}
        for item in filter(
            None, (s.strip() for s in env.get("INTEGRATION_CRYPTO_KEYS", "").split(","))
        ):
            kid, sep, b64 = item.partition(":")
            if not sep or not kid:
                raise KeyringError("INTEGRATION_CRYPTO_KEYS entries must look like kid:base64key")
            named[kid] = _decode_key(b64, f"INTEGRATION_CRYPTO_KEYS[{kid}]")
        active_text = env.get("INTEGRATION_CRYPTO_KEY", "")
        if not active_text:
            raise KeyringError(
                "INTEGRATION_CRYPTO_KEY is not set: it must hold the base64 of a 32-byte key "
                "(make one with: openssl rand -base64 32)"
            )
        active = _decode_key(active_text, "INTEGRATION_CRYPTO_KEY")
        active_kid = next((k for k, v in named.items() if v == active), None) or fingerprint(active)
        named[active_kid] = active
        ciphers: dict[tuple[str, Purpose], AESGCM] = {}
        for kid, key in named.items():
            ciphers[kid, "row"] = AESGCM(derive(key, INFO_VAULT_ROW))
            ciphers[kid, "check"] = AESGCM(derive(key, INFO_KEY_CHECK))
            ciphers[kid, "legacy"] = AESGCM(key)
        return cls(active_kid, named, ciphers)

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._fleet_keys)

    def encrypt(
        self, plaintext: bytes, aad: bytes, purpose: Literal["row", "check"] = "row"
    ) -> tuple[str, bytes, bytes]:
        """Return (kid, nonce, ciphertext+tag) under the active key's `purpose` key."""
        nonce, ct = self.encrypt_under(self.active_kid, plaintext, aad, purpose)
        return self.active_kid, nonce, ct

    def encrypt_under(
        self, kid: str, plaintext: bytes, aad: bytes, purpose: Literal["row", "check"] = "row"
    ) -> tuple[bytes, bytes]:
        """(nonce, ciphertext+tag) under a named key id's `purpose` key, active or not.

        Only the vault's key-check records need another key id than the active one:
        a key that was proven right by a row it opened gets its record even when it
        is no longer the active key.
        """
        nonce = os.urandom(NONCE_BYTES)
        return nonce, self._ciphers[kid, purpose].encrypt(nonce, plaintext, aad)

    def decrypt(
        self, kid: str, nonce: bytes, ciphertext: bytes, aad: bytes, purpose: Purpose = "row"
    ) -> bytes:
        """Raise KeyError for an unknown kid and InvalidTag when the data does not open."""
        return self._ciphers[kid, purpose].decrypt(nonce, ciphertext, aad)

    def sealing_key(self, tenant: str, kid: str | None = None) -> SealingKey:
        """`tenant`'s sealing key under `kid` (default: the active key id)."""
        kid = self.active_kid if kid is None else kid
        if not tenant:
            raise ValueError("a sealing key is for one tenant: the tenant must not be empty")
        if kid not in self._fleet_keys:
            raise KeyError(kid)
        return SealingKey(kid, tenant, sealing_key_bytes(self._fleet_keys[kid], tenant))


def secret_fields(plaintext: str) -> dict[str, str]:
    """A pasted key is `{"api_key": key}`; a JSON object carries provider-specific fields."""
    text = plaintext.strip()
    if text.startswith("{"):
        try:
            data = json.loads(text)
        except json.JSONDecodeError:
            raise ValueError("credential looks like JSON but does not parse") from None
        if not isinstance(data, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in data.items()
        ):
            raise ValueError("a JSON credential must be an object of string values")
        return data
    if not text:
        raise ValueError("empty credential")
    return {"api_key": text}


def seal(
    keyring: Keyring,
    provider: str,
    fields: Mapping[str, str],
    *,
    tenant: str,
    ttl: float | None = None,
    expires_at: datetime | float | None = None,
    now: float | None = None,
) -> str:
    """An envelope for `tenant`'s jobs (see `contracts.sealing.seal`), with the fleet key."""
    return sealing.seal(
        keyring.sealing_key(tenant), provider, fields, ttl=ttl, expires_at=expires_at, now=now
    )


def _when(unix_s: float) -> str:
    return datetime.fromtimestamp(unix_s, UTC).isoformat(timespec="seconds")


def open_sealed(
    keyring: Keyring, provider: str, envelope: str, tenant: str, now: float | None = None
) -> Secret:
    """Open an envelope in memory for a job of `tenant` (the broker-validated publisher).

    Errors say what is wrong, never what is inside.
    """
    now = time.time() if now is None else now
    env = Envelope.parse(envelope)
    if env.tenant != tenant:
        raise Unauthorized(
            f"sealed credential was sealed for tenant {env.tenant!r}, but this job's tenant "
            f"(the broker user that published it) is {tenant!r}: seal it for {tenant!r}"
        )
    if env.kid not in keyring.kids:
        raise Unauthorized(
            f"sealed credential was made with key id {env.kid!r}, which this worker does not hold"
        )
    fields = env.open(keyring.sealing_key(tenant, env.kid), provider)
    if now >= env.expires:
        raise Unauthorized(
            f"sealed credential expired at {_when(env.expires)} "
            f"({round(now - env.expires)} s ago): seal the key again"
        )
    if env.expires > now + sealing.MAX_TTL_S + sealing.CLOCK_SKEW_S:
        raise Unauthorized(
            f"sealed credential expires at {_when(env.expires)}, more than 30 days from now "
            "(the most the fleet accepts): seal it with a shorter ttl"
        )
    return Secret(fields)
