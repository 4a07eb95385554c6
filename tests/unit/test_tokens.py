"""Access-token cache, bearer auth with one refresh on 401, RFC 6749 token errors."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import pytest

from contracts.errors import BadRequest, ProviderUnavailable, Unauthorized
from providers.core.http import HttpClientPool
from providers.core.tokens import (
    AccessToken,
    BearerTokenAuth,
    TokenCache,
    credential_key,
    fetch_oauth2_token,
)
from providers.core.types import Secret

CANARY = "client-secret-canary-7c41d2"


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class Issuer:
    """Hands out numbered tokens, counting fetches; optionally slow."""

    def __init__(self, lifetime: float = 3600.0, delay: float = 0.0) -> None:
        self.fetches = 0
        self.lifetime = lifetime
        self.delay = delay

    async def __call__(self) -> AccessToken:
        self.fetches += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        return AccessToken(f"token-{self.fetches}", self.lifetime)


async def test_token_is_reused_until_shortly_before_expiry() -> None:
    clock = Clock()
    cache = TokenCache(clock=clock)
    issuer = Issuer(lifetime=3600)
    assert await cache.get("k", issuer) == "token-1"
    clock.now += 3600 - 301
    assert await cache.get("k", issuer) == "token-1"
    clock.now += 2  # inside the 300 s margin: refreshed before the provider refuses it
    assert await cache.get("k", issuer) == "token-2"
    assert issuer.fetches == 2


async def test_short_lived_tokens_refresh_at_half_life() -> None:
    clock = Clock()
    cache = TokenCache(clock=clock)
    issuer = Issuer(lifetime=60)
    await cache.get("k", issuer)
    clock.now += 29
    assert await cache.get("k", issuer) == "token-1"
    clock.now += 2
    assert await cache.get("k", issuer) == "token-2"


async def test_concurrent_callers_share_one_fetch() -> None:
    cache = TokenCache()
    issuer = Issuer(delay=0.05)
    tokens = await asyncio.gather(*(cache.get("k", issuer) for _ in range(20)))
    assert set(tokens) == {"token-1"}
    assert issuer.fetches == 1


async def test_a_failed_fetch_is_not_cached() -> None:
    cache = TokenCache()

    async def failing() -> AccessToken:
        raise Unauthorized("refused")

    with pytest.raises(Unauthorized):
        await cache.get("k", failing)
    assert await cache.get("k", Issuer()) == "token-1"


async def test_invalidate_only_drops_the_refused_token() -> None:
    cache = TokenCache()
    issuer = Issuer()
    await cache.get("k", issuer)
    cache.invalidate("k", "token-0")  # an older token: the cached one stays
    assert await cache.get("k", issuer) == "token-1"
    cache.invalidate("k", "token-1")
    assert await cache.get("k", issuer) == "token-2"


async def test_least_recently_used_credentials_are_evicted() -> None:
    cache = TokenCache(max_entries=2)
    issuer = Issuer()
    await cache.get("a", issuer)
    await cache.get("b", issuer)
    await cache.get("a", issuer)  # a is now the most recent
    await cache.get("c", issuer)
    assert len(cache) == 2
    assert await cache.get("a", issuer) == "token-1"
    assert await cache.get("b", issuer) == "token-4"


def test_credential_key_is_a_digest_of_the_named_fields() -> None:
    one = Secret({"client_id": "id", "client_secret": CANARY, "other": "x"})
    same = Secret({"client_id": "id", "client_secret": CANARY, "other": "y"})
    rotated = Secret({"client_id": "id", "client_secret": CANARY + "2"})
    fields = ("client_id", "client_secret")
    assert credential_key(one, fields) == credential_key(same, fields)
    assert credential_key(one, fields) != credential_key(rotated, fields)
    assert CANARY not in credential_key(one, fields)
    # Field boundaries count: ("ab", "c") is not ("a", "bc").
    assert credential_key(Secret({"a": "ab", "b": "c"}), ("a", "b")) != credential_key(
        Secret({"a": "a", "b": "bc"}), ("a", "b")
    )


async def test_bearer_auth_refreshes_once_on_401() -> None:
    seen: list[str] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request.headers["Authorization"])
        ok = request.headers["Authorization"] == "Bearer token-2"
        return httpx.Response(200 if ok else 401, json={})

    cache = TokenCache()
    issuer = Issuer()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        auth = BearerTokenAuth(cache, "k", issuer)
        response = await client.post("http://provider/x", content=b"{}", auth=auth)
    assert response.status_code == 200
    assert seen == ["Bearer token-1", "Bearer token-2"]


async def test_bearer_auth_gives_up_after_one_refresh() -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(401, json={})

    issuer = Issuer()
    async with httpx.AsyncClient(transport=httpx.MockTransport(handler)) as client:
        response = await client.get(
            "http://provider/x", auth=BearerTokenAuth(TokenCache(), "k", issuer)
        )
    assert response.status_code == 401
    assert issuer.fetches == 2
    assert "token" not in repr(BearerTokenAuth(TokenCache(), "k", issuer))


@pytest.fixture
async def token_pool() -> AsyncIterator[list[HttpClientPool]]:
    created: list[HttpClientPool] = []
    yield created
    for pool in created:
        await pool.aclose()


def _pool(handler: httpx.MockTransport, created: list[HttpClientPool]) -> HttpClientPool:
    pool = HttpClientPool(transport=handler)
    created.append(pool)
    return pool


async def test_fetch_oauth2_token_posts_a_form(token_pool: list[HttpClientPool]) -> None:
    forms: list[bytes] = []

    def handler(request: httpx.Request) -> httpx.Response:
        forms.append(request.content)
        return httpx.Response(200, json={"access_token": "abc", "expires_in": 1799})

    pool = _pool(httpx.MockTransport(handler), token_pool)
    secret = Secret({"client_secret": CANARY})
    token = await fetch_oauth2_token(
        "azure", pool, "http://login/token", {"grant_type": "client_credentials"}, secret
    )
    assert token.value == "abc" and token.expires_in == 1799
    assert forms == [b"grant_type=client_credentials"]
    assert "abc" not in repr(token)


@pytest.mark.parametrize(
    ("status", "body", "cls"),
    [
        (
            401,
            {"error": "invalid_client", "error_description": f"bad secret {CANARY}"},
            Unauthorized,
        ),
        (
            400,
            {"error": "invalid_grant", "error_description": "Invalid JWT Signature."},
            Unauthorized,
        ),
        (400, {"error": "invalid_scope", "error_description": "scope"}, BadRequest),
        (503, {}, ProviderUnavailable),
    ],
)
async def test_fetch_oauth2_token_errors(
    token_pool: list[HttpClientPool], status: int, body: dict[str, str], cls: type[Exception]
) -> None:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(status, json=body)

    pool = _pool(httpx.MockTransport(handler), token_pool)
    with pytest.raises(cls) as info:
        await fetch_oauth2_token(
            "vertex", pool, "http://login/token", {}, Secret({"private_key": CANARY})
        )
    message = str(info.value)
    assert message.startswith("vertex: token endpoint"), message
    assert CANARY not in message
    if body.get("error"):
        assert body["error"] in message
