"""`llm.batch` on slots of its own: a backfill never takes interactive slots, nor
interactive traffic all of the backfill's.

A worker runs in this process with two slots per interactive queue
(`FLEET_CONCURRENCY=2`) and one batch slot (`FLEET_BATCH_CONCURRENCY=1`) against
a slow mock (every answer waits 300 ms). The mock provider's adapter is wrapped to count the calls
in flight, so what is checked is what the provider saw: how many batch jobs ran
at once, and whether the other kind was running when a job started.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import pytest
from prometheus_client import CollectorRegistry

from contracts import topology as t
from contracts.client import FleetClient
from contracts.frames import Final
from contracts.jobs import EmbedJob, Message, Target
from providers.core.http import HttpClientPool
from providers.core.types import ChatResult, EmbedRequest, EmbedResult, Secret
from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock
from providers.registry import default_registry
from tests.integration.conftest import MOCK_KEY, sealed_target
from workers.config import ConfigError, Settings
from workers.credentials import CredentialResolver
from workers.crypto import Keyring
from workers.execute import Executor
from workers.metrics import WorkerMetrics
from workers.runtime import Worker

pytestmark = pytest.mark.integration

BATCH_JOBS = 4


class Counting:
    """The mock provider's adapter, counting embeddings (batch jobs here) and chats
    (interactive ones) in flight; every other method is the adapter's own."""

    def __init__(self, inner: Any) -> None:
        self._inner = inner
        self.embeds = self.most_embeds = self.chats = 0
        self.embeds_when_a_chat_started: list[int] = []
        self.chats_when_an_embed_started: list[int] = []
        self.embedding = asyncio.Event()
        self.chatting = asyncio.Event()

    async def embed(self, req: EmbedRequest, secret: Secret) -> EmbedResult:
        self.chats_when_an_embed_started.append(self.chats)
        self.embeds += 1
        self.most_embeds = max(self.most_embeds, self.embeds)
        self.embedding.set()
        try:
            result: EmbedResult = await self._inner.embed(req, secret)
            return result
        finally:
            self.embeds -= 1

    async def chat(self, req: Any, secret: Secret) -> ChatResult:
        self.embeds_when_a_chat_started.append(self.embeds)
        self.chats += 1
        self.chatting.set()
        try:
            result: ChatResult = await self._inner.chat(req, secret)
            return result
        finally:
            self.chats -= 1

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)


@dataclass
class SlowFleet:
    counting: Counting
    target: Target


@pytest.fixture(scope="module")
async def slow() -> AsyncIterator[RunningMock]:
    config = MockConfig(
        api_keys=frozenset({MOCK_KEY}), ttft_ms=300.0, max_tokens_default=4, embed_dims=8
    )
    running = await start_mock(config, "127.0.0.1", 0)
    yield running
    await running.close()


@pytest.fixture
async def fleet(
    amqp_url: str, crypto_key: str, keyring: Keyring, slow: RunningMock
) -> AsyncIterator[SlowFleet]:
    env = {
        "AMQP_URL": amqp_url,
        "INTEGRATION_CRYPTO_KEY": crypto_key,
        "FLEET_PROVIDER_URLS": f"mock={slow.base_url}",
        "DATABASE_URL": "",
        "FLEET_HEALTH_PORT": "0",
        "FLEET_WORKER_ID": "batch-slots",
        "FLEET_CONCURRENCY": "2",
        "FLEET_BATCH_CONCURRENCY": "1",
    }
    settings = Settings.from_env(env)
    assert settings.queues == (t.QUEUE_CHAT, t.QUEUE_EMBED, t.QUEUE_BATCH)  # the default
    http = HttpClientPool(settings.http)
    registry = default_registry(http, settings.provider_urls, settings.provider_token_urls)
    mock = registry.get("mock")
    counting = Counting(mock.adapter)
    registry.register(mock.spec, counting, mock.base_url)
    executor = Executor(registry, CredentialResolver(keyring), settings.retry)
    worker = Worker(settings, executor, WorkerMetrics(CollectorRegistry()))
    task = asyncio.create_task(worker.run())
    try:
        yield SlowFleet(counting, sealed_target(keyring))
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)
        await http.aclose()


