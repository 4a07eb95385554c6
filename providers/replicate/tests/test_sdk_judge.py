"""The official `replicate` SDK judges the mock: every prediction, stream and account
must parse with the SDK's own models, and every fault must be the SDK's typed error
(`ReplicateError` with the problem's status and title; `ModelError` for a prediction
that failed).

The SDK's transport retries GETs on 429/503/504, so faults are put on creates.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from replicate.account import Account
from replicate.client import Client
from replicate.exceptions import ModelError, ReplicateError
from replicate.prediction import Prediction
from replicate.stream import ServerSentEvent

from providers.core.testing import Serve
from providers.mock.server import RunningMock

KEY = "mock-key"
MODEL = "mock-owner/mock-model"
ASK: dict[str, Any] = {"prompt": "Say hello to the fleet", "max_tokens": 5}
# 64 tokens at 20 a second after 100 ms: over three seconds.
SLOW: dict[str, Any] = {"ttft_ms": 100, "tokens_per_sec": 20}


_CLIENTS: list[Client] = []


def sdk(mock: RunningMock, **headers: str) -> Client:
    client = Client(api_token=KEY, base_url=mock.sdk_url("replicate"), headers=headers)
    client.poll_interval = 0.05
    _CLIENTS.append(client)
    return client


@pytest.fixture(autouse=True)
async def _close_clients() -> AsyncIterator[None]:
    yield
    while _CLIENTS:
        await _CLIENTS.pop()._async_client.aclose()


@pytest.fixture
async def mock(serve: Serve) -> RunningMock:
    return await serve()


@pytest.fixture
async def slow(serve: Serve) -> RunningMock:
    return await serve(**SLOW)


def status_of(prediction: Prediction) -> str:
    """The status as it is now (mypy keeps the one an earlier assert narrowed)."""
    return str(prediction.status)


def text(output: Any) -> str:
    assert isinstance(output, list) and all(isinstance(piece, str) for piece in output)
    return "".join(output)


# -- running ---------------------------------------------------------------------------


async def test_run_with_wait(mock: RunningMock) -> None:
    output = await sdk(mock).async_run(MODEL, input=ASK)
    assert len(text(output).split()) == 5


async def test_run_polls_when_the_wait_runs_out(slow: RunningMock) -> None:
    output = await sdk(slow).async_run(MODEL, input={"prompt": "Say more"}, wait=1)
    assert len(text(output).split()) == 64


async def test_create_wait_and_reload(slow: RunningMock) -> None:
    client = sdk(slow)
    prediction = await client.predictions.async_create(version="mock-model", input=ASK)
    assert isinstance(prediction, Prediction)
    assert prediction.status == "starting", prediction.status
    await prediction.async_wait()
    assert status_of(prediction) == "succeeded"
    assert prediction.metrics is not None and prediction.metrics["output_token_count"] == 5
    await prediction.async_reload()
    assert status_of(prediction) == "succeeded" and len(text(prediction.output).split()) == 5
    assert prediction.completed_at and prediction.urls and prediction.urls["stream"]
    by_model = await client.models.predictions.async_create(model=MODEL, input=ASK, wait=5)
    assert by_model.status == "succeeded"
    assert by_model.output == prediction.output  # the text depends on the prompt only


async def test_stream(mock: RunningMock) -> None:
    client = sdk(mock)
    events: list[ServerSentEvent] = [e async for e in await client.async_stream(MODEL, input=ASK)]
    kinds = [e.event for e in events]
    assert kinds == [ServerSentEvent.EventType.OUTPUT] * 5 + [ServerSentEvent.EventType.DONE]
    streamed = "".join(str(e) for e in events)
    whole = await client.async_run(MODEL, input=ASK)
    assert streamed == text(whole)


async def test_prediction_stream_after_create(slow: RunningMock) -> None:
    prediction = await sdk(slow).predictions.async_create(version="mock-model", input=ASK)
    pieces = [str(e) async for e in prediction.async_stream()]
    assert len("".join(pieces).split()) == 5


async def test_cancel(slow: RunningMock) -> None:
    client = sdk(slow)
    prediction = await client.predictions.async_create(version="mock-model", input={"prompt": "x"})
    canceled = await client.predictions.async_cancel(prediction.id)
    assert canceled.status == "canceled" and canceled.completed_at
    other = await client.predictions.async_create(version="mock-model", input={"prompt": "y"})
    await other.async_cancel()
    assert other.status == "canceled"
    await other.async_wait()  # a canceled prediction is finished


async def test_account(mock: RunningMock) -> None:
    account = await sdk(mock).accounts.async_current()
    assert isinstance(account, Account)
    assert (account.type, account.username, account.name) == ("user", "mock-user", "Mock User")


# -- failures --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec", "status", "title"),
    [
        ("400", 400, "Bad request"),
        ("401", 401, "Unauthenticated"),
        ("403", 403, "Forbidden"),
        ("404", 404, "Not found"),
        ("429:retry-after=2", 429, "Request was throttled"),
        ("quota", 402, "Insufficient credit"),
        ("context", 422, "Input validation failed"),
        ("overloaded", 503, "Service unavailable"),
        ("500", 500, "Internal server error"),
        ("502", 502, "Bad gateway"),
        ("503", 503, "Service unavailable"),
        ("504", 504, "Gateway timeout"),
    ],
)
@pytest.mark.parametrize("how", ["run", "stream"])
async def test_every_fault_is_a_replicate_error(
    mock: RunningMock, spec: str, status: int, title: str, how: str
) -> None:
    client = sdk(mock, **{"x-mock-fault": spec})
    with pytest.raises(ReplicateError) as info:
        if how == "run":
            await client.async_run(MODEL, input=ASK)
        else:
            [e async for e in await client.async_stream(MODEL, input=ASK)]
    error = info.value
    assert (error.status, error.title) == (status, title)
    assert error.detail and error.type and error.type.startswith("https://replicate.com/docs/")


async def test_throttling_carries_retry_after(mock: RunningMock) -> None:
    async with httpx.AsyncClient(headers={"Authorization": f"Bearer {KEY}"}) as http:
        response = await http.post(
            f"{mock.url('replicate')}/models/{MODEL}/predictions",
            json={"input": ASK},
            headers={"x-mock-fault": "429:retry-after=2"},
        )
    error = ReplicateError.from_response(response)
    assert error.status == 429 and response.headers["retry-after"] == "2"


async def test_wrong_token_unknown_model_and_unknown_routes(mock: RunningMock) -> None:
    wrong = Client(api_token="r8_wrong", base_url=mock.sdk_url("replicate"))
    _CLIENTS.append(wrong)
    with pytest.raises(ReplicateError) as bad_key:
        await wrong.accounts.async_current()
    assert (bad_key.value.status, bad_key.value.title) == (401, "Unauthenticated")
    client = sdk(mock)
    with pytest.raises(ReplicateError) as no_model:
        await client.async_run("nobody/no-such-model", input=ASK)
    assert no_model.value.status == 404
    with pytest.raises(ReplicateError) as no_version:
        await client.predictions.async_create(version="no-such-version", input=ASK)
    assert (no_version.value.status, no_version.value.title) == (
        422,
        "Invalid version or not permitted",
    )
    with pytest.raises(ReplicateError) as no_route:
        await client._async_request("POST", "/v1/nope")
    assert (no_route.value.status, no_route.value.title) == (404, "Not found")


@pytest.mark.parametrize("spec", ["stream-error-after:2", "stream-error-after:0:403"])
async def test_a_failed_prediction_is_a_model_error(mock: RunningMock, spec: str) -> None:
    client = sdk(mock, **{"x-mock-fault": spec})
    with pytest.raises(ModelError) as info:
        await client.async_run(MODEL, input=ASK)
    failed = info.value.prediction
    assert failed.status == "failed" and failed.error
    assert len(failed.output or []) == int(spec.split(":")[1])


async def test_an_in_stream_error_is_raised_while_iterating(mock: RunningMock) -> None:
    client = sdk(mock, **{"x-mock-fault": "stream-error-after:2:429"})
    pieces: list[str] = []
    with pytest.raises(RuntimeError) as info:
        async for event in await client.async_stream(MODEL, input=ASK):
            pieces.append(str(event))
    assert len(pieces) == 2
    data = json.loads(str(info.value))
    assert data["detail"] and (data["status"], data["title"]) == (429, "Request was throttled")


async def test_a_dropped_create_is_a_transport_error(mock: RunningMock) -> None:
    with pytest.raises(httpx.TransportError):
        await sdk(mock, **{"x-mock-fault": "drop-after:0"}).async_run(MODEL, input=ASK)


async def test_the_rate_limiter_is_a_replicate_error(serve: Serve) -> None:
    limited = await serve(requests_per_minute=1)
    client = sdk(limited)
    await client.async_run(MODEL, input=ASK)
    with pytest.raises(ReplicateError) as info:
        await client.async_run(MODEL, input=ASK)
    assert (info.value.status, info.value.title) == (429, "Request was throttled")
