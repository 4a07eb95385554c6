"""AES-256-GCM keyring: sealed credential envelopes and (later) vault rows.

Keys are identified by a key id so ciphertexts survive rotation. Associated data
binds every ciphertext to where it belongs (a provider for sealed envelopes, a
row for the vault), so an envelope made for one provider never opens for another.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Mapping
from dataclasses import dataclass

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contracts.errors import Unauthorized
from providers.core.types import Secret

NONCE_BYTES = 12
SEALED_PREFIX = "fleet1"


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


@dataclass(frozen=True, slots=True)
class Keyring:
    active_kid: str
    _keys: Mapping[str, AESGCM]

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
        return cls(active_kid, {kid: AESGCM(key) for kid, key in named.items()})

    @property
    def kids(self) -> frozenset[str]:
        return frozenset(self._keys)

    def encrypt(self, plaintext: bytes, aad: bytes) -> tuple[str, bytes, bytes]:
        """Return (kid, nonce, ciphertext+tag) under the active key."""
        nonce = os.urandom(NONCE_BYTES)
        return self.active_kid, nonce, self._keys[self.active_kid].encrypt(nonce, plaintext, aad)

    def encrypt_under(self, kid: str, plaintext: bytes, aad: bytes) -> tuple[bytes, bytes]:
        """(nonce, ciphertext+tag) under a named key, active or not.

        Only the vault's key-check records need this: a key that was proven right by a
        row it opened gets its record even when it is no longer the active key.
        """
        nonce = os.urandom(NONCE_BYTES)
        return nonce, self._keys[kid].encrypt(nonce, plaintext, aad)

    def decrypt(self, kid: str, nonce: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Raise KeyError for an unknown kid and InvalidTag when the data does not open."""
        return self._keys[kid].decrypt(nonce, ciphertext, aad)


def _sealed_aad(provider: str, kid: str) -> bytes:
    return f"llm-fleet:sealed:v1:{provider}:{kid}".encode()


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


def seal(keyring: Keyring, provider: str, fields: Mapping[str, str]) -> str:
    plaintext = json.dumps(dict(fields), separators=(",", ":")).encode()
    kid, nonce, ct = keyring.encrypt(plaintext, _sealed_aad(provider, kid=keyring.active_kid))
    body = base64.urlsafe_b64encode(nonce + ct).decode().rstrip("=")
    return f"{SEALED_PREFIX}.{kid}.{body}"


def open_sealed(keyring: Keyring, provider: str, envelope: str) -> Secret:
    """Open an envelope in memory. Errors say what is wrong, never what is inside."""
    prefix, _, rest = envelope.partition(".")
    kid, _, body = rest.partition(".")
    if prefix != SEALED_PREFIX or not kid or not body:
        raise Unauthorized("sealed credential is not a fleet1 envelope")
    try:
        raw = base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))
    except (binascii.Error, ValueError):
        raise Unauthorized("sealed credential is not valid base64") from None
    if len(raw) <= NONCE_BYTES + 16:
        raise Unauthorized("sealed credential is truncated")
    try:
        plaintext = keyring.decrypt(
            kid, raw[:NONCE_BYTES], raw[NONCE_BYTES:], _sealed_aad(provider, kid)
        )
    except KeyError:
        raise Unauthorized(
            f"sealed credential was made with key id {kid!r}, which this worker does not hold"
        ) from None
    except InvalidTag:
        raise Unauthorized(
            f"sealed credential does not open for provider {provider!r} with key id {kid!r}: "
            "it was made with another key, for another provider, or tampered with"
        ) from None
    return Secret(json.loads(plaintext))
