"""The Azure adapter against `httpx.MockTransport` fakes (no network)."""

from __future__ import annotations

import asyncio
import base64
import json
import struct
from collections.abc import Callable
from typing import Any
from urllib.parse import parse_qs

import httpx
import pytest

from contracts.errors import (
    BadRequest,
    ContentFiltered,
    FleetError,
    NotFound,
    ProviderUnavailable,
    QuotaExceeded,
    RateLimited,
    Unauthorized,
)
from contracts.jobs import Message
from providers.azure import SPECS
from providers.azure.adapter import AzureFoundry, AzureOpenAI
from providers.azure.auth import ENTRA_SCOPE
from providers.azure.errors import filtered_categories
from providers.core.http import HttpClientPool
from providers.core.spec import ProviderContext
from providers.core.testing import Handler, Recorder, collect, stream_response
from providers.core.types import (
    ChatRequest,
    EmbedRequest,
    Secret,
    StreamEnd,
    TextDelta,
)
from providers.options import ModelOptions

ENDPOINT = "https://myres.openai.azure.com"
API_KEY = "azure-canary-key-0123456789abcdef"
CLIENT_SECRET = "entra-canary-secret-9876543210"
KEY = Secret({"endpoint": ENDPOINT, "api_key": API_KEY})
ENTRA = Secret(
    {
        "endpoint": ENDPOINT,
        "tenant_id": "contoso.onmicrosoft.com",
        "client_id": "app-1234",
        "client_secret": CLIENT_SECRET,
    }
)
TOKEN_HOST = "login.test"
REQUEST = ChatRequest(
    model="gpt-4o-prod",
    messages=[Message(role="user", content="hi")],
    options=ModelOptions(max_tokens=16, temperature=0.5),
)
OK_CHAT: dict[str, Any] = {
    "choices": [
        {
            "index": 0,
            "message": {"role": "assistant", "content": "yo", "refusal": None},
            "finish_reason": "stop",
            "content_filter_results": {"hate": {"filtered": False, "severity": "safe"}},
        }
    ],
    "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": {}}],
    "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
}
SAFE = {"filtered": False, "severity": "safe"}

Make = Callable[..., AzureOpenAI]


@pytest.fixture
def adapter(pools: list[HttpClientPool]) -> Make:
    def make(
        handler: Handler,
        *,
        cls: type[AzureOpenAI] = AzureOpenAI,
        endpoint: str | None = None,
        token_url: str | None = f"https://{TOKEN_HOST}/{{tenant_id}}/oauth2/v2.0/token",
    ) -> AzureOpenAI:
        pool = HttpClientPool(transport=httpx.MockTransport(handler))
        pools.append(pool)
        return cls(ProviderContext("azure", pool, endpoint, token_url))

    return make


def secret(base: Secret, **fields: str) -> Secret:
    names = ("endpoint", "api_key", "tenant_id", "client_id", "client_secret")
    merged = {name: value for name in names if (value := base.get(name))}
    merged.update(fields)
    return Secret({k: v for k, v in merged.items() if v})


def sse(*events: Any) -> bytes:
    return (
        "".join(f"data: {json.dumps(e)}\n\n" for e in [*events, "[DONE]"])
        .encode()
        .replace(b'data: "[DONE]"', b"data: [DONE]")
    )


def chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta, "finish_reason": finish, **extra}
    return {"id": "c1", "object": "chat.completion.chunk", "choices": [choice]}


def azure_error(status: int, body: dict[str, Any], **headers: str) -> Handler:
    return lambda r: httpx.Response(status, json=body, headers=headers)


# -- where calls go ------------------------------------------------------------------


async def test_dated_form_puts_the_deployment_in_the_path(adapter: Make) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=OK_CHAT))
    result = await adapter(rec).chat(REQUEST, KEY)
    assert result.message.content == "yo" and result.finish_reason == "stop"
    sent = rec.requests[0]
    assert sent.url.path == "/openai/deployments/gpt-4o-prod/chat/completions"
    assert parse_qs(sent.url.query.decode()) == {"api-version": ["2024-10-21"]}
    assert sent.headers["api-key"] == API_KEY
    assert "authorization" not in sent.headers
    # The path names the deployment; the limit goes under the name o-series accept.
    assert "model" not in rec.body
    assert rec.body["max_completion_tokens"] == 16 and "max_tokens" not in rec.body
    assert rec.body["temperature"] == 0.5


