"""The Replicate mock's own behaviour over real HTTP: auth, the prediction timeline,
`Prefer: wait`, cancel, the output stream, validation, limits and faults."""

from __future__ import annotations

import asyncio
import re
from typing import Any

import httpx
import pytest

from providers.core.testing import Serve
from providers.mock.server import RunningMock

AUTH = {"Authorization": "Bearer mock-key"}
ASK: dict[str, Any] = {"input": {"prompt": "Say hello to the fleet", "max_tokens": 6}}
MODEL = "/models/mock-owner/mock-model/predictions"


def client(mock: RunningMock, headers: dict[str, str] | None = None) -> httpx.AsyncClient:
    return httpx.AsyncClient(
        base_url=mock.url("replicate"), headers=AUTH if headers is None else headers
    )


def problem(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"].startswith("application/problem+json")
    body: dict[str, Any] = response.json()
    assert body["status"] == response.status_code
    assert body["type"].startswith("https://replicate.com/docs/")
    return body


def events(raw: str) -> list[tuple[str, str, str]]:
    """(event, id, data) of each event, data lines joined as the SSE spec says."""
    out = []
    for block in raw.strip("\n").split("\n\n"):
        fields: dict[str, list[str]] = {}
        for line in block.split("\n"):
            name, _, value = line.partition(": ")
            fields.setdefault(name, []).append(value)
        out.append((fields["event"][0], fields["id"][0], "\n".join(fields["data"])))
    return out


async def test_tokens_are_required(serve: Serve) -> None:
    mock = await serve()
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic mock-key"}):
        async with client(mock, headers) as http:
            response = await http.get("/account")
        assert response.status_code == 401
        assert problem(response)["title"] == "Unauthenticated"
    async with client(mock, {"Authorization": "Token mock-key"}) as http:
        assert (await http.get("/account")).json()["username"] == "mock-user"


async def test_create_then_read(serve: Serve) -> None:
    mock = await serve()
    async with client(mock) as http:
        created = await http.post(MODEL, json=ASK)
        assert created.status_code == 201
        body = created.json()
        assert body["status"] == "starting" and body["output"] is None
        assert re.fullmatch(r"[a-z2-7]{26}", body["id"])
        assert re.fullmatch(r"[0-9a-f]{64}", body["version"])
        assert body["model"] == "mock-owner/mock-model"
        assert set(body["urls"]) == {"get", "cancel", "stream", "web"}
        assert body["urls"]["get"] == f"{mock.url('replicate')}/predictions/{body['id']}"
        read = (await http.get(f"/predictions/{body['id']}")).json()
    assert read["status"] == "succeeded"
    assert len(read["output"]) == 6 and all(isinstance(p, str) for p in read["output"])
    assert read["metrics"]["output_token_count"] == 6
    assert read["metrics"]["input_token_count"] == 5
    assert read["completed_at"] and read["started_at"]


async def test_prefer_wait_holds_until_finished_or_answers_starting(serve: Serve) -> None:
    mock = await serve(ttft_ms=100, tokens_per_sec=20)
    async with client(mock) as http:
        quick = await http.post(MODEL, json=ASK, headers={"Prefer": "wait=5"})
        assert quick.json()["status"] == "succeeded"  # 6 tokens: about 0.35 s
        long = {"input": {"prompt": "Say more"}}  # 64 tokens: over 3 s
        held = await http.post(MODEL, json=long, headers={"Prefer": "wait=1"})
        body = held.json()
        assert body["status"] == "starting" and body["output"] is None
        later = (await http.get(f"/predictions/{body['id']}")).json()
    assert later["status"] == "processing"
    assert 0 < len(later["output"]) < 64


async def test_the_timeline_starts_processes_and_succeeds(serve: Serve) -> None:
    mock = await serve(ttft_ms=200, tokens_per_sec=50)
    async with client(mock) as http:
        pid = (await http.post(MODEL, json=ASK)).json()["id"]
        seen = [(await http.get(f"/predictions/{pid}")).json()["status"]]
        while seen[-1] != "succeeded":
            await asyncio.sleep(0.03)
            seen.append((await http.get(f"/predictions/{pid}")).json()["status"])
    assert seen[0] == "starting"
    assert "processing" in seen


async def test_cancel_stops_a_running_prediction(serve: Serve) -> None:
    mock = await serve(ttft_ms=50, tokens_per_sec=20)
    async with client(mock) as http:
        pid = (await http.post(MODEL, json={"input": {"prompt": "long"}})).json()["id"]
        await asyncio.sleep(0.2)
        canceled = (await http.post(f"/predictions/{pid}/cancel")).json()
        assert canceled["status"] == "canceled"
        await asyncio.sleep(0.2)
        again = (await http.post(f"/predictions/{pid}/cancel")).json()
        view = (await http.get(f"{mock.root}/replicate/_mock/predictions")).json()
    assert again["output"] == canceled["output"]  # frozen where it was
    assert view == {"cancels": 1, "statuses": {"canceled": 1}}


async def test_predictions_belong_to_their_token(serve: Serve) -> None:
    mock = await serve(accept_any_key=True)
    async with client(mock) as http:
        pid = (await http.post(MODEL, json=ASK)).json()["id"]
    async with client(mock, {"Authorization": "Bearer someone-else"}) as other:
        response = await other.get(f"/predictions/{pid}")
    assert response.status_code == 404 and problem(response)["title"] == "Not found"


async def test_the_stream_sends_plain_text_events(serve: Serve) -> None:
    mock = await serve()
    async with client(mock) as http:
        body = (await http.post(MODEL, json={**ASK, "stream": True})).json()
        response = await http.get(body["urls"]["stream"], headers={"Accept": "text/event-stream"})
        final = (await http.get(f"/predictions/{body['id']}")).json()
    assert response.headers["content-type"] == "text/event-stream"
    got = events(response.text)
    assert [e[0] for e in got] == ["output"] * 6 + ["done"]
    assert "".join(e[2] for e in got[:-1]) == "".join(final["output"])
    assert got[-1][2] == "{}"
    assert len({e[1] for e in got}) == 7  # every event has its own id


async def test_a_stream_of_a_canceled_prediction_says_so(serve: Serve) -> None:
    mock = await serve(tokens_per_sec=20)
    async with client(mock) as http:
        body = (await http.post(MODEL, json={"input": {"prompt": "long"}, "stream": True})).json()

        async def cancel_soon() -> None:
            await asyncio.sleep(0.2)
            await http.post(f"/predictions/{body['id']}/cancel")

        canceling = asyncio.create_task(cancel_soon())
        response = await http.get(body["urls"]["stream"])
        await canceling
    got = events(response.text)
    assert 0 < len(got) - 1 < 64
    assert got[-1][0:3:2] == ("done", '{"reason":"canceled"}')


@pytest.mark.parametrize(
    ("spec", "status", "title", "code"),
    [
        ("stream-error-after:2", 503, "Service unavailable", "E1000"),
        ("stream-error-after:1:403", 403, "Forbidden", None),
    ],
)
async def test_a_failure_fault_fails_the_prediction(
    serve: Serve, spec: str, status: int, title: str, code: str | None
) -> None:
    mock = await serve()
    fault = {"x-mock-fault": spec}
    async with client(mock) as http:
        body = (await http.post(MODEL, json={**ASK, "stream": True}, headers=fault)).json()
        response = await http.get(body["urls"]["stream"])
        final = (await http.get(f"/predictions/{body['id']}")).json()
        whole = await http.post(MODEL, json=ASK, headers={**fault, "Prefer": "wait"})
    got = events(response.text)
    after = int(spec.split(":")[1])
    assert [e[0] for e in got] == ["output"] * after + ["error", "done"]
    error = got[after][2]
    assert f'"status":{status}' in error.replace(" ", "") and title in error
    assert got[-1][2] == '{"reason":"error"}'
    assert final["status"] == "failed" and len(final["output"]) == after
    assert (code in final["error"]) if code else ("(E" not in final["error"])
    assert whole.json()["status"] == "failed"


@pytest.mark.parametrize(
    ("spec", "status", "title"),
    [
        ("400", 400, "Bad request"),
        ("401", 401, "Unauthenticated"),
        ("403", 403, "Forbidden"),
        ("404", 404, "Not found"),
        ("quota", 402, "Insufficient credit"),
        ("context", 422, "Input validation failed"),
        ("overloaded", 503, "Service unavailable"),
        ("500", 500, "Internal server error"),
        ("502", 502, "Bad gateway"),
        ("504", 504, "Gateway timeout"),
    ],
)
async def test_error_faults_are_problem_details(
    serve: Serve, spec: str, status: int, title: str
) -> None:
    mock = await serve()
    async with client(mock) as http:
        response = await http.post(MODEL, json=ASK, headers={"x-mock-fault": spec})
    assert response.status_code == status
    body = problem(response)
    assert body["title"] == title and body["detail"]
    if status == 422:
        assert body["invalid_fields"][0]["field"] == "prompt"


@pytest.mark.parametrize(
    ("spec", "header", "body_wait"),
    [("429:retry-after=3", "3", 3), ("429:retry-after-ms=1500", "1.5", 2), ("429", None, None)],
)
async def test_throttling_names_its_wait(
    serve: Serve, spec: str, header: str | None, body_wait: int | None
) -> None:
    mock = await serve()
    async with client(mock) as http:
        response = await http.post(MODEL, json=ASK, headers={"x-mock-fault": spec})
    assert response.status_code == 429
    assert response.headers.get("retry-after") == header
    assert problem(response).get("retry_after") == body_wait


async def test_the_rate_limiter_throttles_creates_only(serve: Serve) -> None:
    mock = await serve(requests_per_minute=1)
    async with client(mock) as http:
        pid = (await http.post(MODEL, json=ASK)).json()["id"]
        assert (await http.get(f"/predictions/{pid}")).status_code == 200
        refused = await http.post(MODEL, json=ASK)
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) >= 1
    assert problem(refused)["retry_after"] == int(refused.headers["retry-after"])


