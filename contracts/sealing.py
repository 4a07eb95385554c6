"""Sealed credential envelopes (v2): a provider key a job carries, for one tenant, until a time.

A producer that must pass its own provider key with a job seals it with its
tenant's *sealing key*, which an operator hands out once (`llm-fleet seal-key
--tenant T`) and the producer keeps like a password. Workers derive the same key
from the fleet key, so the producer never holds the fleet key, and a sealing key
opens nothing but envelopes for its tenant (never the vault's rows).

    from contracts.sealing import SealingKey, seal

    key = SealingKey.parse(os.environ["FLEET_SEALING_KEY"])
    Credential(sealed=seal(key, "openai", {"api_key": api_key}, ttl=3600))

An envelope reads `fleet2.<kid>.<tenant>.<expires_unix_s>.<b64url(nonce + ciphertext)>`:
AES-256-GCM under the tenant's sealing key, with associated data binding the
version, key id, tenant, expiry and provider, so none of the readable header can
be changed and the envelope opens only for that provider. A worker opens it only
for a job its tenant published (the broker-validated user), before the expiry.

Importing this module needs `cryptography` besides the contract's own
dependencies; `import contracts` does not import it.
"""

from __future__ import annotations

import base64
import binascii
import json
import math
import os
import re
import time
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contracts.errors import Unauthorized

ENVELOPE_PREFIX = "fleet2"
LEGACY_ENVELOPE_PREFIX = "fleet1"
SEALING_KEY_PREFIX = "fleet2-sealing-key"

# An envelope opens for 24 hours unless its sealer says otherwise, and for at most
# 30 days: a sealed key that leaks (a logged job body, a dead letter) is spendable
# only that long, and a longer-lived credential belongs in the vault.
DEFAULT_TTL_S = 24 * 3600
MAX_TTL_S = 30 * 24 * 3600
# Workers accept an expiry this much beyond the maximum: sealer and worker clocks differ.
CLOCK_SKEW_S = 300

NONCE_BYTES = 12
KEY_BYTES = 32
_TAG_BYTES = 16
_DURATION = re.compile(r"(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[smhd]?)")
_B64URL = re.compile(r"[A-Za-z0-9_-]+")
_UNIT_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _header_text(value: str) -> str:
    """A header field: percent-encoded so that no '.' (the separator) survives."""
    return urllib.parse.quote(value, safe="").replace(".", "%2E")


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def _unb64(text: str) -> bytes:
    """Strict base64url without padding: a stray character is an error, not skipped."""
    if _B64URL.fullmatch(text) is None:
        raise ValueError("not base64url")
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass(frozen=True, slots=True)
class SealingKey:
    """One tenant's key for sealing envelopes under one fleet key id.

    `repr` never shows the key; `export()` is the text to keep like a password.
    """

    kid: str
    tenant: str
    key: bytes = field(repr=False)

    def __post_init__(self) -> None:
        if not self.kid or not self.tenant:
            raise ValueError("a sealing key names a key id and a tenant")
        if len(self.key) != KEY_BYTES:
            raise ValueError(f"a sealing key is {KEY_BYTES} bytes")

    def export(self) -> str:
        """`fleet2-sealing-key.<kid>.<tenant>.<b64url key>`: what `parse` reads back."""
        return ".".join(
            (SEALING_KEY_PREFIX, _header_text(self.kid), _header_text(self.tenant), _b64(self.key))
        )

    @classmethod
    def parse(cls, text: str) -> SealingKey:
        """Read `export()`'s text. Errors never quote it (it is a secret)."""
        parts = text.strip().split(".")
        if len(parts) != 4 or parts[0] != SEALING_KEY_PREFIX:
            raise ValueError(
                f"not a sealing key: expected {SEALING_KEY_PREFIX}.<kid>.<tenant>.<key> "
                "as printed by `llm-fleet seal-key`"
            )
        try:
            key = _unb64(parts[3])
        except (binascii.Error, ValueError):
            raise ValueError("sealing key: the key part is not base64url") from None
        kid, tenant = urllib.parse.unquote(parts[1]), urllib.parse.unquote(parts[2])
        if len(key) != KEY_BYTES:
            raise ValueError(f"sealing key: the key part is not {KEY_BYTES} bytes")
        return cls(kid, tenant, key)


def sealed_aad(kid: str, tenant: str, expires: int, provider: str) -> bytes:
    """Associated data: everything the header says, and the provider it is for."""
    return json.dumps(
        ["llm-fleet:sealed", 2, kid, tenant, expires, provider], separators=(",", ":")
    ).encode()


def parse_ttl(text: str) -> float:
    """`90`, `90s`, `30m`, `24h`, `7d` -> seconds (ValueError otherwise)."""
    match = _DURATION.fullmatch(text.strip().lower())
    if match is None:
        raise ValueError(f"{text!r} is not a duration (e.g. 3600, 90s, 30m, 24h, 7d)")
    return float(match["n"]) * _UNIT_S[match["unit"]]


