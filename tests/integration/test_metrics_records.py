"""observe() fed the AttemptRecords a real worker settles its jobs with.

The worker runs in this process with a recorder that hands every record to a
WorkerMetrics of the test's own, so what is checked is the seam: the runtime's
records carry what the metrics need (the target that answered, the ones tried,
the final frame's timings and usage), whichever way the runtime itself is wired.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest
from prometheus_client import CollectorRegistry

from contracts import Unauthorized
from contracts.client import FleetClient
from contracts.frames import Final
from contracts.jobs import Message
from providers.core.http import HttpClientPool
from providers.mock.server import RunningMock
from providers.registry import default_registry
from tests.integration.conftest import sealed_target
from tests.integration.test_fleet import fault_model
from workers.config import Settings
from workers.credentials import CredentialResolver
from workers.crypto import Keyring
from workers.execute import Executor
from workers.metrics import WorkerMetrics
from workers.outcome import AttemptRecord
from workers.runtime import Worker

pytestmark = pytest.mark.integration


@dataclass
class Observing:
    """A recorder that counts every record in metrics of its own."""

    metrics: WorkerMetrics
    records: list[AttemptRecord] = field(default_factory=list)
    _recorded: asyncio.Event = field(default_factory=asyncio.Event)

    async def record(self, record: AttemptRecord) -> None:
        self.records.append(record)
        self.metrics.observe(record)
        self._recorded.set()

    async def settled(self, count: int) -> list[AttemptRecord]:
        """The first `count` records: the producer has its answer a moment before the
        worker settles the job (the record is made after the final frame's confirm)."""
        async with asyncio.timeout(30):
            while len(self.records) < count:
                self._recorded.clear()
                await self._recorded.wait()
        return self.records

    def value(self, name: str, **labels: str) -> float | None:
        return self.metrics.registry.get_sample_value(name, labels)


@pytest.fixture
async def observing(
    amqp_url: str, crypto_key: str, keyring: Keyring, mock: RunningMock
) -> AsyncIterator[Observing]:
    async with observed_worker(amqp_url, crypto_key, keyring, mock, "metrics-records") as seen:
        yield seen


@contextlib.asynccontextmanager
async def observed_worker(
    amqp_url: str, crypto_key: str, keyring: Keyring, mock: RunningMock, worker_id: str
) -> AsyncIterator[Observing]:
    """A worker in this process whose every attempt record lands in an `Observing`."""
    env = {
        "AMQP_URL": amqp_url,
        "INTEGRATION_CRYPTO_KEY": crypto_key,
        "FLEET_PROVIDER_URLS": f"mock={mock.base_url}",
        "DATABASE_URL": "",
        "FLEET_HEALTH_PORT": "0",
        "FLEET_WORKER_ID": worker_id,
    }
    settings = Settings.from_env(env)
    http = HttpClientPool(settings.http)
    registry = default_registry(http, settings.provider_urls, settings.provider_token_urls)
    observing = Observing(WorkerMetrics(CollectorRegistry(), providers=registry.names()))
    executor = Executor(registry, CredentialResolver(keyring), settings.retry)
    worker = Worker(settings, executor, WorkerMetrics(CollectorRegistry()), recorder=observing)
    task = asyncio.create_task(worker.run())
    try:
        yield observing
    finally:
        worker.request_stop()
        await asyncio.wait_for(task, 30)
        await http.aclose()


async def test_a_fallbacks_answer_is_labelled_with_the_fallback(
    observing: Observing, client: FleetClient, keyring: Keyring, mock: RunningMock
) -> None:
    primary = await fault_model(mock, "mprimary", "404", 1)
    events = client.stream_chat(
        sealed_target(keyring, model=primary),
        [Message(role="user", content="fall back")],
        fallbacks=[sealed_target(keyring, model="mock-backup")],
    )
    (final,) = [event async for event in events if isinstance(event, Final)]
    assert final.target.model == "mock-backup" and final.metrics.ttft_ms is not None
    (record,) = await observing.settled(1)
    assert record.target is not None and record.target.model == "mock-backup"

    answered = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "mock",
        "gen_ai_request_model": "mock-backup",
    }
    tokens = "gen_ai_client_token_usage_sum"
    assert observing.value(tokens, **answered, gen_ai_token_type="input") == (
        final.usage.input_tokens
    )
    assert observing.value(tokens, **answered, gen_ai_token_type="output") == (
        final.usage.output_tokens
    )
    assert observing.value("gen_ai_server_time_to_first_token_seconds_sum", **answered) == (
        pytest.approx(final.metrics.ttft_ms / 1000)
    )
    assert observing.value("gen_ai_server_time_per_output_token_seconds_count", **answered) == 1
    assert (
        observing.value("gen_ai_client_operation_duration_seconds_count", **answered, error_type="")
        == 1
    )
    # The primary that failed appears only as the target failed from.
    assert observing.value("llm_fleet_fallbacks_total", provider="mock") == 1
    jobs = {"kind": "chat", "provider": "mock", "model": primary, "outcome": "ok"}
    assert observing.value("llm_fleet_jobs_total", **jobs) is None
    jobs["model"] = "mock-backup"
    assert observing.value("llm_fleet_jobs_total", **jobs) == 1


async def test_a_provider_error_is_labelled_with_its_code(
    observing: Observing, client: FleetClient, keyring: Keyring, mock: RunningMock
) -> None:
    failing = await fault_model(mock, "mauth", "401", 1)
    with pytest.raises(Unauthorized):
        await client.chat(
            sealed_target(keyring, model=failing), [Message(role="user", content="x")]
        )
    await observing.settled(1)
    failed = {
        "gen_ai_operation_name": "chat",
        "gen_ai_provider_name": "mock",
        "gen_ai_request_model": failing,
        "error_type": "unauthorized",
    }
    assert observing.value("gen_ai_client_operation_duration_seconds_count", **failed) == 1
    jobs = {"kind": "chat", "provider": "mock", "model": failing, "outcome": "unauthorized"}
    assert observing.value("llm_fleet_jobs_total", **jobs) == 1
