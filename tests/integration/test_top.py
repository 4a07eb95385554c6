"""`llm-fleet top` against a real worker's /metrics and the real broker."""

from __future__ import annotations

import asyncio
import json
import re
import socket

import httpx
import pytest

from contracts import Unauthorized
from contracts.client import FleetClient
from contracts.jobs import Message
from tests.integration.conftest import RunCli, SpawnWorker, sealed_target
from workers.crypto import Keyring
from workers.top import Scrape, build_frame, queue_depths, scrape_workers

pytestmark = pytest.mark.integration


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def settled(http: httpx.AsyncClient, url: str, jobs: int) -> Scrape:
    """The worker's figures once it counted `jobs` jobs: the producer hears its answer
    a moment before the worker settles the job and counts it."""
    for _ in range(200):
        scrape = (await scrape_workers(http, [url]))[url]
        assert isinstance(scrape, Scrape), scrape
        if sum(scrape.jobs.values()) >= jobs:
            return scrape
        await asyncio.sleep(0.05)
    raise AssertionError(f"the worker never counted {jobs} jobs: {scrape.jobs}")


@pytest.fixture
async def worker_metrics(spawn_worker: SpawnWorker, free_port: int) -> str:
    await spawn_worker(env={"FLEET_HEALTH_PORT": str(free_port)})
    return f"http://127.0.0.1:{free_port}/metrics"


async def test_frame_from_jobs_run_between_two_scrapes(
    worker_metrics: str, client: FleetClient, keyring: Keyring, amqp_url: str
) -> None:
    async with httpx.AsyncClient(timeout=5) as http:
        before = await scrape_workers(http, [worker_metrics])
        target = sealed_target(keyring)
        for _ in range(3):
            async for _event in client.stream_chat(target, [Message(role="user", content="hi")]):
                pass
        with pytest.raises(Unauthorized):
            await client.chat(
                sealed_target(keyring, key="sk-not-a-key-the-mock-knows"),
                [Message(role="user", content="hi")],
            )
        after = {worker_metrics: await settled(http, worker_metrics, 4)}
    frame = build_frame(before, after, await queue_depths(amqp_url), 1.0)

    (row,) = [r for r in frame.models if (r.provider, r.model) == ("mock", "mock-chat")]
    assert row.jobs == 4
    assert row.jobs_per_s > 0
    assert row.error_rate == pytest.approx(0.25)
    assert row.ttft_p50_s is not None and row.ttft_p99_s is not None
    assert 0 < row.ttft_p50_s <= row.ttft_p99_s
    (w,) = frame.workers
    assert (w.up, w.inflight, w.broker_connected) == (True, 0.0, True)
    queues = {q.name: q for q in frame.queues}
    assert list(queues) == ["llm.chat", "llm.embed", "llm.batch", "llm.dead"]
    assert queues["llm.chat"].messages == 0
    assert queues["llm.chat"].consumers == 1
    assert frame.dead_queued == 0


async def test_cli_once_json(
    worker_metrics: str,
    client: FleetClient,
    keyring: Keyring,
    fleet_cli: RunCli,
) -> None:
    await client.chat(sealed_target(keyring), [Message(role="user", content="hi")])
    down = f"http://127.0.0.1:{unused_port()}"
    result = await fleet_cli(
        "top", "--once", "--json", "--every", "0.2", "--worker", worker_metrics, "--worker", down
    )
    assert result.code == 0, result.err
    frame = json.loads(result.out)
    rows = {(r["provider"], r["model"]) for r in frame["models"]}
    assert ("mock", "mock-chat") in rows
    up, gone = frame["workers"]
    assert (up["up"], up["inflight"]) == (True, 0.0)
    assert (gone["url"], gone["up"], gone["error"]) == (down + "/metrics", False, "ConnectError")
    depths = {q["name"]: q["messages"] for q in frame["queues"]}
    assert depths == {"llm.chat": 0, "llm.embed": 0, "llm.batch": 0, "llm.dead": 0}


async def test_cli_text_and_a_broker_that_does_not_answer(
    worker_metrics: str, fleet_cli: RunCli
) -> None:
    result = await fleet_cli(
        "top",
        "--once",
        "--every",
        "0.2",
        env={
            "FLEET_TOP_WORKERS": worker_metrics,
            "AMQP_URL": f"amqp://guest:guest@127.0.0.1:{unused_port()}/",
        },
    )
    assert result.code == 0, result.err
    assert "WORKER" in result.out and worker_metrics in result.out
    assert re.search(r"^llm\.chat +n/a \(broker: AMQPConnectionError\)", result.out, re.M)
    assert result.err == ""  # the frame says it; no log lines over the view
    assert "llm.dead holds n/a" in result.out


async def test_a_queue_that_cannot_be_read_spoils_no_other(amqp_url: str) -> None:
    rows = await queue_depths(amqp_url, ["llm.chat", "llm.no-such-queue", "llm.embed"])
    assert [(q.name, q.messages, q.error) for q in rows] == [
        ("llm.chat", 0, None),
        ("llm.no-such-queue", None, "no such queue"),
        ("llm.embed", 0, None),
    ]


async def test_usage_error_without_workers(fleet_cli: RunCli) -> None:
    result = await fleet_cli("top", "--once", env={"FLEET_TOP_WORKERS": ""})
    assert result.code == 2
    assert "--worker" in result.err
