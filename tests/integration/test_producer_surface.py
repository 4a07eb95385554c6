"""What a producer can see through FleetClient, end to end through real RabbitMQ and workers:
errors that keep the worker's verdict and the provider's retry-after, per-provider retry
settings, token kinds in the worker's metrics, and `providers()`."""

from __future__ import annotations

import asyncio
import time
import urllib.request
from collections.abc import Awaitable, Callable

import aio_pika
import pytest

from contracts import Message, ProviderUnavailable, RateLimited, Target
from contracts import topology as t
from contracts.client import FleetClient
from tests.integration.conftest import RunningMock, SpawnWorker, sealed_target
from tests.integration.test_fleet import collect, fault_model, mock_admin
from workers.crypto import Keyring

pytestmark = pytest.mark.integration

DeadLetters = Callable[..., Awaitable[list[aio_pika.abc.AbstractIncomingMessage]]]


async def faults_seen(mock: RunningMock, kind: str) -> int:
    stats = await mock_admin(mock, "GET", "/_mock/stats")
    return int(stats["faults_by_kind"].get(kind, 0))


class TestErrorsCarryWhatTheProviderSaid:
    async def test_a_rate_limit_longer_than_the_fleet_waits_reaches_the_producer(
        self, spawn_worker: SpawnWorker, client: FleetClient, keyring: Keyring, mock: RunningMock
    ) -> None:
        """The worker gives up at once (30 s > its 1 s limit) and passes the wait on."""
        await spawn_worker(env={"FLEET_RETRY_MAX_RETRY_AFTER": "1"})
        model = await fault_model(mock, "mock-429long", "429:retry-after=30", 5)
        before = await faults_seen(mock, "429")
        started = time.monotonic()
        with pytest.raises(RateLimited) as info:
            await client.chat(
                sealed_target(keyring, model=model), [Message(role="user", content="x")]
            )
        error = info.value
        assert (error.retryable, error.retry_after, error.provider_status) == (True, 30.0, 429)
        # The mock, like OpenAI, names each response in x-request-id.
        assert error.provider_request_id is not None
        assert error.provider_request_id.startswith("req_")
        assert await faults_seen(mock, "429") - before == 1  # not retried
        assert time.monotonic() - started < 10
        await mock_admin(mock, "DELETE", "/_mock/faults")


class TestRetrySettings:
    async def test_a_providers_own_attempts_limit_how_often_it_is_called(
        self, spawn_worker: SpawnWorker, client: FleetClient, keyring: Keyring, mock: RunningMock
    ) -> None:
        await spawn_worker(
            env={
                "FLEET_RETRY_ATTEMPTS": "5",
                "FLEET_PROVIDER_RETRY_ATTEMPTS": "mock=2",
                "FLEET_RETRY_BACKOFF_INITIAL": "0.01",
                "FLEET_RETRY_BACKOFF_MAX": "0.02",
            }
        )
        model = await fault_model(mock, "mock-503", "503", 10)
        before = await faults_seen(mock, "503")
        with pytest.raises(ProviderUnavailable) as info:
            await client.chat(
                sealed_target(keyring, model=model), [Message(role="user", content="x")]
            )
        assert info.value.retryable and info.value.provider_status == 503
        assert await faults_seen(mock, "503") - before == 2
        await mock_admin(mock, "DELETE", "/_mock/faults")


class TestTokenMetrics:
    async def test_the_workers_token_counters_match_the_final_frame(
        self,
        spawn_worker: SpawnWorker,
        client: FleetClient,
        target: Target,
        free_port: int,
    ) -> None:
        await spawn_worker(env={"FLEET_HEALTH_PORT": str(free_port)})
        _, final, _ = await collect(client, target, "count my tokens")
        # The worker counts once the final frame is confirmed, which may be a moment
        # after the producer has it.
        counted: dict[str, float] = {}
        give_up = time.monotonic() + 5
        while not counted and time.monotonic() < give_up:
            await asyncio.sleep(0.05)
            counted = await token_counters(free_port, provider="mock", model=target.model)
        usage = final.usage
        expected = {"input": usage.input_tokens, "output": usage.output_tokens}
        for kind, count in (
            ("cached_input", usage.cached_input_tokens),
            ("cache_write", usage.cache_write_tokens),
            ("reasoning", usage.reasoning_tokens),
        ):
            if count is not None:  # a kind the provider does not report has no series
                expected[kind] = count
        assert usage.output_tokens > 0
        assert counted == expected