async def test_deployment_names_are_quoted_and_the_credential_may_name_one(
    adapter: Make,
) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=OK_CHAT))
    odd = ChatRequest(model="my dep/../x?y", messages=REQUEST.messages)
    await adapter(rec).chat(odd, KEY)
    assert rec.requests[0].url.raw_path.startswith(
        b"/openai/deployments/my%20dep%2F..%2Fx%3Fy/chat/completions?"
    )
    await adapter(rec).chat(REQUEST, secret(KEY, deployment="fixed-dep"))
    assert rec.requests[1].url.path == "/openai/deployments/fixed-dep/chat/completions"


async def test_older_api_versions_get_max_tokens(adapter: Make) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=OK_CHAT))
    await adapter(rec).chat(REQUEST, secret(KEY, api_version="2024-06-01"))
    assert parse_qs(rec.requests[0].url.query.decode()) == {"api-version": ["2024-06-01"]}
    assert rec.body["max_tokens"] == 16 and "max_completion_tokens" not in rec.body


async def test_v1_form_sends_the_deployment_as_model(adapter: Make) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=OK_CHAT))
    await adapter(rec).chat(REQUEST, secret(KEY, api_version="v1"))
    sent = rec.requests[0]
    assert str(sent.url) == f"{ENDPOINT}/openai/v1/chat/completions"
    assert rec.body["model"] == "gpt-4o-prod"
    assert rec.body["max_completion_tokens"] == 16
    # The Foundry spec takes the v1 form without being told.
    await adapter(rec, cls=AzureFoundry).chat(REQUEST, KEY)
    assert str(rec.requests[1].url) == f"{ENDPOINT}/openai/v1/chat/completions"


@pytest.mark.parametrize(
    ("endpoint", "version", "url"),
    [
        (f"{ENDPOINT}/", None, f"{ENDPOINT}/openai/deployments/gpt-4o-prod/chat/completions"),
        (
            f"{ENDPOINT}/openai/",
            None,
            f"{ENDPOINT}/openai/deployments/gpt-4o-prod/chat/completions",
        ),
        (f"{ENDPOINT}/openai/v1/", None, f"{ENDPOINT}/openai/v1/chat/completions"),
        (f"{ENDPOINT}/openai/v1", "v1", f"{ENDPOINT}/openai/v1/chat/completions"),
        (
            "https://proxy.test/aoai/",
            None,
            "https://proxy.test/aoai/openai/deployments/gpt-4o-prod/chat/completions",
        ),
    ],
)
async def test_endpoint_spellings(
    adapter: Make, endpoint: str, version: str | None, url: str
) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=OK_CHAT))
    fields = {"endpoint": endpoint, "api_key": API_KEY}
    if version:
        fields["api_version"] = version
    await adapter(rec).chat(REQUEST, Secret(fields))
    assert str(rec.requests[0].url).split("?")[0] == url


async def test_endpoint_from_base_url_or_the_operator(adapter: Make) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=OK_CHAT))
    await adapter(rec).chat(REQUEST, Secret({"base_url": "https://b.test", "api_key": API_KEY}))
    await adapter(rec, endpoint="https://op.test").chat(REQUEST, Secret({"api_key": API_KEY}))
    # The credential's own endpoint wins over the operator's.
    await adapter(rec, endpoint="https://op.test").chat(REQUEST, KEY)
    assert [r.url.host for r in rec.requests] == ["b.test", "op.test", "myres.openai.azure.com"]


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"api_key": API_KEY}, "no endpoint"),
        ({"endpoint": ENDPOINT, "api_key": API_KEY, "api_version": "latest"}, "api_version"),
        (
            {"endpoint": f"{ENDPOINT}/openai/v1", "api_key": API_KEY, "api_version": "2024-10-21"},
            "v1",
        ),
        ({"endpoint": ENDPOINT}, "api_key, or tenant_id, client_id and client_secret"),
        ({"endpoint": ENDPOINT, "tenant_id": "t", "client_id": "c"}, "lacks client_secret"),
        (
            {"endpoint": ENDPOINT, "api_key": API_KEY, "client_secret": CLIENT_SECRET},
            "both api_key and Entra ID",
        ),
        ({"endpoint": ENDPOINT, "api_key": "bad\nkey"}, "not a valid header"),
    ],
)
async def test_unusable_credentials_are_bad_requests(
    adapter: Make, fields: dict[str, str], words: str
) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json=OK_CHAT))
    azure = adapter(rec)
    with pytest.raises(BadRequest, match=words) as info:
        await azure.chat(REQUEST, Secret(fields))
    assert info.value.message.startswith("azure:")
    # A stream fails where it is consumed, not where it is made.
    stream = azure.stream_chat(REQUEST, Secret(fields))
    with pytest.raises(BadRequest, match=words):
        await collect(stream)
    assert rec.requests == []
    for value in (API_KEY, CLIENT_SECRET):
        assert value not in info.value.message


