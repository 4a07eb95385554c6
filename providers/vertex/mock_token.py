"""Google's OAuth2 token endpoint as a mock: JWT bearer grants in, access tokens out.

The assertion is really checked, as Google checks it: the RS256 signature against
the public key of the account the `iss` names and the `kid` picks, the audience
(Google's token endpoint, which google-auth always names, or this endpoint's own
URL), a lifetime of at most an hour around now, a scope.
Answers and refusals use Google's words (`invalid_grant` "Invalid JWT
Signature.", ...), which google-auth turns into a `RefreshError`.

Access tokens are stateless (an HMAC over the account and the expiry), so a token
issued by one process of a multi-process mock is good in every other. Mock only:
the HMAC key is a constant and the tokens are worthless anywhere else.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa

from providers.vertex.mock_account import CLIENT_EMAIL, GOOD_ACCOUNT, PRIVATE_KEY_ID, PROJECT_ID

__all__ = [
    "ACCOUNTS",
    "REFUSED",
    "TOKEN_LIFETIME",
    "MockAccount",
    "RefusedGrants",
    "account_of",
    "check_assertion",
    "issue_token",
    "token_endpoint",
]

TOKEN_LIFETIME: Final = 3599  # what Google answers
JWT_BEARER_GRANT: Final = "urn:ietf:params:oauth:grant-type:jwt-bearer"
GOOGLE_TOKEN_URL: Final = "https://oauth2.googleapis.com/token"
# Google's bound on an assertion's life, and the clock skew it forgives.
_MAX_LIFETIME: Final = 3600
_SKEW: Final = 300
# Mock only: signs the mock's access tokens, which nothing outside the mock accepts.
_TOKEN_KEY: Final = b"llm-fleet vertex mock access tokens (mock only)"
_TOKEN_PREFIX: Final = "ya29.mock."

_BAD_SIGNATURE: Final = "Invalid JWT Signature."
_BAD_TIME: Final = (
    "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable "
    "timeframe. Check your iat and exp values in the JWT claim."
)


@dataclass(frozen=True, slots=True)
class MockAccount:
    """A service account the mock knows: its project and its keys' public halves."""

    client_email: str
    project: str
    public_keys: Mapping[str, rsa.RSAPublicKey]  # by private_key_id


def _public_key(private_pem: str) -> rsa.RSAPublicKey:
    key = serialization.load_pem_private_key(private_pem.encode(), password=None)
    assert isinstance(key, rsa.RSAPrivateKey)
    return key.public_key()


def _signed_by(key: rsa.RSAPublicKey | None, message: bytes, signature: bytes) -> bool:
    if key is None:
        return False
    try:
        key.verify(signature, message, padding.PKCS1v15(), hashes.SHA256())
    except InvalidSignature:
        return False
    return True


ACCOUNTS: Final[Mapping[str, MockAccount]] = {
    CLIENT_EMAIL: MockAccount(
        CLIENT_EMAIL, PROJECT_ID, {PRIVATE_KEY_ID: _public_key(GOOD_ACCOUNT["private_key"])}
    ),
}


class RefusedGrants:
    """Accounts whose next grant is refused once (the mock's 401 fault, see `mock`)."""

    def __init__(self) -> None:
        self._emails: set[str] = set()

    def add(self, email: str) -> None:
        self._emails.add(email)

    def take(self, email: str) -> bool:
        if email in self._emails:
            self._emails.discard(email)
            return True
        return False


REFUSED: Final = web.AppKey("vertex_refused_grants", RefusedGrants)


# ---------------------------------------------------------------- access tokens


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _mac(body: str) -> str:
    return _b64(hmac.new(_TOKEN_KEY, body.encode(), hashlib.sha256).digest()[:24])


def issue_token(email: str, now: float) -> str:
    body = _b64(json.dumps({"sub": email, "exp": int(now) + TOKEN_LIFETIME}).encode())
    return f"{_TOKEN_PREFIX}{body}.{_mac(body)}"


