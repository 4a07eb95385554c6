"""Per-purpose keys (HKDF) and sealed envelopes v2: bound to provider, key id, tenant, expiry."""

from __future__ import annotations

import base64
import os
import time
from datetime import UTC, datetime, timedelta

import pytest
from click.testing import CliRunner, Result
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from contracts import sealing
from contracts.errors import Unauthorized
from contracts.sealing import Envelope, SealingKey, parse_ttl
from workers.cli import main
from workers.crypto import (
    INFO_KEY_CHECK,
    INFO_SEALING,
    INFO_VAULT_ROW,
    Keyring,
    KeyringError,
    derive,
    open_sealed,
    seal,
    secret_fields,
)

CANARY = "sk-canary-sealed-5e1d7c3b9a"
NOW = 1_750_000_000.0


def key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


def ring(k: str | None = None, kid: str = "k1") -> Keyring:
    k = k or key()
    return Keyring.from_env({"INTEGRATION_CRYPTO_KEY": k, "INTEGRATION_CRYPTO_KEYS": f"{kid}:{k}"})


def refused(*args: object, **kw: object) -> str:
    with pytest.raises(Unauthorized) as info:
        open_sealed(*args, **kw)  # type: ignore[arg-type]
    assert CANARY not in info.value.message
    return info.value.message


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
        r = Keyring.from_env(
            {"INTEGRATION_CRYPTO_KEY": k2, "INTEGRATION_CRYPTO_KEYS": f"old:{k1},new:{k2}"}
        )
        assert r.active_kid == "new" and r.kids == {"old", "new"}

    def test_repr_shows_no_key(self) -> None:
        k = key()
        r = ring(k)
        text = repr(r) + repr(r.sealing_key("guest"))
        assert k not in text and base64.b64decode(k).hex() not in text
        assert r.sealing_key("guest").key.hex() not in text


class TestDerivedKeys:
    def test_each_purpose_and_tenant_gets_its_own_key(self) -> None:
        fleet = os.urandom(32)
        keys = {
            derive(fleet, INFO_VAULT_ROW),
            derive(fleet, INFO_KEY_CHECK),
            derive(fleet, INFO_SEALING + b"alice"),
            derive(fleet, INFO_SEALING + b"bob"),
            fleet,
        }
        assert len(keys) == 5 and all(len(k) == 32 for k in keys)
        # Deterministic: the worker and `seal-key` derive the same key.
        assert derive(fleet, INFO_VAULT_ROW) == derive(fleet, INFO_VAULT_ROW)
        assert derive(os.urandom(32), INFO_VAULT_ROW) != derive(fleet, INFO_VAULT_ROW)

    def test_the_fleet_key_itself_encrypts_nothing_new(self) -> None:
        raw = os.urandom(32)
        r = ring(base64.b64encode(raw).decode())
        kid, nonce, ct = r.encrypt(b"row", b"aad")
        assert r.decrypt(kid, nonce, ct, b"aad", "row") == b"row"
        with pytest.raises(Exception):  # noqa: B017 - InvalidTag: not under the raw key
            AESGCM(raw).decrypt(nonce, ct, b"aad")
        with pytest.raises(Exception):  # noqa: B017 - nor under the key-check key
            r.decrypt(kid, nonce, ct, b"aad", "check")
        nonce, ct = r.encrypt_under(kid, b"check", b"aad", "check")
        assert AESGCM(derive(raw, INFO_KEY_CHECK)).decrypt(nonce, ct, b"aad") == b"check"
        # What was written under the fleet key itself (scheme 1) still opens.
        old_nonce = os.urandom(12)
        old = AESGCM(raw).encrypt(old_nonce, b"legacy", b"aad")
        assert r.decrypt(kid, old_nonce, old, b"aad", "legacy") == b"legacy"

    def test_sealing_keys_differ_per_tenant_and_key_id(self) -> None:
        k = key()
        r = Keyring.from_env({"INTEGRATION_CRYPTO_KEY": k, "INTEGRATION_CRYPTO_KEYS": f"a:{k}"})
        assert r.sealing_key("alice").key != r.sealing_key("bob").key
        other = ring()
        assert other.sealing_key("alice").key != r.sealing_key("alice").key
        assert r.sealing_key("alice") == r.sealing_key("alice", "a")
        with pytest.raises(ValueError):
            r.sealing_key("")
        with pytest.raises(KeyError):
            r.sealing_key("alice", "nope")