class TestProviderCatalog:
    async def test_a_worker_answers_with_its_registry(
        self,
        spawn_worker: SpawnWorker,
        client: FleetClient,
        mock: RunningMock,
        dead_letters: DeadLetters,
    ) -> None:
        await spawn_worker()
        started = time.monotonic()
        providers = await client.providers(within=10)
        assert time.monotonic() - started < 5
        names = [p.name for p in providers]
        assert names == sorted(names) and {"mock", "openai"} <= set(names)
        by_name = {p.name: p for p in providers}
        # The operator's address (FLEET_PROVIDER_URLS of spawn_worker), not the default.
        assert by_name["mock"].default_base_url == mock.base_url
        assert "chat" in by_name["openai"].capabilities
        assert await dead_letters() == []

    async def test_without_a_worker_it_is_a_quick_retryable_error_and_nothing_is_kept(
        self, amqp_url: str, client: FleetClient, dead_letters: DeadLetters
    ) -> None:
        """Also what a producer sees when only workers from before `llm.catalog` run:
        they never consume it."""
        started = time.monotonic()
        with pytest.raises(ProviderUnavailable, match="no worker answered") as info:
            await client.providers(within=0.5)
        assert info.value.retryable
        assert time.monotonic() - started < 3
        assert await dead_letters() == []
        assert await catalog_backlog(amqp_url, settle=1.0) == 0  # expired with the wait

    async def test_a_request_no_worker_can_answer_is_dropped_not_dead_lettered(
        self,
        spawn_worker: SpawnWorker,
        amqp_url: str,
        client: FleetClient,
        dead_letters: DeadLetters,
    ) -> None:
        worker = await spawn_worker()
        conn = await aio_pika.connect(amqp_url)
        try:
            channel = await conn.channel()
            for body in (b"\xc1 not msgpack", b"\x81\xa1v\x01"):  # garbage; no request id
                await channel.default_exchange.publish(
                    aio_pika.Message(body), routing_key=t.CATALOG_QUEUE
                )
        finally:
            await conn.close()
        assert [p.name for p in await client.providers(within=10)]  # still answering
        assert await catalog_backlog(amqp_url, settle=0.3) == 0
        assert await dead_letters() == []
        assert worker.logs().count("catalog_request_unanswerable") == 2
        assert worker.proc.poll() is None


async def token_counters(port: int, *, provider: str, model: str) -> dict[str, float]:
    """`llm_fleet_tokens_total` of one provider and model, by kind, from a worker's /metrics."""

    def read() -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as r:
            return str(r.read().decode())

    counted: dict[str, float] = {}
    for line in (await asyncio.to_thread(read)).splitlines():
        if not line.startswith("llm_fleet_tokens_total{"):
            continue
        labels, value = line.rsplit(" ", 1)
        if f'provider="{provider}"' in labels and f'model="{model}"' in labels:
            counted[labels.split('kind="')[1].split('"')[0]] = float(value)
    return counted


async def catalog_backlog(amqp_url: str, *, settle: float) -> int:
    """Requests waiting in llm.catalog once `settle` seconds have passed."""
    await asyncio.sleep(settle)
    conn = await aio_pika.connect(amqp_url)
    try:
        channel = await conn.channel()
        queue = await channel.declare_queue(t.CATALOG_QUEUE, passive=True)
        count = queue.declaration_result.message_count
        return int(count or 0)
    finally:
        await conn.close()
