"""Retry policy and provider address settings: parsed, checked at start-up, used per provider."""

from __future__ import annotations

import base64
import os

import pytest

from contracts.errors import ProviderUnavailable
from contracts.jobs import ChatJob, Credential, Message, Target
from providers.core.types import ChatRequest, ChatResult, Secret
from providers.registry import ProviderRegistry
from providers.retry import RetryPolicies, RetryPolicy
from workers.config import ConfigError, Settings
from workers.credentials import CredentialResolver
from workers.crypto import Keyring, seal
from workers.execute import Executor, RunState


def settings(**env: str) -> Settings:
    return Settings.from_env(env)


class TestRetrySettings:
    def test_defaults_are_the_policys_own(self) -> None:
        s = settings()
        assert s.retry == RetryPolicies(RetryPolicy(), {})

    def test_fleet_wide_settings(self) -> None:
        s = settings(
            FLEET_RETRY_ATTEMPTS="6",
            FLEET_RETRY_BACKOFF_INITIAL="0.25",
            FLEET_RETRY_BACKOFF_MAX="4",
            FLEET_RETRY_MAX_RETRY_AFTER="20",
        )
        assert s.retry.default == RetryPolicy(
            max_attempts=6, backoff_base=0.25, backoff_cap=4.0, max_retry_after=20.0
        )

    def test_per_provider_settings_start_from_the_fleet_wide_ones(self) -> None:
        s = settings(
            FLEET_RETRY_ATTEMPTS="5",
            FLEET_RETRY_BACKOFF_MAX="10",
            FLEET_PROVIDER_RETRY_ATTEMPTS="vllm=1,openai-compatible=2",
            FLEET_PROVIDER_RETRY_MAX_RETRY_AFTER="openai=120",
        )
        policies = s.retry
        assert policies.for_provider("vllm") == RetryPolicy(max_attempts=1, backoff_cap=10.0)
        assert policies.for_provider("openai-compatible").max_attempts == 2
        openai = policies.for_provider("openai")
        assert (openai.max_attempts, openai.max_retry_after, openai.backoff_cap) == (5, 120.0, 10.0)
        # Not named: the fleet-wide policy.
        assert policies.for_provider("ollama") == policies.default

    @pytest.mark.parametrize(
        ("env", "named"),
        [
            ({"FLEET_RETRY_ATTEMPTS": "0"}, "FLEET_RETRY_ATTEMPTS"),
            ({"FLEET_RETRY_ATTEMPTS": "three"}, "FLEET_RETRY_ATTEMPTS"),
            ({"FLEET_RETRY_ATTEMPTS": "2.5"}, "FLEET_RETRY_ATTEMPTS"),
            ({"FLEET_RETRY_BACKOFF_INITIAL": "-1"}, "FLEET_RETRY_BACKOFF_INITIAL"),
            ({"FLEET_RETRY_BACKOFF_MAX": "nan"}, "FLEET_RETRY_BACKOFF_MAX"),
            ({"FLEET_RETRY_MAX_RETRY_AFTER": "inf"}, "FLEET_RETRY_MAX_RETRY_AFTER"),
            (
                {"FLEET_RETRY_BACKOFF_INITIAL": "5", "FLEET_RETRY_BACKOFF_MAX": "1"},
                "FLEET_RETRY_BACKOFF_MAX",
            ),
            ({"FLEET_PROVIDER_RETRY_ATTEMPTS": "openai=0"}, "(for openai)"),
            ({"FLEET_PROVIDER_RETRY_BACKOFF_MAX": "openai=0.1"}, "(for openai)"),  # < initial
            ({"FLEET_PROVIDER_RETRY_ATTEMPTS": "openai"}, "name=value"),
            ({"FLEET_RETRY_ATTEMTPS": "3"}, "FLEET_RETRY_ATTEMTPS"),  # misspelt
            ({"FLEET_PROVIDER_RETRY_TRIES": "openai=3"}, "FLEET_PROVIDER_RETRY_TRIES"),
        ],
    )
    def test_bad_values_are_refused_at_start_naming_the_setting(
        self, env: dict[str, str], named: str
    ) -> None:
        with pytest.raises(ConfigError, match=named.replace("(", r"\(").replace(")", r"\)")):
            settings(**env)


