"""Rate limits through a real worker: budgets in every frame, and jobs that do not wait.

A worker runs in this process against a mock of the OpenAI API that enforces
per-key budgets (60 requests and 3,000 tokens a minute, refilled continuously).
Each test takes a key of its own, so its budget is its own. Answers are read
raw from a named reply queue (`submit()`/`results()`), as a backfill reads them:
error frames arrive as frames, with their `rate_limit`, not as exceptions.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import pytest

from contracts import topology as t
from contracts.client import FleetClient
from contracts.frames import Error, Final
from contracts.jobs import ChatJob, Message, Target
from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock
from tests.integration.conftest import sealed_target
from tests.integration.test_fleet import fault_model
from tests.integration.test_metrics_records import Observing, observed_worker
from workers.crypto import Keyring

pytestmark = pytest.mark.integration

RPM, TPM = 60, 3000
# A job asking for this many tokens spends a key's whole token budget: the mock
# charges prompt + max_tokens up front (and the answer stays 8 tokens long).
DRAIN = {"max_tokens": TPM}
# Fits the budget again about a second after it was drained (50 tokens a second).
SMALL = {"max_tokens": 40}


@pytest.fixture(scope="module")
async def limited() -> AsyncIterator[RunningMock]:
    config = MockConfig(
        accept_any_key=True,
        max_tokens_default=8,
        requests_per_minute=RPM,
        tokens_per_minute=TPM,
    )
    running = await start_mock(config, "127.0.0.1", 0)
    yield running
    await running.close()


@pytest.fixture
async def observing(
    amqp_url: str, crypto_key: str, keyring: Keyring, limited: RunningMock
) -> AsyncIterator[Observing]:
    async with observed_worker(amqp_url, crypto_key, keyring, limited, "rate-limit-info") as seen:
        yield seen


@pytest.fixture
async def producer(amqp_url: str) -> AsyncIterator[FleetClient]:
    async with FleetClient(
        amqp_url, reply_queue=f"rate-limits-{uuid.uuid4().hex[:8]}", default_timeout=60
    ) as client:
        try:
            yield client
        finally:
            await client.delete_reply_queue()


def own_key(keyring: Keyring, model: str = "mock-chat") -> Target:
    """A target under an API key no other test uses: a budget of its own."""
    return sealed_target(keyring, model=model, key=f"sk-budget-{uuid.uuid4().hex}")


def chat(target: Target, options: dict[str, Any], **fields: Any) -> ChatJob:
    return ChatJob(
        v=t.CONTRACT_VERSION,
        request_id=uuid.uuid4().hex,
        target=target,
        messages=[Message(role="user", content="How much is left?")],
        options=options,
        stream=False,
        **fields,
    )


async def answer(producer: FleetClient, job: ChatJob) -> Final | Error:
    await producer.submit(job, batch=False)
    async for frame in producer.results():
        if frame.request_id == job.request_id:
            return frame
    raise AssertionError("results() ended")


async def test_final_frames_carry_the_budget_and_it_falls(
    observing: Observing, producer: FleetClient, keyring: Keyring
) -> None:
    target = own_key(keyring)
    first = await answer(producer, chat(target, SMALL))
    second = await answer(producer, chat(target, SMALL))
    assert isinstance(first, Final) and isinstance(second, Final)
    assert first.rate_limit is not None and second.rate_limit is not None
    assert (first.rate_limit.limit_requests, first.rate_limit.limit_tokens) == (RPM, TPM)
    assert first.rate_limit.remaining_requests == RPM - 1
    assert first.rate_limit.reset_requests is not None and first.rate_limit.reset_requests > 0
    assert first.rate_limit.remaining_tokens is not None
    assert first.rate_limit.remaining_tokens < TPM
    # A request a second refills one: the second job found the budget lower.
    assert second.rate_limit.remaining_requests is not None
    assert second.rate_limit.remaining_requests < first.rate_limit.remaining_requests


async def test_a_job_that_does_not_wait_is_answered_with_the_refusal(
    observing: Observing, producer: FleetClient, keyring: Keyring
) -> None:
    target = own_key(keyring)
    drained = await answer(producer, chat(target, DRAIN))
    assert isinstance(drained, Final)
    assert drained.rate_limit is not None and drained.rate_limit.remaining_tokens == 0

    refused = await answer(producer, chat(target, SMALL, wait_on_rate_limit=False))
    assert isinstance(refused, Error), refused
    assert (refused.code, refused.retryable, refused.provider_status) == (
        "rate_limited",
        True,
        429,
    )
    assert refused.retry_after is not None and refused.retry_after > 0
    # The 429's own headers: the token budget, and how little of it is left.
    assert refused.rate_limit is not None and refused.rate_limit.limit_tokens == TPM
    assert refused.rate_limit.remaining_tokens is not None
    assert refused.rate_limit.remaining_tokens < SMALL["max_tokens"]

    records = await observing.settled(2)
    assert records[1].status == "rate_limited"
    assert records[1].metrics is not None and records[1].metrics.retries == 0
    assert observing.value("llm_fleet_provider_retries_total", provider="mock") in (None, 0.0)


async def test_the_same_job_that_waits_gets_its_answer(
    observing: Observing, producer: FleetClient, keyring: Keyring
) -> None:
    target = own_key(keyring)
    assert isinstance(await answer(producer, chat(target, DRAIN)), Final)
    waited = await answer(producer, chat(target, SMALL))  # wait_on_rate_limit defaults to True
    assert isinstance(waited, Final), waited
    assert waited.metrics.retries >= 1
    assert waited.rate_limit is not None and waited.rate_limit.limit_tokens == TPM


async def test_a_fallback_is_still_tried_without_waiting(
    observing: Observing, producer: FleetClient, keyring: Keyring
) -> None:
    spent, fresh = own_key(keyring), own_key(keyring, model="mock-backup")
    assert isinstance(await answer(producer, chat(spent, DRAIN)), Final)
    job = chat(spent, SMALL, wait_on_rate_limit=False, fallbacks=[fresh])
    final = await answer(producer, job)
    assert isinstance(final, Final), final
    assert final.target.model == "mock-backup" and final.metrics.retries == 0
    # The budget reported is the answering key's, not the refused one's.
    assert final.rate_limit is not None
    assert final.rate_limit.remaining_tokens is not None
    assert final.rate_limit.remaining_tokens > SMALL["max_tokens"]


async def test_other_failures_are_still_retried(
    observing: Observing, producer: FleetClient, keyring: Keyring, limited: RunningMock
) -> None:
    model = await fault_model(limited, "flaky", "500", 1)
    final = await answer(producer, chat(own_key(keyring, model), SMALL, wait_on_rate_limit=False))
    assert isinstance(final, Final), final
    assert final.metrics.retries == 1