class TestSealed:
    def test_round_trip_for_its_tenant(self) -> None:
        r = ring()
        fields = {"api_key": CANARY, "base_url": "http://x/v1"}
        env = seal(r, "openai", fields, tenant="alice", ttl=60, now=NOW)
        assert CANARY not in env and env.startswith("fleet2.k1.alice.")
        assert env.split(".")[3] == str(int(NOW + 60))
        secret = open_sealed(r, "openai", env, "alice", NOW + 30)
        assert secret.api_key == CANARY and secret.get("base_url") == "http://x/v1"
        assert CANARY not in repr(secret) and CANARY not in str(secret)

    def test_another_tenant_is_refused_naming_both(self) -> None:
        r = ring()
        env = seal(r, "openai", {"api_key": CANARY}, tenant="alice", now=NOW)
        message = refused(r, "openai", env, "bob", NOW)
        assert "sealed for tenant 'alice'" in message and "tenant" in message and "'bob'" in message

    def test_relabelling_the_tenant_in_the_header_does_not_open(self) -> None:
        r = ring()
        env = seal(r, "openai", {"api_key": CANARY}, tenant="alice", now=NOW)
        forged = env.replace(".alice.", ".bob.")
        assert "tampered" in refused(r, "openai", forged, "bob", NOW)
        # Nor does a key that tenant bob could derive open alice's envelope.
        parsed = Envelope.parse(env)
        with pytest.raises(Unauthorized):
            parsed.open(r.sealing_key("bob"), "openai")

    def test_expired_and_extended_envelopes_are_refused(self) -> None:
        r = ring()
        env = seal(r, "openai", {"api_key": CANARY}, tenant="alice", ttl=60, now=NOW)
        message = refused(r, "openai", env, "alice", NOW + 61)
        expected = datetime.fromtimestamp(int(NOW + 60), UTC).isoformat(timespec="seconds")
        assert "expired at" in message and expected in message
        assert open_sealed(r, "openai", env, "alice", NOW + 59).api_key == CANARY
        later = str(int(NOW + 3600))
        extended = env.replace(f".{int(NOW + 60)}.", f".{later}.")
        assert "tampered" in refused(r, "openai", extended, "alice", NOW + 61)

    def test_an_expiry_beyond_the_maximum_is_refused(self) -> None:
        r = ring()
        env = seal(r, "openai", {"api_key": CANARY}, tenant="alice", ttl=sealing.MAX_TTL_S, now=NOW)
        assert open_sealed(r, "openai", env, "alice", NOW).api_key == CANARY
        # A sealer whose clock ran far ahead (or who ignores the maximum) is refused.
        message = refused(r, "openai", env, "alice", NOW - 86400)
        assert "more than 30 days" in message

    def test_old_fleet1_envelopes_are_refused_with_what_to_do(self) -> None:
        message = refused(
            ring(), "openai", "fleet1.k1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA", "a", NOW
        )
        assert "fleet1" in message and "no tenant" in message and "no expiry" in message
        assert "llm-fleet seal --tenant" in message

    def test_envelope_for_another_provider_is_refused(self) -> None:
        r = ring()
        env = seal(r, "anthropic", {"api_key": CANARY}, tenant="a", now=NOW)
        assert "another provider" in refused(r, "openai", env, "a", NOW)

    def test_envelope_made_with_another_key_is_refused(self) -> None:
        env = seal(ring(kid="k9"), "openai", {"api_key": CANARY}, tenant="a", now=NOW)
        assert "does not hold" in refused(ring(), "openai", env, "a", NOW)

    def test_same_kid_different_key_is_refused(self) -> None:
        env = seal(ring(), "openai", {"api_key": CANARY}, tenant="a", now=NOW)
        assert "another key" in refused(ring(), "openai", env, "a", NOW)

    @pytest.mark.parametrize(
        "mangle",
        [
            lambda e: e[:-2] + ("A" if e[-2] != "A" else "B") + e[-1],
            lambda e: e[:30],
            lambda e: "v0." + e,
            lambda e: e + "!!",
            lambda e: e.replace(".k1.", ".k2."),
        ],
    )
    def test_tampered_envelope_is_refused(self, mangle: object) -> None:
        r = ring()
        env = seal(r, "openai", {"api_key": CANARY}, tenant="a", now=NOW)
        refused(r, "openai", mangle(env), "a", NOW)  # type: ignore[operator]

    def test_tenant_names_with_dots_and_odd_characters_survive_the_header(self) -> None:
        r = ring()
        tenant = "svc.billing@example.com"
        env = seal(r, "openai", {"api_key": CANARY}, tenant=tenant, now=NOW)
        assert len(env.split(".")) == 5
        assert open_sealed(r, "openai", env, tenant, NOW).api_key == CANARY
        assert Envelope.parse(env).tenant == tenant

    def test_seal_refuses_bad_lifetimes(self) -> None:
        k = ring().sealing_key("a")
        for bad in (
            {"ttl": 0},
            {"ttl": sealing.MAX_TTL_S + 1},
            {"ttl": 5, "expires_at": NOW + 5},
            {"expires_at": NOW - 1},
            {"expires_at": datetime(2030, 1, 1)},  # naive
        ):
            with pytest.raises(ValueError):
                sealing.seal(k, "openai", {"api_key": CANARY}, now=NOW, **bad)  # type: ignore[arg-type]
        at = datetime.fromtimestamp(NOW, UTC) + timedelta(hours=2)
        env = sealing.seal(k, "openai", {"api_key": CANARY}, expires_at=at, now=NOW)
        assert Envelope.parse(env).expires == int(NOW + 7200)
        default = sealing.seal(k, "openai", {"api_key": CANARY}, now=NOW)
        assert Envelope.parse(default).expires == int(NOW + sealing.DEFAULT_TTL_S)

    def test_secret_fields(self) -> None:
        assert secret_fields("  sk-abc \n") == {"api_key": "sk-abc"}
        assert secret_fields('{"api_key": "a", "base_url": "b"}') == {
            "api_key": "a",
            "base_url": "b",
        }
        for bad in ["", "{not json", '{"api_key": 1}']:
            with pytest.raises(ValueError):
                secret_fields(bad)