def expiry(
    *, ttl: float | None, expires_at: datetime | float | None, now: float | None = None
) -> int:
    """The envelope's expiry (unix seconds) from a TTL or an instant; checks the bounds."""
    now = time.time() if now is None else now
    if ttl is not None and expires_at is not None:
        raise ValueError("give ttl or expires_at, not both")
    if expires_at is None:
        ttl = DEFAULT_TTL_S if ttl is None else ttl
        if not 0 < ttl <= MAX_TTL_S:
            raise ValueError(f"ttl must be more than 0 and at most {MAX_TTL_S} s (30 days)")
        return math.floor(now + ttl)
    if isinstance(expires_at, datetime):
        if expires_at.tzinfo is None:
            raise ValueError("expires_at must be timezone-aware")
        expires_at = expires_at.timestamp()
    if not now < expires_at <= now + MAX_TTL_S:
        raise ValueError("expires_at must be in the future and at most 30 days ahead")
    return math.floor(expires_at)


def seal(
    sealing_key: SealingKey,
    provider: str,
    fields: Mapping[str, str],
    *,
    ttl: float | None = None,
    expires_at: datetime | float | None = None,
    now: float | None = None,
) -> str:
    """An envelope of `fields` (e.g. `{"api_key": ...}`) for `provider`.

    It opens for jobs of the key's tenant until `expires_at`, or `ttl` seconds from
    now (default 24 hours, at most 30 days).
    """
    if not provider:
        raise ValueError("provider must not be empty")
    if not fields or not all(isinstance(k, str) and isinstance(v, str) for k, v in fields.items()):
        raise ValueError("fields must be a non-empty map of strings")
    expires = expiry(ttl=ttl, expires_at=expires_at, now=now)
    nonce = os.urandom(NONCE_BYTES)
    plaintext = json.dumps(dict(fields), separators=(",", ":")).encode()
    aad = sealed_aad(sealing_key.kid, sealing_key.tenant, expires, provider)
    ct = AESGCM(sealing_key.key).encrypt(nonce, plaintext, aad)
    return ".".join(
        (
            ENVELOPE_PREFIX,
            _header_text(sealing_key.kid),
            _header_text(sealing_key.tenant),
            str(expires),
            _b64(nonce + ct),
        )
    )


@dataclass(frozen=True, slots=True)
class Envelope:
    """A parsed, not yet opened envelope: the header can be read, not yet believed."""

    kid: str
    tenant: str
    expires: int
    nonce: bytes
    ciphertext: bytes = field(repr=False)

    @classmethod
    def parse(cls, text: str) -> Envelope:
        """Raises `Unauthorized` saying what is wrong with the form (never the contents)."""
        parts = text.split(".")
        if parts[0] == LEGACY_ENVELOPE_PREFIX:
            raise Unauthorized(
                "sealed credential is an old fleet1 envelope, which names no tenant and "
                "no expiry: re-seal the key with `llm-fleet seal --tenant <your broker user> "
                "--provider ...` (or contracts.sealing.seal with your tenant's sealing key)"
            )
        if parts[0] != ENVELOPE_PREFIX or len(parts) != 5:
            raise Unauthorized(
                "sealed credential is not a fleet2 envelope "
                "(fleet2.<kid>.<tenant>.<expires>.<sealed>)"
            )
        _, kid, tenant, expires, body = parts
        if not expires.isdigit():
            raise Unauthorized("sealed credential: the expiry is not a whole number of seconds")
        try:
            raw = _unb64(body)
        except (binascii.Error, ValueError):
            raise Unauthorized("sealed credential is not valid base64") from None
        if len(raw) <= NONCE_BYTES + _TAG_BYTES:
            raise Unauthorized("sealed credential is truncated")
        return cls(
            kid=urllib.parse.unquote(kid),
            tenant=urllib.parse.unquote(tenant),
            expires=int(expires),
            nonce=raw[:NONCE_BYTES],
            ciphertext=raw[NONCE_BYTES:],
        )

    def open(self, sealing_key: SealingKey, provider: str) -> dict[str, str]:
        """The fields, when the key is the header's and nothing was changed."""
        aad = sealed_aad(self.kid, self.tenant, self.expires, provider)
        try:
            plaintext = AESGCM(sealing_key.key).decrypt(self.nonce, self.ciphertext, aad)
        except InvalidTag:
            raise Unauthorized(
                f"sealed credential does not open for provider {provider!r}, tenant "
                f"{self.tenant!r} and key id {self.kid!r}: it was made with another key, "
                "for another provider, or tampered with"
            ) from None
        fields = json.loads(plaintext)
        if not isinstance(fields, dict) or not all(isinstance(v, str) for v in fields.values()):
            raise Unauthorized("sealed credential does not hold a map of fields")
        return fields