@pytest.fixture
async def backfill(amqp_url: str) -> AsyncIterator[FleetClient]:
    async with FleetClient(
        amqp_url, reply_queue=f"batch-slots-{uuid.uuid4().hex[:8]}", default_timeout=60
    ) as client:
        try:
            yield client
        finally:
            await client.delete_reply_queue()


def embed_job(target: Target, n: int) -> EmbedJob:
    return EmbedJob(
        v=t.CONTRACT_VERSION, request_id=uuid.uuid4().hex, target=target, inputs=[f"text {n}"]
    )


async def answers(client: FleetClient, count: int) -> list[Final]:
    finals: list[Final] = []
    async for frame in client.results():
        assert isinstance(frame, Final), frame
        finals.append(frame)
        if len(finals) == count:
            return finals
    raise AssertionError("results() ended")


async def test_a_chat_starts_while_batch_jobs_hold_their_slot(
    fleet: SlowFleet, backfill: FleetClient, client: FleetClient
) -> None:
    jobs = [embed_job(fleet.target, n) for n in range(BATCH_JOBS)]
    for job in jobs:
        await backfill.submit(job)  # to llm.batch
    collecting = asyncio.create_task(answers(backfill, BATCH_JOBS))
    await asyncio.wait_for(fleet.counting.embedding.wait(), 30)

    final = await client.chat(fleet.target, [Message(role="user", content="still quick?")])
    assert final.usage.output_tokens > 0
    # The chat started beside a running batch job, not after one gave up a slot.
    assert fleet.counting.embeds_when_a_chat_started == [1]
    assert not collecting.done()  # the backfill was still going

    finals = await asyncio.wait_for(collecting, 60)
    assert sorted(f.request_id for f in finals) == sorted(job.request_id for job in jobs)
    # One batch slot, never more at once (not FLEET_CONCURRENCY's two).
    assert fleet.counting.most_embeds == 1


async def test_a_chat_burst_leaves_the_backfill_its_slot(
    fleet: SlowFleet, backfill: FleetClient, client: FleetClient
) -> None:
    messages = [Message(role="user", content="busy")]
    burst = [asyncio.create_task(client.chat(fleet.target, messages)) for _ in range(6)]
    await asyncio.wait_for(fleet.counting.chatting.wait(), 30)
    job = embed_job(fleet.target, 0)
    await backfill.submit(job)
    (final,) = await asyncio.wait_for(answers(backfill, 1), 60)
    assert final.request_id == job.request_id
    # The batch job ran beside a chat, while more of the burst still waited.
    (chats,) = fleet.counting.chats_when_an_embed_started
    assert chats >= 1
    assert not all(task.done() for task in burst)
    await asyncio.wait_for(asyncio.gather(*burst), 60)


class TestSettings:
    def test_batch_is_consumed_by_default_on_its_own_pool(self) -> None:
        settings = Settings.from_env({"FLEET_CONCURRENCY": "8", "FLEET_BATCH_CONCURRENCY": "3"})
        assert settings.job_pools() == [
            ((t.QUEUE_CHAT, t.QUEUE_EMBED), 8),
            ((t.QUEUE_BATCH,), 3),
        ]
        assert Settings.from_env({}).batch_concurrency == 16

    def test_batch_only_and_interactive_only_workers(self) -> None:
        batch_only = Settings.from_env({"FLEET_QUEUES": "llm.batch"})
        assert batch_only.job_pools() == [((t.QUEUE_BATCH,), 16)]
        chat_only = Settings.from_env({"FLEET_QUEUES": "llm.chat"})
        assert chat_only.job_pools() == [((t.QUEUE_CHAT,), 64)]

    @pytest.mark.parametrize("value", ["0", "-2", "many"])
    def test_a_bad_batch_concurrency_stops_the_start(self, value: str) -> None:
        with pytest.raises(ConfigError, match="FLEET_BATCH_CONCURRENCY"):
            Settings.from_env({"FLEET_BATCH_CONCURRENCY": value})
