"""Every error class, an unknown model, a wrong key, credential checks, capability checks."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import pytest

from contracts.errors import (
    BadRequest,
    FleetError,
    Forbidden,
    NotFound,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
)
from providers.core.spec import Capability
from providers.core.types import ChatRequest, Secret
from providers.registry import Provider
from tests.conformance.support import (
    MockAdmin,
    canaries,
    chat_error,
    chat_request,
    check_error,
    gives_retry_hints,
    require,
    secret,
    stream_error,
    wrong_secret,
)


@dataclass(frozen=True, slots=True)
class ErrorCase:
    spec: str  # a fault spec (providers.mock.faults)
    cls: type[FleetError]
    retryable: bool
    status: int | None = None  # the HTTP status named by the spec; None where dialects differ
    retry_after: float | None = None


ERROR_CASES = [
    ErrorCase("400", BadRequest, False, 400),
    # A refused key is not always a 401: Gemini says 400 API_KEY_INVALID, Bedrock
    # 403 UnrecognizedClientException; what matters is the class.
    ErrorCase("401", Unauthorized, False),
    ErrorCase("403", Forbidden, False, 403),
    ErrorCase("404", NotFound, False, 404),
    ErrorCase("429", RateLimited, True, 429),
    ErrorCase("429:retry-after=2", RateLimited, True, 429, retry_after=2.0),
    ErrorCase("429:retry-after-ms=1500", RateLimited, True, 429, retry_after=1.5),
    ErrorCase("quota", QuotaExceeded, False),
    ErrorCase("overloaded", ProviderUnavailable, True),
    ErrorCase("500", ProviderUnavailable, True, 500),
    ErrorCase("502", ProviderUnavailable, True, 502),
    ErrorCase("503", ProviderUnavailable, True, 503),
    ErrorCase("504", ProviderUnavailable, True, 504),
    ErrorCase("context", BadRequest, False),
]


async def _error(
    provider: Provider, path: str, req: ChatRequest, key: Secret | None = None
) -> FleetError:
    if path == "chat":
        return await chat_error(provider, req, key)
    error, got = await stream_error(provider, req, key)
    assert not got.events, f"events before an HTTP error: {got.events!r}"
    return error


@pytest.mark.parametrize("case", ERROR_CASES, ids=lambda case: case.spec)
async def test_error_class(
    provider: Provider, model: str, path: str, case: ErrorCase, admin: MockAdmin
) -> None:
    await admin.fault(case.spec, model)
    error = await _error(provider, path, chat_request(model))
    check_error(error, provider, case.cls, retryable=case.retryable, status=case.status)
    if case.retry_after is not None and gives_retry_hints(provider):
        assert error.retry_after == case.retry_after
    if path == "stream":
        await admin.assert_no_open_streams()


async def test_unknown_model_is_not_found(provider: Provider, path: str) -> None:
    # Neither "mock-…" nor in MockConfig.models: every mock answers its own 404.
    error = await _error(provider, path, chat_request("no-such-model-xyz"))
    check_error(error, provider, NotFound, retryable=False)


async def test_wrong_key_is_unauthorized(provider: Provider, model: str, path: str) -> None:
    error = await _error(provider, path, chat_request(model), wrong_secret(provider))
    check_error(error, provider, Unauthorized, retryable=False)


async def test_verify(provider: Provider) -> None:
    require(provider, Capability.VERIFY)
    good = await provider.verifier().verify(secret(provider))
    assert good.ok, good.detail
    bad = await provider.verifier().verify(wrong_secret(provider))
    assert not bad.ok
    assert bad.detail, "a refused key should say why"
    for canary in canaries(provider):
        assert canary not in bad.detail


_ACCESSORS: dict[Capability, Callable[[Provider], object]] = {
    Capability.CHAT: Provider.chat,
    Capability.STREAM: Provider.streamer,
    Capability.EMBED: Provider.embedder,
    Capability.RERANK: Provider.reranker,
    Capability.VERIFY: Provider.verifier,
}


@pytest.mark.parametrize("capability", list(_ACCESSORS), ids=lambda c: c.names[0])
def test_capability_accessors_follow_the_flags(provider: Provider, capability: Capability) -> None:
    accessor = _ACCESSORS[capability]
    if provider.supports(capability):
        assert accessor(provider) is provider.adapter
    else:
        with pytest.raises(BadRequest, match="does not support"):
            accessor(provider)
