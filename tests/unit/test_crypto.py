"""Sealed credential envelopes: AES-256-GCM bound to a provider and a key id."""

from __future__ import annotations

import base64
import os
import subprocess
import sys

import pytest

from contracts.errors import Unauthorized
from workers.crypto import Keyring, KeyringError, open_sealed, seal, secret_fields


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


class TestKeyring:
    def test_missing_key_is_a_clear_startup_error(self) -> None:
        with pytest.raises(KeyringError, match="INTEGRATION_CRYPTO_KEY is not set"):
            Keyring.from_env({})

    @pytest.mark.parametrize("bad", ["not base64!", base64.b64encode(b"short").decode()])
    def test_malformed_key(self, bad: str) -> None:
        with pytest.raises(KeyringError):
            Keyring.from_env({"INTEGRATION_CRYPTO_KEY": bad})

    def test_named_keys_and_active_kid(self) -> None:
        k1, k2 = key(), key()
        ring = Keyring.from_env(
            {"INTEGRATION_CRYPTO_KEY": k2, "INTEGRATION_CRYPTO_KEYS": f"old:{k1},new:{k2}"}
        )
        assert ring.active_kid == "new" and ring.kids == {"old", "new"}


class TestSealed:
    def test_round_trip(self) -> None:
        ring = Keyring.from_env({"INTEGRATION_CRYPTO_KEY": key()})
        env = seal(ring, "openai", {"api_key": "sk-secret-123", "base_url": "http://x/v1"})
        assert "sk-secret-123" not in env
        secret = open_sealed(ring, "openai", env)
        assert secret.api_key == "sk-secret-123" and secret.get("base_url") == "http://x/v1"
        assert "sk-secret-123" not in repr(secret) and "sk-secret-123" not in str(secret)

    def test_envelope_for_another_provider_is_refused(self) -> None:
        ring = Keyring.from_env({"INTEGRATION_CRYPTO_KEY": key()})
        env = seal(ring, "anthropic", {"api_key": "k"})
        with pytest.raises(Unauthorized, match="another provider"):
            open_sealed(ring, "openai", env)

    def test_envelope_made_with_another_key_is_refused(self) -> None:
        env = seal(Keyring.from_env({"INTEGRATION_CRYPTO_KEY": key()}), "openai", {"api_key": "k"})
        with pytest.raises(Unauthorized, match="does not hold"):
            open_sealed(Keyring.from_env({"INTEGRATION_CRYPTO_KEY": key()}), "openai", env)

    def test_same_kid_different_key_is_refused(self) -> None:
        a = Keyring.from_env(
            {"INTEGRATION_CRYPTO_KEY": (k := key()), "INTEGRATION_CRYPTO_KEYS": f"k1:{k}"}
        )
        b = Keyring.from_env(
            {"INTEGRATION_CRYPTO_KEY": (k2 := key()), "INTEGRATION_CRYPTO_KEYS": f"k1:{k2}"}
        )
        with pytest.raises(Unauthorized, match="another key"):
            open_sealed(b, "openai", seal(a, "openai", {"api_key": "k"}))

    @pytest.mark.parametrize(
        "mangle",
        [
            lambda e: e[:-2] + ("A" if e[-2] != "A" else "B") + e[-1],
            lambda e: e[:20],
            lambda e: "v0." + e,
            lambda e: e + "!!",
        ],
    )
    def test_tampered_envelope_is_refused(self, mangle: object) -> None:
        ring = Keyring.from_env({"INTEGRATION_CRYPTO_KEY": key()})
        env = seal(ring, "openai", {"api_key": "k"})
        with pytest.raises(Unauthorized):
            open_sealed(ring, "openai", mangle(env))  # type: ignore[operator]

    def test_secret_fields(self) -> None:
        assert secret_fields("  sk-abc \n") == {"api_key": "sk-abc"}
        assert secret_fields('{"api_key": "a", "base_url": "b"}') == {
            "api_key": "a",
            "base_url": "b",
        }
        for bad in ["", "{not json", '{"api_key": 1}']:
            with pytest.raises(ValueError):
                secret_fields(bad)


def test_seal_cli_reads_stdin_and_output_opens() -> None:
    k = key()
    out = subprocess.run(
        [sys.executable, "-m", "workers.cli", "seal", "--provider", "openai"],
        input=b"sk-from-stdin-999\n",
        capture_output=True,
        check=True,
        env={**os.environ, "INTEGRATION_CRYPTO_KEY": k},
    )
    envelope = out.stdout.decode().strip()
    assert b"sk-from-stdin-999" not in out.stdout + out.stderr
    ring = Keyring.from_env({"INTEGRATION_CRYPTO_KEY": k})
    assert open_sealed(ring, "openai", envelope).api_key == "sk-from-stdin-999"
