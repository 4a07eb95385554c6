"""Service-account credentials and their OAuth2 tokens, against a fake Google."""

from __future__ import annotations

import asyncio
import time

import httpx
import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa

from contracts.errors import BadRequest, ProviderUnavailable, Unauthorized
from contracts.jobs import Message
from providers.core.http import HttpClientPool
from providers.core.types import ChatRequest, Secret
from providers.vertex.account import open_account
from providers.vertex.auth import GOOGLE_TOKEN_URL, JWT_BEARER_GRANT, SCOPE
from providers.vertex.mock_account import (
    CANARIES,
    CLIENT_EMAIL,
    GOOD_ACCOUNT,
    PRIVATE_KEY_ID,
    WRONG_ACCOUNT,
)
from providers.vertex.tests.fakes import GENERATE_OK, FakeGoogle, build, jwt_parts, secret

HELLO = ChatRequest(model="gemini-2.5-flash", messages=[Message(role="user", content="hi")])


def _public_key() -> rsa.RSAPublicKey:
    key = serialization.load_pem_private_key(GOOD_ACCOUNT["private_key"].encode(), None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.public_key()


def _no_key_material(text: str) -> None:
    for canary in CANARIES:
        assert canary not in text
    assert "PRIVATE KEY" not in text


# -- the JWT -----------------------------------------------------------------------------


async def test_assertion_claims_kid_and_signature(pools: list[HttpClientPool]) -> None:
    fake = FakeGoogle()
    adapter = build(fake, pools)
    before = int(time.time())
    await adapter.chat(HELLO, secret())
    form = fake.form()
    assert form["grant_type"] == JWT_BEARER_GRANT
    header, claims, signed, signature = jwt_parts(form["assertion"])
    assert header == {"alg": "RS256", "typ": "JWT", "kid": PRIVATE_KEY_ID}
    assert claims["iss"] == CLIENT_EMAIL
    assert claims["scope"] == SCOPE
    assert claims["aud"] == GOOGLE_TOKEN_URL
    assert before <= claims["iat"] <= int(time.time())
    assert claims["exp"] == claims["iat"] + 3600
    # Raises if the signature is not the account's key's.
    _public_key().verify(signature, signed, padding.PKCS1v15(), hashes.SHA256())
    assert str(fake.token_requests[-1].url) == GOOGLE_TOKEN_URL
    assert fake.authorizations == ["Bearer ya29.t1"]


@pytest.mark.parametrize(
    ("operator", "token_uri", "expected"),
    [
        (
            "https://operator.test/token",
            "https://keyfile.test/token",
            "https://operator.test/token",
        ),
        (None, "https://keyfile.test/token", "https://keyfile.test/token"),
        (None, "", GOOGLE_TOKEN_URL),
    ],
    ids=["operator", "key-file", "google"],
)
async def test_token_url_precedence(
    pools: list[HttpClientPool], operator: str | None, token_uri: str, expected: str
) -> None:
    fake = FakeGoogle()
    adapter = build(fake, pools, token_url=operator)
    await adapter.chat(HELLO, secret(token_uri=token_uri))
    assert str(fake.token_requests[-1].url) == expected
    # The audience is Google's wherever the assertion goes, as google-auth has it.
    assert jwt_parts(fake.form()["assertion"])[1]["aud"] == GOOGLE_TOKEN_URL


# -- caching and refresh -------------------------------------------------------------------


async def test_one_token_for_many_calls(pools: list[HttpClientPool]) -> None:
    fake = FakeGoogle()
    adapter = build(fake, pools)
    await asyncio.gather(*(adapter.chat(HELLO, secret()) for _ in range(20)))
    for _ in range(5):
        await adapter.chat(HELLO, secret())
    assert len(fake.token_requests) == 1
    assert len(fake.api_requests) == 25
    assert set(fake.authorizations) == {"Bearer ya29.t1"}


async def test_another_key_gets_its_own_token(pools: list[HttpClientPool]) -> None:
    fake = FakeGoogle()
    adapter = build(fake, pools)
    await adapter.chat(HELLO, secret())
    await adapter.chat(HELLO, secret(private_key_id="another-key-id"))
    await adapter.chat(HELLO, secret(location="europe-west4"))  # the same key: cached
    assert len(fake.token_requests) == 2


async def test_a_401_refreshes_the_token_once(pools: list[HttpClientPool]) -> None:
    def api(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == "Bearer ya29.t1":
            return httpx.Response(401, json={"error": {"code": 401, "status": "UNAUTHENTICATED"}})
        return httpx.Response(200, json=GENERATE_OK)

    fake = FakeGoogle(api)
    adapter = build(fake, pools)
    result = await adapter.chat(HELLO, secret())
    assert result.message.text() == "hello"
    assert len(fake.token_requests) == 2
    assert fake.authorizations == ["Bearer ya29.t1", "Bearer ya29.t2"]
    await adapter.chat(HELLO, secret())  # the fresh token is the cached one now
    assert len(fake.token_requests) == 2


async def test_a_401_twice_is_unauthorized(pools: list[HttpClientPool]) -> None:
    body = {
        "error": {
            "code": 401,
            "message": "Request had invalid authentication credentials.",
            "status": "UNAUTHENTICATED",
        }
    }
    fake = FakeGoogle(lambda request: httpx.Response(401, json=body))
    adapter = build(fake, pools)
    with pytest.raises(Unauthorized) as info:
        await adapter.chat(HELLO, secret())
    assert info.value.message.startswith("vertex: HTTP 401 UNAUTHENTICATED")
    assert len(fake.api_requests) == 2 and len(fake.token_requests) == 2


# -- refused and broken keys -----------------------------------------------------------------


async def test_refused_key_is_unauthorized_without_the_key(pools: list[HttpClientPool]) -> None:
    def refuse(request: httpx.Request) -> httpx.Response:
        body = {"error": "invalid_grant", "error_description": "Invalid JWT Signature."}
        return httpx.Response(400, json=body)

    fake = FakeGoogle(token=refuse)
    adapter = build(fake, pools)
    with pytest.raises(Unauthorized) as info:
        await adapter.chat(HELLO, secret(private_key=WRONG_ACCOUNT["private_key"]))
    error = info.value
    assert error.message == "vertex: token endpoint invalid_grant: Invalid JWT Signature."
    assert error.provider_status == 400 and not error.retryable
    _no_key_material(error.message)
    assert not fake.api_requests


async def test_token_endpoint_down_is_unavailable(pools: list[HttpClientPool]) -> None:
    fake = FakeGoogle(token=lambda request: httpx.Response(503, text="unavailable"))
    with pytest.raises(ProviderUnavailable):
        await build(fake, pools).chat(HELLO, secret())


def _ec_key() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    return pem.decode()


@pytest.mark.parametrize(
    "private_key",
    [
        "not a key at all " + CANARIES[0],
        "-----BEGIN PRIVATE KEY-----\n" + CANARIES[1] + "\n-----END PRIVATE KEY-----\n",
        GOOD_ACCOUNT["private_key"][:400],
        _ec_key(),
    ],
    ids=["garbage", "bad-body", "truncated", "ec-key"],
)
async def test_malformed_private_key_is_a_bad_request(
    pools: list[HttpClientPool], private_key: str
) -> None:
    fake = FakeGoogle()
    with pytest.raises(BadRequest) as info:
        await build(fake, pools).chat(HELLO, secret(private_key=private_key))
    assert info.value.message == (
        "vertex: the service account's private_key is not a valid PEM RSA key"
    )
    assert info.value.__cause__ is None and info.value.__suppress_context__
    _no_key_material(info.value.message)
    assert not fake.token_requests


# -- the credential ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fields", "missing"),
    [
        ({"private_key": ""}, "private_key"),
        ({"client_email": ""}, "client_email"),
        ({"private_key": "", "client_email": ""}, "private_key, client_email"),
    ],
)
def test_not_a_service_account(fields: dict[str, str], missing: str) -> None:
    with pytest.raises(BadRequest) as info:
        open_account("vertex", secret(**fields))
    assert info.value.message == (
        f"vertex: the credential is not a service account key: missing {missing}"
    )
    _no_key_material(info.value.message)


def test_an_api_key_alone_is_not_a_service_account() -> None:
    with pytest.raises(BadRequest, match="missing private_key, client_email"):
        open_account("vertex", Secret({"api_key": "AIza-canary-key"}))


def test_other_credential_types_are_refused() -> None:
    with pytest.raises(BadRequest, match="'type' must be 'service_account'") as info:
        open_account("vertex", secret(type="authorized_user"))
    assert "authorized_user" not in info.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("project", "../other"),
        ("project", "my project"),
        ("project", "p/locations/x"),
        ("project", "UPPER"),
        ("location", "us-central1/x"),
        ("location", "us central1"),
        ("location", "us-central1?alt=json"),
        ("location", "-bad"),
    ],
)
def test_project_and_location_must_be_url_safe(field: str, value: str) -> None:
    with pytest.raises(BadRequest, match=f"credential field '{field}' is not") as info:
        open_account("vertex", secret(**{field: value}))
    assert value not in info.value.message