@pytest.mark.parametrize(
    ("path", "body", "status", "title"),
    [
        ("/models/nobody/no-such-model/predictions", ASK, 404, "Not found"),
        (
            "/predictions",
            {**ASK, "version": "no-such-version"},
            422,
            "Invalid version or not permitted",
        ),
        ("/predictions", ASK, 422, "Input validation failed"),
        (MODEL, {"input": {"max_tokens": 3}}, 422, "Input validation failed"),
        (MODEL, {"input": {"prompt": "x", "temperature": "hot"}}, 422, "Input validation failed"),
        (MODEL, {"input": {"prompt": "x", "max_tokens": 0}}, 422, "Input validation failed"),
        (MODEL, {"input": {"prompt": "x " * 130_000}}, 422, "Input validation failed"),
        ("/nope", ASK, 404, "Not found"),
    ],
)
async def test_requests_the_api_refuses(
    serve: Serve, path: str, body: dict[str, Any], status: int, title: str
) -> None:
    mock = await serve()
    async with client(mock) as http:
        response = await http.post(path, json=body)
    assert response.status_code == status
    assert problem(response)["title"] == title


async def test_versions_and_limits_shape_the_answer(serve: Serve) -> None:
    mock = await serve()
    async with client(mock) as http:
        by_version = await http.post(
            "/predictions", json={**ASK, "version": "mock-model"}, headers={"Prefer": "wait"}
        )
        by_model = await http.post(MODEL, json=ASK, headers={"Prefer": "wait"})
        whole = await http.post(
            MODEL, json={"input": {"prompt": ASK["input"]["prompt"]}}, headers={"Prefer": "wait"}
        )
        text = "".join(whole.json()["output"])
        stop = text.split()[3]
        cut = await http.post(
            MODEL,
            json={"input": {"prompt": ASK["input"]["prompt"], "stop_sequences": f"zzz,{stop}"}},
            headers={"Prefer": "wait"},
        )
    assert by_version.json()["output"] == by_model.json()["output"]
    assert by_version.json()["version"] == "mock-model"
    assert len(whole.json()["output"]) == 64
    assert "".join(cut.json()["output"]) == text[: text.index(stop)]