class TestSealingKey:
    def test_a_producer_seals_with_the_exported_key_and_the_worker_opens(self) -> None:
        r = ring()
        text = r.sealing_key("alice").export()
        producer_key = SealingKey.parse(text)
        assert producer_key == r.sealing_key("alice") and "key=" not in repr(producer_key)
        env = sealing.seal(producer_key, "openai", {"api_key": CANARY}, ttl=300)
        assert open_sealed(r, "openai", env, "alice", time.time()).api_key == CANARY
        assert "sealed for tenant 'alice'" in refused(r, "openai", env, "bob", time.time())

    def test_malformed_sealing_keys_are_refused_without_quoting_them(self) -> None:
        good = ring().sealing_key("alice").export()
        for bad in (good[:-4], good.replace("fleet2-sealing-key", "x"), "junk", good + ".x"):
            with pytest.raises(ValueError) as info:
                SealingKey.parse(bad)
            assert good.split(".")[-1][:12] not in str(info.value)

    def test_parse_ttl(self) -> None:
        assert [parse_ttl(t) for t in ("90", "90s", "30m", "24h", "7d", "1.5h")] == [
            90,
            90,
            1800,
            86400,
            604800,
            5400,
        ]
        for bad in ("", "h", "1w", "-5m"):
            with pytest.raises(ValueError):
                parse_ttl(bad)


def run_cli(*args: str, stdin: bytes, env: dict[str, str]) -> Result:
    """`llm-fleet ...` in this process (stdout and stderr apart)."""
    return CliRunner().invoke(main, list(args), input=stdin, env=env)


def test_seal_cli_reads_stdin_and_output_opens_for_its_tenant_only() -> None:
    k = key()
    out = run_cli(
        "seal",
        "--provider",
        "openai",
        "--tenant",
        "alice",
        "--ttl",
        "2h",
        stdin=f"{CANARY}\n".encode(),
        env={"INTEGRATION_CRYPTO_KEY": k},
    )
    assert out.exit_code == 0, out.stderr
    envelope = out.stdout.strip()
    assert CANARY.encode() not in out.stdout_bytes + out.stderr_bytes
    r = Keyring.from_env({"INTEGRATION_CRYPTO_KEY": k})
    now = time.time()
    assert open_sealed(r, "openai", envelope, "alice", now).api_key == CANARY
    assert now + 7000 < Envelope.parse(envelope).expires <= now + 7200
    refused(r, "openai", envelope, "bob", now)
    too_long = run_cli(
        "seal",
        "--provider",
        "openai",
        "--tenant",
        "a",
        "--ttl",
        "31d",
        stdin=b"k",
        env={"INTEGRATION_CRYPTO_KEY": k},
    )
    assert too_long.exit_code != 0 and "30 days" in too_long.stderr
    no_tenant = run_cli("seal", "--provider", "openai", stdin=b"k", env={})
    assert no_tenant.exit_code != 0 and "--tenant" in no_tenant.stderr


def test_seal_key_cli_prints_a_key_the_producer_seals_with() -> None:
    k = key()
    out = run_cli("seal-key", "--tenant", "alice", stdin=b"", env={"INTEGRATION_CRYPTO_KEY": k})
    assert out.exit_code == 0, out.stderr
    producer_key = SealingKey.parse(out.stdout)
    assert (
        k.encode() not in out.stdout_bytes + out.stderr_bytes
    )  # the fleet key itself never leaves
    r = Keyring.from_env({"INTEGRATION_CRYPTO_KEY": k})
    env = sealing.seal(producer_key, "openai", {"api_key": CANARY})
    assert open_sealed(r, "openai", env, "alice").api_key == CANARY
    refused(r, "openai", env, "bob")
    unknown = run_cli(
        "seal-key", "--tenant", "a", "--kid", "nope", stdin=b"", env={"INTEGRATION_CRYPTO_KEY": k}
    )
    assert unknown.exit_code != 0 and "'nope'" in unknown.stderr