def test_project_defaults_and_overrides() -> None:
    account = open_account("vertex", secret(location=""))
    assert (account.project, account.location) == ("mock-project", "us-central1")
    other = open_account("vertex", secret(project="billing-project", location="global"))
    assert (other.project, other.location) == ("billing-project", "global")
    legacy = open_account("vertex", secret(project="example.com:legacy-1"))
    assert legacy.project == "example.com:legacy-1"
    with pytest.raises(BadRequest, match="names no project"):
        open_account("vertex", secret(project_id=""))


def test_account_repr_hides_the_key() -> None:
    text = repr(open_account("vertex", secret()))
    assert CLIENT_EMAIL in text
    _no_key_material(text)


async def test_quota_project_header(pools: list[HttpClientPool]) -> None:
    fake = FakeGoogle()
    adapter = build(fake, pools)
    await adapter.chat(HELLO, secret(quota_project_id="billing-project"))
    assert fake.api_requests[-1].headers["x-goog-user-project"] == "billing-project"
    await adapter.chat(HELLO, secret())
    assert "x-goog-user-project" not in fake.api_requests[-1].headers
    assert "x-goog-user-project" not in fake.token_requests[-1].headers


async def test_quota_project_header_survives_a_refresh(pools: list[HttpClientPool]) -> None:
    def api(request: httpx.Request) -> httpx.Response:
        if request.headers["Authorization"] == "Bearer ya29.t1":
            return httpx.Response(401, json={"error": {"code": 401, "status": "UNAUTHENTICATED"}})
        return httpx.Response(200, json=GENERATE_OK)

    fake = FakeGoogle(api)
    await build(fake, pools).chat(HELLO, secret(quota_project_id="billing-project"))
    assert fake.user_projects == ["billing-project", "billing-project"]