class TestAddressSettings:
    def test_base_and_token_urls(self) -> None:
        s = settings(
            FLEET_PROVIDER_URLS="vllm=http://vllm:8000/v1, openai=https://proxy.internal/v1",
            FLEET_PROVIDER_TOKEN_URLS="vertex=https://oauth.proxy.internal/token",
        )
        assert s.provider_urls == {
            "vllm": "http://vllm:8000/v1",
            "openai": "https://proxy.internal/v1",
        }
        assert s.provider_token_urls == {"vertex": "https://oauth.proxy.internal/token"}

    @pytest.mark.parametrize("name", ["FLEET_PROVIDER_URLS", "FLEET_PROVIDER_TOKEN_URLS"])
    @pytest.mark.parametrize("url", ["vllm:8000/v1", "ftp://host/x", "http://", "/v1"])
    def test_an_address_that_is_not_an_http_url_is_refused(self, name: str, url: str) -> None:
        with pytest.raises(ConfigError, match=name):
            settings(**{name: f"vllm={url}"})


# -- the executor picks the policy of each target's provider -------------------------


class AlwaysDown:
    """Answers every call with a retryable failure, counting the calls."""

    def __init__(self) -> None:
        self.calls = 0

    async def chat(self, req: ChatRequest, secret: Secret) -> ChatResult:
        self.calls += 1
        raise ProviderUnavailable("down", provider_status=503)


# The broker user a job was published by: its envelopes are sealed for it.
TENANT = "guest"


def ring() -> Keyring:
    return Keyring.from_env({"INTEGRATION_CRYPTO_KEY": base64.b64encode(os.urandom(32)).decode()})


def chat_job(keyring: Keyring, provider: str, *fallbacks: str) -> ChatJob:
    def target(name: str) -> Target:
        sealed = seal(keyring, name, {"api_key": "k"}, tenant=TENANT)
        return Target(provider=name, model="m", credential=Credential(sealed=sealed))

    return ChatJob(
        v=1,
        request_id="r",
        target=target(provider),
        fallbacks=[target(name) for name in fallbacks],
        messages=[Message(role="user", content="x")],
        stream=False,
    )


def fast(attempts: int) -> RetryPolicy:
    return RetryPolicy(max_attempts=attempts, backoff_base=0.0, backoff_cap=0.0)


class NullStream:
    first_delta_at = None


async def test_each_target_is_retried_under_its_providers_policy() -> None:
    keyring = ring()
    registry = ProviderRegistry()
    adapters = {"patient": AlwaysDown(), "hasty": AlwaysDown()}
    for name, adapter in adapters.items():
        registry.register_adapter(name, adapter)
    policies = RetryPolicies(fast(4), {"hasty": fast(1)})
    executor = Executor(registry, CredentialResolver(keyring), policies)
    job = chat_job(keyring, "hasty", "patient")
    with pytest.raises(ProviderUnavailable):
        await executor.run(job, NullStream(), RunState(tenant=TENANT))  # type: ignore[arg-type]
    assert adapters["hasty"].calls == 1
    assert adapters["patient"].calls == 4


async def test_a_single_policy_still_applies_to_every_provider() -> None:
    keyring = ring()
    registry = ProviderRegistry()
    adapter = AlwaysDown()
    registry.register_adapter("p", adapter)
    executor = Executor(registry, CredentialResolver(keyring), fast(3))
    with pytest.raises(ProviderUnavailable):
        await executor.run(chat_job(keyring, "p"), NullStream(), RunState(tenant=TENANT))  # type: ignore[arg-type]
    assert adapter.calls == 3


def test_retry_settings_for_a_provider_the_worker_lacks_are_refused() -> None:
    registry = ProviderRegistry()
    registry.register_adapter("openai", AlwaysDown())
    policies = RetryPolicies(fast(2), {"opneai": fast(1)})
    with pytest.raises(ConfigError, match="opneai"):
        Executor(registry, CredentialResolver(ring()), policies)
