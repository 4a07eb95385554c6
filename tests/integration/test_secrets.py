"""A canary API key must never leave worker memory: not in logs, frames or dead letters."""

from __future__ import annotations

import uuid

import aio_pika
import pytest

from contracts import FleetError, Message, decode_frames, encode
from contracts.client import FleetClient
from providers.mock.server import RunningMock
from tests.integration.conftest import CANARY_KEY, SpawnWorker, sealed_target
from tests.integration.test_fleet import mock_admin
from workers.crypto import Keyring

pytestmark = pytest.mark.integration


async def test_canary_key_never_leaks(
    spawn_worker: SpawnWorker,
    amqp_url: str,
    keyring: Keyring,
    mock: RunningMock,
    dead_letters: object,
) -> None:
    worker = await spawn_worker()
    frames: list[bytes] = []
    client = FleetClient(amqp_url, default_timeout=60)
    original = client._on_reply

    async def tap(message: aio_pika.abc.AbstractIncomingMessage) -> None:
        frames.append(message.body)
        await original(message)

    client._on_reply = tap  # type: ignore[method-assign]
    failing = f"mock-canary-fail-{uuid.uuid4().hex[:6]}"
    await mock_admin(mock, "POST", "/_mock/faults", {"spec": "500", "times": 40, "model": failing})
    denied = f"mock-canary-401-{uuid.uuid4().hex[:6]}"
    await mock_admin(mock, "POST", "/_mock/faults", {"spec": "401", "times": 2, "model": denied})
    async with client:
        msgs = [Message(role="user", content="hello canary")]
        # Every dialect: each adapter builds its own headers and error messages.
        for provider in ("mock", "anthropic-mock"):
            good = sealed_target(keyring, key=CANARY_KEY, provider=provider)
            async for _ in client.stream_chat(good, msgs):
                pass
            assert (await client.chat(good, msgs)).message is not None
            assert (await client.verify(good)).ok
            for model in (failing, denied):
                bad = sealed_target(keyring, model=model, key=CANARY_KEY, provider=provider)
                with pytest.raises(FleetError):
                    await client.chat(bad, msgs)
        assert (
            await client.embed(sealed_target(keyring, model="mock-e", key=CANARY_KEY), ["a", "b"])
        ).embeddings
        # Jobs that are dead-lettered while carrying the canary (sealed) inside them.
        unknown = sealed_target(keyring, key=CANARY_KEY, provider="no-such-provider")
        with pytest.raises(FleetError):
            await client.chat(unknown, msgs)
        mismatched = sealed_target(keyring, key=CANARY_KEY)
        mismatched = type(mismatched)(
            provider="openai", model="mock-x", credential=mismatched.credential
        )
        with pytest.raises(FleetError):
            await client.chat(mismatched, msgs)
    await mock_admin(mock, "DELETE", "/_mock/faults")

    canary = CANARY_KEY.encode()
    assert sum(len(decode_frames(f)) for f in frames) > 10
    assert not [f for f in frames if canary in f], "canary in a reply frame"
    logs = worker.logs()
    assert "job_refused" in logs and "provider_retry" in logs  # the interesting paths were logged
    assert CANARY_KEY not in logs, "canary in worker logs"
    dead = await dead_letters()  # type: ignore[operator]
    assert len(dead) >= 2
    for msg in dead:
        assert canary not in msg.body
        assert canary not in encode(dict(msg.headers or {}))