async def test_embeddings_mapping(adapter: Make) -> None:
    row = base64.b64encode(struct.pack("<3f", 0.5, -1.0, 2.0)).decode()
    payload = {
        "data": [{"index": 1, "embedding": row}, {"index": 0, "embedding": [1.0, 2.0, 3.0]}],
        "usage": {"prompt_tokens": 5, "total_tokens": 5},
    }
    rec = Recorder(lambda r: httpx.Response(200, json=payload))
    req = EmbedRequest(model="embed-dep", inputs=["a", "b"], input_type="query", dimensions=3)
    result = await adapter(rec).embed(req, KEY)
    assert rec.requests[0].url.path == "/openai/deployments/embed-dep/embeddings"
    assert rec.body == {
        "input": ["a", "b"],
        "encoding_format": "base64",
        "dimensions": 3,
        "input_type": "query",
    }
    assert (result.count, result.dims, result.usage.input_tokens) == (2, 3, 5)
    assert result.data[:12] == struct.pack("<3f", 1.0, 2.0, 3.0)
    await adapter(rec).embed(
        EmbedRequest(model="embed-dep", inputs=["a", "b"]), secret(KEY, api_version="v1")
    )
    assert str(rec.requests[1].url) == f"{ENDPOINT}/openai/v1/embeddings"
    assert rec.body == {"input": ["a", "b"], "encoding_format": "base64", "model": "embed-dep"}


# -- verify --------------------------------------------------------------------------


async def test_verify_lists_models(adapter: Make) -> None:
    rec = Recorder(lambda r: httpx.Response(200, json={"data": [{"id": "a"}, {"id": "b"}]}))
    result = await adapter(rec).verify(KEY)
    assert result.ok and result.detail == "2 models visible"
    assert rec.requests[0].url.path == "/openai/models"
    assert parse_qs(rec.requests[0].url.query.decode()) == {"api-version": ["2024-10-21"]}
    await adapter(rec).verify(secret(KEY, api_version="v1"))
    assert str(rec.requests[1].url) == f"{ENDPOINT}/openai/v1/models"


