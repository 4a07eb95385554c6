"""The Azure adapter against the Azure mock, in every sign-in and URL form.

The conformance suite runs with an API key and the dated form; here the same
adapter also signs in with Entra ID client credentials (tokens from the mock's
token endpoint) and speaks the v1 form, as `azure` and as `azure-foundry`.
"""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from contracts.errors import BadRequest, ContentFiltered, NotFound, Unauthorized
from contracts.jobs import Message
from providers.azure import SPECS, mock_entra
from providers.azure.adapter import AzureOpenAI
from providers.azure.mock import ENTRA_CREDENTIALS
from providers.core.http import HttpClientPool
from providers.core.spec import ProviderContext
from providers.core.testing import collect
from providers.core.types import (
    ChatRequest,
    EmbedRequest,
    Secret,
    StreamEnd,
    TextDelta,
)
from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock
from providers.options import ModelOptions

REQUEST = ChatRequest(
    model="mock-azure-e2e",
    messages=[Message(role="user", content="Say hello to the deployment")],
    options=ModelOptions(max_tokens=6),
)
SIGN_INS = {"api-key": {"api_key": "mock-key"}, "entra": dict(ENTRA_CREDENTIALS)}
FORMS = {"dated": {}, "v1": {"api_version": "v1"}}


@pytest.fixture(scope="module")
async def mock() -> AsyncIterator[RunningMock]:
    running = await start_mock(MockConfig())
    yield running
    await running.close()


@pytest.fixture
async def pool() -> AsyncIterator[HttpClientPool]:
    async with HttpClientPool() as created:
        yield created


def build(mock: RunningMock, pool: HttpClientPool, spec_index: int = 0) -> AzureOpenAI:
    spec = SPECS[spec_index]
    context = ProviderContext(spec.name, pool, mock.url("azure"), mock.token_url("azure"))
    adapter = spec.build(context)
    assert isinstance(adapter, AzureOpenAI)
    return adapter


@pytest.mark.parametrize("form", list(FORMS))
@pytest.mark.parametrize("sign_in", list(SIGN_INS))
async def test_every_capability(
    mock: RunningMock, pool: HttpClientPool, sign_in: str, form: str
) -> None:
    adapter = build(mock, pool)
    secret = Secret({**SIGN_INS[sign_in], **FORMS[form]})
    result = await adapter.chat(REQUEST, secret)
    assert result.finish_reason == "length" and result.message.text()
    events = await collect(adapter.stream_chat(REQUEST, secret))
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.usage == result.usage
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == result.message.text()
    vectors = await adapter.embed(
        EmbedRequest(model="mock-embed", inputs=["a", "b"], dimensions=8), secret
    )
    assert (vectors.count, vectors.dims) == (2, 8)
    assert (await adapter.verify(secret)).ok


async def test_foundry_speaks_v1_without_being_told(
    mock: RunningMock, pool: HttpClientPool
) -> None:
    foundry = build(mock, pool, spec_index=1)
    result = await foundry.chat(REQUEST, Secret({"api_key": "mock-key"}))
    assert result.message.text()
    # A dated version still works when a Foundry credential asks for one.
    dated = Secret({"api_key": "mock-key", "api_version": "2024-10-21"})
    assert (await foundry.chat(REQUEST, dated)).message.text()


async def test_wrong_client_secret(mock: RunningMock, pool: HttpClientPool) -> None:
    adapter = build(mock, pool)
    wrong = Secret({**ENTRA_CREDENTIALS, "client_secret": "a-wrong-secret-000111"})
    with pytest.raises(Unauthorized) as info:
        await adapter.chat(REQUEST, wrong)
    assert "AADSTS7000215" in info.value.message and "a-wrong-secret" not in info.value.message
    checked = await adapter.verify(wrong)
    assert not checked.ok and "invalid_client" in checked.detail
    unknown = Secret({**ENTRA_CREDENTIALS, "tenant_id": "nobody"})
    with pytest.raises(BadRequest, match="AADSTS90002"):
        await adapter.chat(REQUEST, unknown)


async def test_an_expired_token_is_replaced(
    mock: RunningMock, pool: HttpClientPool, monkeypatch: pytest.MonkeyPatch
) -> None:
    adapter = build(mock, pool)
    secret = Secret(dict(ENTRA_CREDENTIALS))
    assert (await adapter.chat(REQUEST, secret)).message.text()
    # The mock forgets the token the adapter still holds: its 401 brings a new one.
    later = mock_entra.now() + 4000
    monkeypatch.setattr(mock_entra, "now", lambda: later)
    assert (await adapter.chat(REQUEST, secret)).message.text()
    assert (await collect(adapter.stream_chat(REQUEST, secret)))[-1]


async def test_filters_and_missing_deployments(mock: RunningMock, pool: HttpClientPool) -> None:
    adapter = build(mock, pool)
    secret = Secret({"api_key": "mock-key"})
    await queue_fault(mock, "filtered")
    with pytest.raises(ContentFiltered, match=r"hate \(medium\), violence \(high\)"):
        await adapter.chat(REQUEST, secret)
    await queue_fault(mock, "filtered-after:2")
    with pytest.raises(ContentFiltered, match=r"stopped by Azure's content filter: violence"):
        await collect(adapter.stream_chat(REQUEST, secret))
    missing = ChatRequest(model="no-such-deployment", messages=REQUEST.messages)
    with pytest.raises(NotFound, match="deployment 'no-such-deployment'"):
        await adapter.chat(missing, secret)
    with pytest.raises(NotFound, match="api-version 1999-01-01"):
        await adapter.verify(Secret({"api_key": "mock-key", "api_version": "1999-01-01"}))


async def queue_fault(mock: RunningMock, spec: str) -> None:
    async with httpx.AsyncClient(base_url=mock.root) as admin:
        body = {"spec": spec, "model": REQUEST.model, "times": 1}
        assert (await admin.post("/_mock/faults", json=body)).status_code == 201
