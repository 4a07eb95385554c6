"""Where requests go: the location's host, the operator's address, the model's path."""

from __future__ import annotations

import pytest

from contracts.errors import BadRequest
from contracts.jobs import Message
from providers.core.http import HttpClientPool
from providers.core.types import ChatRequest
from providers.registry import default_registry
from providers.vertex.account import open_account
from providers.vertex.tests.fakes import FakeGoogle, build, secret
from providers.vertex.urls import DEFAULT_BASE_URL, base_url, model_path

PATH = "/projects/mock-project/locations/{}/publishers/google/models/gemini-2.5-flash"


@pytest.mark.parametrize(
    ("location", "root"),
    [
        ("us-central1", "https://us-central1-aiplatform.googleapis.com/v1"),
        ("europe-west4", "https://europe-west4-aiplatform.googleapis.com/v1"),
        ("global", "https://aiplatform.googleapis.com/v1"),
        ("us", "https://aiplatform.us.rep.googleapis.com/v1"),
        ("eu", "https://aiplatform.eu.rep.googleapis.com/v1"),
    ],
)
def test_host_follows_the_location(location: str, root: str) -> None:
    assert base_url(None, location) == root
    assert base_url(DEFAULT_BASE_URL, location) == root


def test_operator_address_replaces_the_host() -> None:
    assert base_url("https://proxy.internal/vertex/v1/", "global") == (
        "https://proxy.internal/vertex/v1"
    )
    assert base_url("https://{location}.proxy.internal/v1", "europe-west4") == (
        "https://europe-west4.proxy.internal/v1"
    )


@pytest.mark.parametrize(
    ("location", "configured", "url"),
    [
        (
            "us-central1",
            DEFAULT_BASE_URL,
            "https://us-central1-aiplatform.googleapis.com/v1" + PATH.format("us-central1"),
        ),
        (
            "global",
            DEFAULT_BASE_URL,
            "https://aiplatform.googleapis.com/v1" + PATH.format("global"),
        ),
        (
            "asia-northeast1",
            "https://proxy.internal/v1",
            "https://proxy.internal/v1" + PATH.format("asia-northeast1"),
        ),
    ],
    ids=["region", "global", "override"],
)
async def test_request_urls(
    pools: list[HttpClientPool], location: str, configured: str, url: str
) -> None:
    fake = FakeGoogle()
    adapter = build(fake, pools, base_url=configured)
    req = ChatRequest(model="gemini-2.5-flash", messages=[Message(role="user", content="hi")])
    await adapter.chat(req, secret(location=location))
    assert str(fake.api_requests[-1].url) == url + ":generateContent"


def test_model_names_are_quoted_whole() -> None:
    account = open_account("vertex", secret())
    assert model_path("vertex", account, "gemini-2.5-flash", "predict").endswith(
        "/publishers/google/models/gemini-2.5-flash:predict"
    )
    # A slash or a query in the name cannot reach another resource.
    assert model_path("vertex", account, "../../x?alt=1", "predict").endswith(
        "/models/..%2F..%2Fx%3Falt%3D1:predict"
    )
    assert model_path("vertex", account, "claude-3@20240229", "predict").endswith(
        "/models/claude-3@20240229:predict"
    )
    with pytest.raises(BadRequest, match="no model"):
        model_path("vertex", account, " ", "predict")


def test_default_registry_keeps_the_template_and_takes_overrides() -> None:
    pool = HttpClientPool()
    registry = default_registry(pool)
    assert registry.get("vertex").info().default_base_url == DEFAULT_BASE_URL
    overridden = default_registry(pool, {"vertex": "https://proxy.internal/v1"})
    assert overridden.get("vertex").base_url == "https://proxy.internal/v1"