async def test_verify_tells_a_wrong_key_from_a_wrong_endpoint(adapter: Make) -> None:
    refused = {
        "error": {
            "code": "401",
            "message": "Access denied due to invalid subscription key or wrong API endpoint.",
        }
    }
    bad = await adapter(azure_error(401, refused)).verify(KEY)
    assert not bad.ok and "invalid subscription key" in bad.detail
    missing = {"error": {"code": "404", "message": "Resource not found"}}
    with pytest.raises(NotFound) as info:
        await adapter(azure_error(404, missing)).verify(secret(KEY, api_version="2023-01-01"))
    assert "Resource not found" in info.value.message
    assert "api-version 2023-01-01" in info.value.message

    def unreachable(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("name or service not known")

    with pytest.raises(ProviderUnavailable):
        await adapter(unreachable).verify(KEY)


async def test_a_missing_deployment_says_which(adapter: Make) -> None:
    body = {
        "error": {"code": "DeploymentNotFound", "message": "The API deployment does not exist."}
    }
    azure = adapter(azure_error(404, body, **{"apim-request-id": "apim-1"}))
    for call in (azure.chat(REQUEST, KEY), collect(azure.stream_chat(REQUEST, KEY))):
        with pytest.raises(NotFound) as info:
            await call
        error = info.value
        assert "DeploymentNotFound" in error.message
        assert "deployment 'gpt-4o-prod'" in error.message and "2024-10-21" in error.message
        assert (error.provider_status, error.provider_request_id) == (404, "apim-1")
        assert not error.retryable


# -- Entra ID ------------------------------------------------------------------------


class Entra:
    """A fake tenant: a token endpoint and an API accepting the tokens it issued."""

    def __init__(self, *, refuse_first: int = 0) -> None:
        self.issued: list[str] = []
        self.forms: list[dict[str, list[str]]] = []
        self.token_urls: list[str] = []
        self.api_calls: list[httpx.Request] = []
        self.api_auth: list[str] = []  # as sent: httpx reuses the request for a retry
        self.refuse_first = refuse_first  # API answers 401 to this many valid tokens

    def __call__(self, request: httpx.Request) -> httpx.Response:
        if request.url.host != "myres.openai.azure.com":
            return self._token(request)
        self.api_calls.append(request)
        self.api_auth.append(request.headers.get("authorization", ""))
        token = request.headers.get("authorization", "").removeprefix("Bearer ")
        if token not in self.issued or self.refuse_first > 0:
            self.refuse_first -= 1
            return httpx.Response(401, json={"statusCode": 401, "message": "Unauthorized."})
        return httpx.Response(200, json=OK_CHAT)

    def _token(self, request: httpx.Request) -> httpx.Response:
        self.token_urls.append(str(request.url))
        form = parse_qs(request.content.decode())
        self.forms.append(form)
        if form.get("client_secret") != [CLIENT_SECRET]:
            description = (
                "AADSTS7000215: Invalid client secret provided. Ensure the secret being sent "
                f"is the client secret value, not the ID ({form.get('client_secret')})."
            )
            return httpx.Response(
                401, json={"error": "invalid_client", "error_description": description}
            )
        token = f"token-{len(self.issued)}"
        self.issued.append(token)
        return httpx.Response(
            200, json={"token_type": "Bearer", "expires_in": 3599, "access_token": token}
        )


async def test_one_token_serves_many_requests(adapter: Make) -> None:
    tenant = Entra()
    azure = adapter(tenant)
    await asyncio.gather(*(azure.chat(REQUEST, ENTRA) for _ in range(5)))
    await azure.chat(REQUEST, ENTRA)
    assert tenant.issued == ["token-0"]
    assert tenant.token_urls == [f"https://{TOKEN_HOST}/contoso.onmicrosoft.com/oauth2/v2.0/token"]
    assert tenant.forms[0] == {
        "grant_type": ["client_credentials"],
        "client_id": ["app-1234"],
        "client_secret": [CLIENT_SECRET],
        "scope": [ENTRA_SCOPE],
    }
    assert set(tenant.api_auth) == {"Bearer token-0"}
    assert all("api-key" not in r.headers for r in tenant.api_calls)


async def test_a_refused_token_is_refreshed_once(adapter: Make) -> None:
    tenant = Entra(refuse_first=1)
    azure = adapter(tenant)
    result = await azure.chat(REQUEST, ENTRA)
    assert result.message.content == "yo"
    assert tenant.issued == ["token-0", "token-1"]
    assert tenant.api_auth == [
        "Bearer token-0",
        "Bearer token-1",
    ]
    # Refused again after the refresh: the 401 is the answer, not a loop.
    tenant.refuse_first = 5
    with pytest.raises(Unauthorized):
        await azure.chat(REQUEST, ENTRA)
    assert len(tenant.issued) == 3 and len(tenant.api_calls) == 4


async def test_a_refused_client_secret_is_unauthorized_and_never_shown(adapter: Make) -> None:
    wrong = "entra-wrong-secret-1122334455"
    azure = adapter(Entra())
    bad = secret(ENTRA, client_secret=wrong)
    for call in (azure.chat(REQUEST, bad), collect(azure.stream_chat(REQUEST, bad))):
        with pytest.raises(Unauthorized) as info:
            await call
        assert "AADSTS7000215" in info.value.message and "token endpoint" in info.value.message
        assert wrong not in info.value.message and CLIENT_SECRET not in info.value.message
    result = await azure.verify(bad)
    assert not result.ok and "invalid_client" in result.detail and wrong not in result.detail


async def test_token_url_from_the_credential_then_the_operator_then_entra(
    adapter: Make,
) -> None:
    tenant = Entra()
    await adapter(tenant).chat(REQUEST, secret(ENTRA, token_url="https://own.test/tok"))
    await adapter(tenant, token_url=None).chat(REQUEST, ENTRA)
    await adapter(tenant, token_url=SPECS[0].default_token_url).chat(
        REQUEST, secret(ENTRA, scope="https://ai.azure.com/.default")
    )
    entra = "https://login.microsoftonline.com/contoso.onmicrosoft.com/oauth2/v2.0/token"
    assert tenant.token_urls == ["https://own.test/tok", entra, entra]
    assert tenant.forms[2]["scope"] == ["https://ai.azure.com/.default"]


async def test_tenant_is_one_path_segment(adapter: Make) -> None:
    tenant = Entra()
    await adapter(tenant).chat(REQUEST, secret(ENTRA, tenant_id="../evil?x"))
    assert tenant.token_urls == [f"https://{TOKEN_HOST}/..%2Fevil%3Fx/oauth2/v2.0/token"]


# -- content filters -----------------------------------------------------------------


def prompt_blocked(inner_name: str, results_name: str, results: dict[str, Any]) -> dict[str, Any]:
    return {
        "error": {
            "message": "The response was filtered due to the prompt triggering Azure OpenAI's "
            "content management policy.",
            "type": None,
            "param": "prompt",
            "code": "content_filter",
            "status": 400,
            inner_name: {"code": "ResponsibleAIPolicyViolation", results_name: results},
        }
    }


VERDICT = {
    "hate": {"filtered": True, "severity": "medium"},
    "jailbreak": {"filtered": False, "detected": False},
    "self_harm": SAFE,
    "violence": {"filtered": True, "severity": "high"},
}


@pytest.mark.parametrize(
    ("inner", "results"),
    [("innererror", "content_filter_result"), ("inner_error", "content_filter_results")],
)
async def test_a_blocked_prompt_names_its_categories(
    adapter: Make, inner: str, results: str
) -> None:
    azure = adapter(azure_error(400, prompt_blocked(inner, results, VERDICT)))
    for call in (azure.chat(REQUEST, KEY), collect(azure.stream_chat(REQUEST, KEY))):
        with pytest.raises(ContentFiltered) as info:
            await call
        assert info.value.message == (
            "azure: HTTP 400 content_filter: blocked by Azure's content filter: "
            "hate (medium), violence (high)"
        )
        assert info.value.provider_status == 400 and not info.value.retryable


def test_category_words() -> None:
    assert filtered_categories(
        {
            "jailbreak": {"filtered": True, "detected": True},
            "custom_blocklists": {
                "filtered": True,
                "details": [{"filtered": True, "id": "words"}, {"filtered": False, "id": "x"}],
            },
            "profanity": [{"filtered": True, "id": "older-list"}],
            "protected_material_code": {"filtered": True, "detected": True, "citation": {}},
            "sexual": SAFE,
            "error": {"code": "x", "message": "y"},
        }
    ) == [
        "jailbreak (detected)",
        "custom_blocklists (words)",
        "profanity (older-list)",
        "protected_material_code (detected)",
    ]
    assert filtered_categories(None) == []


async def test_a_filtered_answer_names_its_categories(adapter: Make) -> None:
    stopped = {
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "partial"},
                "finish_reason": "content_filter",
                "content_filter_results": {"sexual": {"filtered": True, "severity": "high"}},
            }
        ]
    }
    with pytest.raises(
        ContentFiltered, match=r"stopped by Azure's content filter: sexual \(high\)"
    ):
        await adapter(lambda r: httpx.Response(200, json=stopped)).chat(REQUEST, KEY)