def account_of(token: str, now: float) -> MockAccount | None:
    """The account an access token this mock issued stands for; None if not one, or expired."""
    if not token.startswith(_TOKEN_PREFIX):
        return None
    body, _, mac = token.removeprefix(_TOKEN_PREFIX).partition(".")
    if not hmac.compare_digest(mac, _mac(body)):
        return None
    try:
        claims = json.loads(_unb64(body))
    except (ValueError, binascii.Error):
        return None
    if not isinstance(claims, dict) or not isinstance(claims.get("exp"), int):
        return None
    if claims["exp"] <= now:
        return None
    return ACCOUNTS.get(claims.get("sub", ""))


# ---------------------------------------------------------------- the endpoint


class _Refusal(Exception):
    def __init__(self, error: str, description: str) -> None:
        super().__init__(description)
        self.error = error
        self.description = description


def _decode_segment(segment: str) -> dict[str, Any]:
    try:
        value = json.loads(_unb64(segment))
    except (ValueError, binascii.Error):
        raise _Refusal("invalid_grant", "Invalid JWT: malformed segment.") from None
    if not isinstance(value, dict):
        raise _Refusal("invalid_grant", "Invalid JWT: malformed segment.")
    return value


def check_assertion(assertion: str, own_url: str, now: float) -> MockAccount:
    """The account a JWT bearer assertion proves; `_Refusal` in Google's words otherwise."""
    segments = assertion.split(".")
    if len(segments) != 3:
        raise _Refusal("invalid_grant", "Invalid JWT: the assertion is not a signed JWT.")
    header, claims = _decode_segment(segments[0]), _decode_segment(segments[1])
    if header.get("alg") != "RS256":
        raise _Refusal("invalid_grant", _BAD_SIGNATURE)
    account = ACCOUNTS.get(str(claims.get("iss", "")))
    if account is None:
        raise _Refusal("invalid_grant", "Invalid grant: account not found")
    public_key = account.public_keys.get(str(header.get("kid", "")))
    try:
        signature = _unb64(segments[2])
    except (ValueError, binascii.Error):
        signature = b""
    message = f"{segments[0]}.{segments[1]}".encode("ascii", "replace")
    if not _signed_by(public_key, message, signature):
        raise _Refusal("invalid_grant", _BAD_SIGNATURE)
    if claims.get("aud") not in (GOOGLE_TOKEN_URL, own_url):
        raise _Refusal(
            "invalid_grant",
            f"Invalid JWT: Failed audience check. The right audience is {GOOGLE_TOKEN_URL}",
        )
    iat, exp = claims.get("iat"), claims.get("exp")
    if not (isinstance(iat, int | float) and isinstance(exp, int | float)):
        raise _Refusal("invalid_grant", _BAD_TIME)
    if iat > now + _SKEW or exp <= now - _SKEW or exp - iat > _MAX_LIFETIME or exp <= iat:
        raise _Refusal("invalid_grant", _BAD_TIME)
    if not str(claims.get("scope", "")).strip():
        raise _Refusal("invalid_scope", "Invalid OAuth scope or ID token audience provided.")
    return account


def _oauth_error(error: str, description: str) -> web.Response:
    body = json.dumps({"error": error, "error_description": description})
    return web.Response(status=400, text=body, content_type="application/json")


async def token_endpoint(request: web.Request) -> web.StreamResponse:
    """`POST /token` (form-encoded `grant_type` and `assertion`)."""
    form = await request.post()
    grant_type = form.get("grant_type")
    if grant_type != JWT_BEARER_GRANT:
        named = grant_type if isinstance(grant_type, str) else ""
        return _oauth_error("unsupported_grant_type", f"Invalid grant_type: {named}")
    assertion = form.get("assertion")
    if not isinstance(assertion, str) or not assertion:
        return _oauth_error("invalid_request", "Missing required parameter: assertion")
    now = time.time()
    own_url = str(request.url.with_query(None))
    try:
        account = check_assertion(assertion, own_url, now)
    except _Refusal as refusal:
        return _oauth_error(refusal.error, refusal.description)
    if request.app[REFUSED].take(account.client_email):
        return _oauth_error("invalid_grant", _BAD_SIGNATURE)
    body = {
        "access_token": issue_token(account.client_email, now),
        "expires_in": TOKEN_LIFETIME,
        "token_type": "Bearer",
    }
    return web.json_response(body)
