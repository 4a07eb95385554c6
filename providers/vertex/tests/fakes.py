"""A fake Google for the Vertex adapter's tests: token endpoint and API in one handler."""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Mapping
from typing import Any, Final
from urllib.parse import parse_qs

import httpx

from providers.core.http import HttpClientPool
from providers.core.spec import ProviderContext
from providers.core.types import Secret
from providers.vertex.adapter import Vertex
from providers.vertex.mock_account import GOOD_ACCOUNT
from providers.vertex.urls import DEFAULT_BASE_URL

__all__ = [
    "ACCOUNT",
    "GENERATE_OK",
    "FakeGoogle",
    "build",
    "jwt_parts",
    "secret",
]

ACCOUNT: Final = dict(GOOD_ACCOUNT)
GENERATE_OK: Final[dict[str, Any]] = {
    "candidates": [
        {"content": {"role": "model", "parts": [{"text": "hello"}]}, "finishReason": "STOP"}
    ],
    "usageMetadata": {"promptTokenCount": 3, "candidatesTokenCount": 1, "totalTokenCount": 4},
}

Answer = Callable[[httpx.Request], httpx.Response]


def secret(**fields: str) -> Secret:
    """The mock account's key file with `fields` replaced (an empty value removes one)."""
    merged = {**ACCOUNT, **fields}
    return Secret({k: v for k, v in merged.items() if v})


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def jwt_parts(assertion: str) -> tuple[dict[str, Any], dict[str, Any], bytes, bytes]:
    """Header, claims, signing input and signature of a compact JWT."""
    head, body, signature = assertion.split(".")
    return (
        json.loads(_unb64(head)),
        json.loads(_unb64(body)),
        f"{head}.{body}".encode(),
        _unb64(signature),
    )


class FakeGoogle:
    """Answers token requests (`token`) and API calls (`api`), keeping both apart."""

    def __init__(self, api: Answer | None = None, token: Answer | None = None) -> None:
        self.api = api or (lambda request: httpx.Response(200, json=GENERATE_OK))
        self.token = token or self.issue
        self.token_requests: list[httpx.Request] = []
        self.api_requests: list[httpx.Request] = []
        # As sent: a retried request is the same object, its headers since replaced.
        self.authorizations: list[str] = []
        self.user_projects: list[str | None] = []
        self.issued = 0

    def issue(self, request: httpx.Request) -> httpx.Response:
        self.issued += 1
        body = {"access_token": f"ya29.t{self.issued}", "expires_in": 3599, "token_type": "Bearer"}
        return httpx.Response(200, json=body)

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.path.endswith("/token"):
            self.token_requests.append(request)
            return self.token(request)
        self.api_requests.append(request)
        self.authorizations.append(request.headers.get("Authorization", ""))
        self.user_projects.append(request.headers.get("x-goog-user-project"))
        return self.api(request)

    def form(self, index: int = -1) -> Mapping[str, str]:
        """The form fields of a token request."""
        fields = parse_qs(self.token_requests[index].content.decode())
        return {name: values[0] for name, values in fields.items()}

    @property
    def body(self) -> dict[str, Any]:
        """The JSON body of the last API call."""
        value: dict[str, Any] = json.loads(self.api_requests[-1].content)
        return value


def build(
    fake: FakeGoogle,
    pools: list[HttpClientPool],
    *,
    base_url: str | None = DEFAULT_BASE_URL,
    token_url: str | None = None,
) -> Vertex:
    pool = HttpClientPool(transport=httpx.MockTransport(fake))
    pools.append(pool)
    return Vertex(ProviderContext("vertex", pool, base_url, token_url))