async def test_a_filtered_stream_names_its_categories(adapter: Make) -> None:
    body = sse(
        {"choices": [], "id": "", "model": "", "prompt_filter_results": [{"prompt_index": 0}]},
        chunk({"role": "assistant", "content": ""}, content_filter_results={}),
        chunk({"content": "Hal"}, content_filter_results={"hate": SAFE}),
        chunk(
            {},
            "content_filter",
            content_filter_results={"violence": {"filtered": True, "severity": "high"}},
        ),
    )
    got = []
    with pytest.raises(ContentFiltered, match=r"content filter: violence \(high\)"):
        async for event in adapter(lambda r: stream_response(body)).stream_chat(REQUEST, KEY):
            got.append(event)
    assert got == [TextDelta("Hal")]


async def test_an_annotation_before_the_filtered_finish_names_the_categories(
    adapter: Make,
) -> None:
    # Asynchronous filter mode: the verdict may come in an annotation chunk of its own.
    annotation = chunk(
        {},
        content_filter_results={"protected_material_text": {"filtered": True, "detected": True}},
        content_filter_offsets={"check_offset": 0, "start_offset": 0, "end_offset": 9},
    )
    del annotation["choices"][0]["delta"]
    body = sse(chunk({"content": "text"}), annotation, chunk({}, "content_filter"))
    with pytest.raises(ContentFiltered, match=r"protected_material_text \(detected\)"):
        await collect(adapter(lambda r: stream_response(body)).stream_chat(REQUEST, KEY))


async def test_filter_verdicts_on_every_chunk_are_taken_in_stride(adapter: Make) -> None:
    verdict = {"hate": SAFE, "violence": SAFE}
    body = sse(
        {
            "choices": [],
            "created": 0,
            "id": "",
            "model": "",
            "object": "",
            "prompt_filter_results": [{"prompt_index": 0, "content_filter_results": verdict}],
        },
        chunk({"role": "assistant", "content": ""}, content_filter_results={}),
        chunk({"content": "Hallo"}, content_filter_results=verdict),
        chunk({"content": " Welt"}, content_filter_results=verdict),
        chunk({}, "stop", content_filter_results={}),
        {"choices": [], "id": "c1", "usage": {"prompt_tokens": 4, "completion_tokens": 2}},
    )
    events = await collect(adapter(lambda r: stream_response(body)).stream_chat(REQUEST, KEY))
    assert events[:-1] == [TextDelta("Hallo"), TextDelta(" Welt")]
    end = events[-1]
    assert isinstance(end, StreamEnd) and end.finish_reason == "stop"
    assert (end.usage.input_tokens, end.usage.output_tokens, end.usage.total_tokens) == (4, 2, 6)


# -- errors --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("status", "body", "headers", "cls", "retry_after"),
    [
        (
            429,
            {"error": {"code": "429", "message": "Requests ... Please retry after 6 seconds."}},
            {"retry-after": "6", "retry-after-ms": "5500", "apim-request-id": "apim-9"},
            RateLimited,
            5.5,
        ),
        (429, {"error": {"code": "429", "message": "x"}}, {"retry-after": "6"}, RateLimited, 6.0),
        (
            429,
            {"error": {"code": "insufficient_quota", "message": "quota"}},
            {"retry-after": "60"},
            QuotaExceeded,
            None,
        ),
        (
            401,
            {"statusCode": 401, "message": "Unauthorized. Access token is missing"},
            {},
            Unauthorized,
            None,
        ),
        (403, {"error": {"code": "PermissionDenied", "message": "no"}}, {}, FleetError, None),
        (
            503,
            {"error": {"code": "ServiceUnavailable", "message": "busy"}},
            {"retry-after": "2"},
            ProviderUnavailable,
            2.0,
        ),
        (
            500,
            {"error": {"message": "oops", "type": "server_error", "code": None}},
            {},
            ProviderUnavailable,
            None,
        ),
    ],
)
async def test_error_classes_and_retry_signals(
    adapter: Make,
    status: int,
    body: dict[str, Any],
    headers: dict[str, str],
    cls: type[FleetError],
    retry_after: float | None,
) -> None:
    with pytest.raises(cls) as info:
        await adapter(azure_error(status, body, **headers)).chat(REQUEST, KEY)
    error = info.value
    assert error.provider_status == status
    assert error.retry_after == retry_after
    assert error.message.startswith("azure: ")
    if "apim-request-id" in headers:
        assert error.provider_request_id == "apim-9"


async def test_in_stream_errors_use_azures_codes(adapter: Make) -> None:
    body = sse(chunk({"content": "a"}), {"error": {"code": "429", "message": "slow down"}})
    with pytest.raises(RateLimited, match="azure: stream error 429: slow down"):
        await collect(adapter(lambda r: stream_response(body)).stream_chat(REQUEST, KEY))
    filtered = sse(
        {"error": prompt_blocked("innererror", "content_filter_result", VERDICT)["error"]}
    )
    with pytest.raises(ContentFiltered, match=r"stream error content_filter: .*hate \(medium\)"):
        await collect(adapter(lambda r: stream_response(filtered)).stream_chat(REQUEST, KEY))


async def test_keys_never_appear_in_errors(adapter: Make) -> None:
    echo = {"error": {"code": "401", "message": f"bad key {API_KEY} and {CLIENT_SECRET}"}}
    with pytest.raises(Unauthorized) as info:
        await adapter(azure_error(401, echo)).chat(REQUEST, KEY)
    assert API_KEY not in info.value.message
    # The rest of a credential is not secret: a message naming it stays readable.
    named = {"error": {"code": "400", "message": "api-version 2024-10-21 on gpt-4o-prod"}}
    with pytest.raises(BadRequest, match="api-version 2024-10-21 on gpt-4o-prod"):
        await adapter(azure_error(400, named)).chat(REQUEST, secret(KEY, api_version="2024-10-21"))


def test_specs() -> None:
    names = [spec.name for spec in SPECS]
    assert names == ["azure", "azure-foundry", "azure-mock"]
    assert SPECS[0].default_base_url is None and SPECS[1].default_base_url is None
    for field in ("endpoint", "api_version", "deployment", "api_key", "tenant_id", "client_secret"):
        assert field in SPECS[0].credential_fields
