"""End to end through real RabbitMQ and real worker processes (the provider is the mock)."""

from __future__ import annotations

import asyncio
import hashlib
import json
import signal
import time
import uuid
from collections.abc import Callable
from typing import Any

import aio_pika
import httpx
import msgspec
import pytest

from contracts import (
    ChatJob,
    Delta,
    Error,
    Final,
    Message,
    ProviderTimeout,
    ProviderUnavailable,
    RateLimited,
    Target,
    Tool,
    Unauthorized,
    decode_frames,
    encode,
)
from contracts import topology as t
from contracts.client import FleetClient, Restart
from providers.mock.server import RunningMock
from tests.integration.conftest import MOCK_KEY, SpawnWorker, sealed_target
from tests.producers import USER, reply_queue_name
from workers.crypto import Keyring

pytestmark = pytest.mark.integration


async def direct_text(mock: RunningMock, prompt: str, model: str = "mock-chat") -> str:
    """What the provider answers when called directly: the fleet must deliver exactly this."""
    async with httpx.AsyncClient() as http:
        r = await http.post(
            f"{mock.base_url}/chat/completions",
            headers={"Authorization": f"Bearer {MOCK_KEY}"},
            json={"model": model, "messages": [{"role": "user", "content": prompt}]},
        )
    r.raise_for_status()
    content: str = r.json()["choices"][0]["message"]["content"]
    return content


async def fault_model(mock: RunningMock, prefix: str, spec: str, times: int) -> str:
    """A fresh model name whose next `times` requests get fault `spec` (tests never share one)."""
    model = f"mock-{prefix}-{uuid.uuid4().hex[:6]}"
    await mock_admin(mock, "POST", "/_mock/faults", {"spec": spec, "times": times, "model": model})
    return model


async def collect(
    client: FleetClient,
    target: Target,
    prompt: str,
    *,
    options: dict[str, Any] | None = None,
    on_delta: Callable[[], None] | None = None,
) -> tuple[str, Final, int]:
    """Stream one chat; return the text the caller would show, the final frame, restarts seen."""
    parts: list[str] = []
    final: Final | None = None
    restarts = 0
    messages = [Message(role="user", content=prompt)]
    async for ev in client.stream_chat(target, messages, options=options):
        if isinstance(ev, Restart):
            parts.clear()
            restarts += 1
        elif isinstance(ev, Delta):
            parts.append(ev.text)
            if on_delta is not None:
                on_delta()
        elif isinstance(ev, Final):
            assert final is None, "two final frames for one request"
            final = ev
    assert final is not None
    return "".join(parts), final, restarts


async def mock_admin(
    mock: RunningMock, method: str, path: str, body: dict[str, Any] | None = None
) -> Any:
    root = mock.root
    async with httpx.AsyncClient() as http:
        r = await http.request(method, f"{root}{path}", json=body)
    r.raise_for_status()
    return r.json() if r.content else None


class TestHappyPaths:
    async def test_streamed_chat(
        self, spawn_worker: SpawnWorker, client: FleetClient, target: Target, mock: RunningMock
    ) -> None:
        await spawn_worker()
        text, final, restarts = await collect(client, target, "tell me about queues")
        assert text == await direct_text(mock, "tell me about queues")
        assert final.message is not None and final.message.content == text
        assert final.finish_reason == "stop" and restarts == 0 and final.attempt == 1
        assert final.usage.output_tokens == 24 and final.usage.input_tokens > 0
        assert final.metrics.ttft_ms is not None and final.metrics.total_ms >= final.metrics.ttft_ms
        assert final.target.provider == "mock"

    async def test_non_streamed_chat(
        self, spawn_worker: SpawnWorker, client: FleetClient, target: Target, mock: RunningMock
    ) -> None:
        await spawn_worker()
        final = await client.chat(
            target, [Message(role="user", content="hello")], options={"model.max_tokens": "5"}
        )
        assert final.message is not None
        assert final.message.content == " ".join((await direct_text(mock, "hello")).split(" ")[:5])
        assert final.finish_reason == "length" and final.usage.output_tokens == 5

    async def test_parallel_tool_calls_streamed(
        self, spawn_worker: SpawnWorker, client: FleetClient, target: Target
    ) -> None:
        await spawn_worker()
        tools = [Tool(name="search", parameters={"type": "object"}), Tool(name="lookup")]
        deltas = 0
        final: Final | None = None
        async for ev in client.stream_chat(
            target,
            [Message(role="user", content="use tools please")],
            tools=tools,
            options={"tool_choice": "required"},
        ):
            if isinstance(ev, Delta):
                deltas += len(ev.tool_calls)
            elif isinstance(ev, Final):
                final = ev
        assert final is not None and final.message is not None and final.message.tool_calls
        assert final.finish_reason == "tool_calls" and deltas > 0
        calls = final.message.tool_calls
        assert [c.name for c in calls] == ["search", "lookup"]
        for c in calls:
            assert isinstance(json.loads(c.arguments), dict) and c.id

    async def test_embeddings(
        self, spawn_worker: SpawnWorker, client: FleetClient, keyring: Keyring, mock: RunningMock
    ) -> None:
        await spawn_worker()
        target = sealed_target(keyring, model="mock-embed")
        texts = [f"text {i}" for i in range(10)]
        final = await client.embed(target, texts, dimensions=32)
        assert final.embeddings is not None
        assert (final.embeddings.count, final.embeddings.dims) == (10, 32)
        async with httpx.AsyncClient() as http:
            r = await http.post(
                f"{mock.base_url}/embeddings",
                headers={"Authorization": f"Bearer {MOCK_KEY}"},
                json={"model": "mock-embed", "input": texts, "dimensions": 32},
            )
        expected = [d["embedding"] for d in r.json()["data"]]
        got = final.embeddings.vectors()
        assert all(
            abs(a - b) < 1e-6
            for va, vb in zip(got, expected, strict=True)
            for a, b in zip(va, vb, strict=True)
        )

    async def test_verify(
        self, spawn_worker: SpawnWorker, client: FleetClient, keyring: Keyring
    ) -> None:
        await spawn_worker()
        assert (await client.verify(sealed_target(keyring))).ok
        bad = await client.verify(sealed_target(keyring, key="sk-wrong-key-xyz"))
        assert not bad.ok and "sk-wrong-key-xyz" not in bad.detail


class TestRetries:
    async def test_429_with_retry_after_is_retried_then_succeeds(
        self, spawn_worker: SpawnWorker, client: FleetClient, keyring: Keyring, mock: RunningMock
    ) -> None:
        await spawn_worker()
        model = await fault_model(mock, "m429", "429:retry-after=0.2", 2)
        started = time.monotonic()
        text, final, _ = await collect(client, sealed_target(keyring, model=model), "retry me")
        assert final.metrics.retries == 2 and text
        assert time.monotonic() - started >= 0.4  # the provider's retry-after was honoured

    async def test_401_is_not_retried(
        self, spawn_worker: SpawnWorker, client: FleetClient, keyring: Keyring, mock: RunningMock
    ) -> None:
        await spawn_worker()
        model = f"mock-401-{uuid.uuid4().hex[:6]}"
        before = (await mock_admin(mock, "GET", "/_mock/stats"))["faults_by_kind"].get("401", 0)
        await mock_admin(mock, "POST", "/_mock/faults", {"spec": "401", "times": 3, "model": model})
        with pytest.raises(Unauthorized) as info:
            await collect(client, sealed_target(keyring, model=model), "no retry")
        assert info.value.provider_status == 401
        after = (await mock_admin(mock, "GET", "/_mock/stats"))["faults_by_kind"].get("401", 0)
        assert after - before == 1
        await mock_admin(mock, "DELETE", "/_mock/faults")

    async def test_rate_limit_that_outlasts_retries_is_reported(
        self, spawn_worker: SpawnWorker, client: FleetClient, keyring: Keyring, mock: RunningMock
    ) -> None:
        await spawn_worker()
        model = await fault_model(mock, "m429x", "429:retry-after-ms=10", 50)
        with pytest.raises(RateLimited):
            await client.chat(
                sealed_target(keyring, model=model), [Message(role="user", content="x")]
            )
        await mock_admin(mock, "DELETE", "/_mock/faults")


class TestFailover:
    async def test_kill_9_mid_stream_loses_nothing(
        self, spawn_worker: SpawnWorker, amqp_url: str, keyring: Keyring, mock: RunningMock
    ) -> None:
        slow = sealed_target(keyring, model="mock-slow")
        victim = await spawn_worker(concurrency=32)
        prompts = [f"prompt number {i}" for i in range(20)]
        expected = {p: await direct_text(mock, p, "mock-slow") for p in prompts}
        async with FleetClient(amqp_url, default_timeout=120) as client:
            seen_delta = {p: asyncio.Event() for p in prompts}

            async def one(prompt: str) -> tuple[str, Final, int]:
                return await collect(
                    client,
                    slow,
                    prompt,
                    options={"max_tokens": 24},
                    on_delta=seen_delta[prompt].set,
                )

            # Slow the stream down so every job is mid-answer when the worker dies.
            await mock_admin(
                mock,
                "POST",
                "/_mock/faults",
                {"spec": "stall-after:3:2.5", "times": 20, "model": "mock-slow"},
            )
            tasks = [asyncio.create_task(one(p)) for p in prompts]
            await asyncio.wait_for(asyncio.gather(*(e.wait() for e in seen_delta.values())), 30)
            victim.signal(signal.SIGKILL)
            await victim.wait()
            await spawn_worker(concurrency=32)
            results = await asyncio.wait_for(asyncio.gather(*tasks), 90)
        for prompt, (text, final, restarts) in zip(prompts, results, strict=True):
            assert text == expected[prompt]
            assert final.message is not None and final.message.content == expected[prompt]
            assert final.attempt >= 2 and restarts >= 1

    async def test_sigterm_drains_in_flight_jobs(
        self, spawn_worker: SpawnWorker, client: FleetClient, keyring: Keyring, mock: RunningMock
    ) -> None:
        target = sealed_target(keyring, model="mock-drain")
        worker = await spawn_worker(grace=30)
        await mock_admin(
            mock,
            "POST",
            "/_mock/faults",
            {"spec": "stall-after:2:1.5", "times": 8, "model": "mock-drain"},
        )
        started = [asyncio.Event() for _ in range(8)]

        async def one(i: int) -> tuple[str, Final, int]:
            return await collect(client, target, f"drain {i}", on_delta=started[i].set)

        tasks = [asyncio.create_task(one(i)) for i in range(8)]
        await asyncio.wait_for(asyncio.gather(*(e.wait() for e in started)), 30)
        worker.signal(signal.SIGTERM)
        results = await asyncio.wait_for(asyncio.gather(*tasks), 60)
        assert await worker.wait(30) == 0
        for i, (text, final, restarts) in enumerate(results):
            assert text == await direct_text(mock, f"drain {i}", "mock-drain")
            assert final.attempt == 1 and restarts == 0
        assert '"draining"' in worker.logs()


class TestBadInput:
    async def _send_raw(
        self, amqp_url: str, body: bytes, queue: str = t.QUEUE_CHAT, correlation_id: str = "raw-1"
    ) -> list[Any]:
        """Publish raw bytes with a private reply queue; return the frames that come back."""
        conn = await aio_pika.connect(amqp_url)
        try:
            channel = await conn.channel(publisher_confirms=True)
            replies = await channel.declare_queue(reply_queue_name(), exclusive=True)
            exchange = await channel.get_exchange(t.JOBS_EXCHANGE)
            await exchange.publish(
                aio_pika.Message(
                    body, reply_to=replies.name, user_id=USER, correlation_id=correlation_id
                ),
                routing_key=queue,
            )
            frames = decode_frames((await self._get(replies)).body)
            while type(frames[-1]).__name__ not in ("Error", "Final"):
                frames.extend(decode_frames((await self._get(replies)).body))
            return frames
        finally:
            await conn.close()

    @staticmethod
    async def _get(queue: aio_pika.abc.AbstractQueue, within: float = 15) -> Any:
        give_up = time.monotonic() + within
        while (msg := await queue.get(fail=False, no_ack=True)) is None:
            assert time.monotonic() < give_up, "no reply frame"
            await asyncio.sleep(0.05)
        return msg

    def _job(self, target: Target, rid: str) -> dict[str, Any]:
        job = ChatJob(
            v=1, request_id=rid, target=target, messages=[Message(role="user", content="x")]
        )
        out: dict[str, Any] = msgspec.msgpack.decode(encode(job))
        return out

    async def test_each_bad_input_gets_its_code_and_a_dead_letter(
        self,
        spawn_worker: SpawnWorker,
        amqp_url: str,
        keyring: Keyring,
        client: FleetClient,
        dead_letters: Any,
    ) -> None:
        await spawn_worker()
        good = sealed_target(keyring)
        other_key = Keyring.from_env({"INTEGRATION_CRYPTO_KEY": "A" * 43 + "="})
        missing = self._job(good, "bad-missing")
        del missing["messages"]
        unknown = self._job(good, "bad-provider")
        unknown["target"]["provider"] = "no-such-provider"
        wrong_key = self._job(sealed_target(other_key), "bad-key")
        wrong_provider = self._job(good, "bad-provider-binding")
        wrong_provider["target"]["provider"] = "openai"  # envelope was sealed for "mock"
        cases = [
            (b"\x93\xff\x00garbage", "raw-garbage", "bad_request"),
            (msgspec.msgpack.encode(missing), "bad-missing", "bad_request"),
            (msgspec.msgpack.encode(unknown), "bad-provider", "bad_request"),
            (msgspec.msgpack.encode(wrong_key), "bad-key", "unauthorized"),
            (msgspec.msgpack.encode(wrong_provider), "bad-provider-binding", "unauthorized"),
        ]
        for body, rid, code in cases:
            *_, frame = await self._send_raw(amqp_url, body, correlation_id=rid)
            assert isinstance(frame, Error), (rid, frame)
            assert frame.code == code, (rid, frame)
            assert frame.request_id == rid
        dead = await dead_letters()
        by_rid = {m.correlation_id: m for m in dead}
        for body, rid, code in cases:
            assert rid in by_rid, f"{rid} not dead-lettered"
            headers = by_rid[rid].headers
            assert headers[t.HDR_DEAD_CODE] == code and headers[t.HDR_DEAD_REASON]
            assert by_rid[rid].body == body
        # ...and the worker keeps serving.
        text, final, _ = await collect(client, good, "still alive?")
        assert text and final.attempt == 1

    async def test_oversized_job_is_answered_and_kept_as_a_sample(
        self, spawn_worker: SpawnWorker, amqp_url: str, keyring: Keyring, dead_letters: Any
    ) -> None:
        """Over the worker's job limit (under the broker's): llm.dead keeps 64 KiB of it."""
        await spawn_worker(env={"FLEET_MAX_JOB_BYTES": str(1024 * 1024)})
        job = self._job(sealed_target(keyring), "too-big")
        job["messages"][0]["content"] = "x" * (3 * 1024 * 1024)
        body = msgspec.msgpack.encode(job)
        *_, frame = await self._send_raw(amqp_url, body, correlation_id="too-big")
        assert isinstance(frame, Error) and frame.code == "bad_request", frame
        (dead,) = await dead_letters()
        assert dead.headers[t.HDR_BODY_SAMPLED] is True
        assert dead.headers[t.HDR_BODY_BYTES] == len(body)
        assert dead.headers[t.HDR_BODY_SHA256] == hashlib.sha256(body).hexdigest()
        assert dead.body == body[: t.DEAD_SAMPLE_BYTES]
        assert dead.headers[t.HDR_DEAD_USER] == USER

    async def test_expired_job_is_not_sent_to_the_provider(
        self, spawn_worker: SpawnWorker, client: FleetClient, keyring: Keyring, mock: RunningMock
    ) -> None:
        await spawn_worker()
        from contracts import Expired

        def provider_calls(stats: dict[str, Any]) -> dict[str, int]:
            return {k: v for k, v in stats["requests"].items() if k.startswith("/openai/v1")}

        before = provider_calls(await mock_admin(mock, "GET", "/_mock/stats"))
        with pytest.raises(Expired):
            await client.chat(
                sealed_target(keyring, model="mock-expired"),
                [Message(role="user", content="late")],
                deadline=time.time() - 1,
            )
        after = provider_calls(await mock_admin(mock, "GET", "/_mock/stats"))
        assert after == before


class TestCancellation:
    async def test_leaving_the_stream_cancels_the_provider_call(
        self, spawn_worker: SpawnWorker, client: FleetClient, keyring: Keyring, mock: RunningMock
    ) -> None:
        worker = await spawn_worker()
        await mock_admin(
            mock,
            "POST",
            "/_mock/faults",
            {"spec": "stall-after:2:20", "times": 1, "model": "mock-cancel"},
        )
        async for ev in client.stream_chat(
            sealed_target(keyring, model="mock-cancel"),
            [Message(role="user", content="long answer")],
        ):
            if isinstance(ev, Delta):
                break
        give_up = time.monotonic() + 10
        while "job_cancelled_by_producer" not in worker.logs():
            assert time.monotonic() < give_up, worker.logs()
            await asyncio.sleep(0.05)

    async def test_gone_reply_queue_stops_the_job(
        self, spawn_worker: SpawnWorker, amqp_url: str, keyring: Keyring, mock: RunningMock
    ) -> None:
        worker = await spawn_worker()
        await mock_admin(
            mock,
            "POST",
            "/_mock/faults",
            {"spec": "stall-after:1:1", "times": 1, "model": "mock-gone"},
        )
        conn = await aio_pika.connect(amqp_url)
        channel = await conn.channel(publisher_confirms=True)
        replies = await channel.declare_queue(reply_queue_name(), exclusive=True)
        job = ChatJob(
            v=1,
            request_id="gone-1",
            target=sealed_target(keyring, model="mock-gone"),
            messages=[Message(role="user", content="x")],
        )
        exchange = await channel.get_exchange(t.JOBS_EXCHANGE)
        await exchange.publish(
            aio_pika.Message(
                encode(job), reply_to=replies.name, user_id=USER, correlation_id="gone-1"
            ),
            routing_key=t.QUEUE_CHAT,
        )
        await TestBadInput._get(replies)  # the start frame: the job is running
        await replies.delete(if_unused=False, if_empty=False)
        await conn.close()
        give_up = time.monotonic() + 15
        while "reply_queue_gone" not in worker.logs():
            assert time.monotonic() < give_up, worker.logs()
            await asyncio.sleep(0.05)


class TestTimeouts:
    async def test_client_gives_up_without_workers(self, amqp_url: str, target: Target) -> None:
        async with FleetClient(amqp_url, default_timeout=0.5) as client:
            with pytest.raises(ProviderTimeout):
                await client.chat(target, [Message(role="user", content="anyone?")])


class TestDeadLetterNotice:
    async def test_producer_hears_about_a_job_the_broker_dead_lettered(
        self, spawn_worker: SpawnWorker, amqp_url: str
    ) -> None:
        """What the broker does when x-delivery-limit is exceeded, replayed through llm.dlx."""
        await spawn_worker()
        conn = await aio_pika.connect(amqp_url)
        try:
            channel = await conn.channel(publisher_confirms=True)
            replies = await channel.declare_queue(reply_queue_name(), exclusive=True)
            dlx = await channel.get_exchange(t.DEAD_LETTER_EXCHANGE)
            await dlx.publish(
                aio_pika.Message(
                    b"\x80",
                    reply_to=replies.name,
                    user_id=USER,
                    correlation_id="poison-1",
                    headers={
                        "x-death": [{"reason": "delivery_limit", "queue": "llm.chat", "count": 1}]
                    },
                ),
                routing_key="",
            )
            (frame,) = decode_frames((await TestBadInput._get(replies)).body)
        finally:
            await conn.close()
        assert isinstance(frame, Error) and frame.request_id == "poison-1"
        assert frame.code == "internal" and "delivery_limit" in frame.message

    @pytest.mark.parametrize(
        ("owner", "death"),
        [
            (USER, None),  # no broker record: not a dead-lettered job
            (USER, [{"reason": "rejected", "queue": "llm.elsewhere"}]),  # not a job queue
            ("someone-else", [{"reason": "delivery_limit", "queue": "llm.chat"}]),
        ],
        ids=["no-x-death", "not-a-job-queue", "queue-of-another-login"],
    )
    async def test_notices_nobody_can_attribute_go_unanswered(
        self,
        spawn_worker: SpawnWorker,
        amqp_url: str,
        owner: str,
        death: list[dict[str, str]] | None,
    ) -> None:
        worker = await spawn_worker()
        conn = await aio_pika.connect(amqp_url)
        try:
            channel = await conn.channel(publisher_confirms=True)
            replies = await channel.declare_queue(reply_queue_name(owner), exclusive=True)
            dlx = await channel.get_exchange(t.DEAD_LETTER_EXCHANGE)
            headers = {} if death is None else {"x-death": death}
            await dlx.publish(
                aio_pika.Message(
                    b"\x80",
                    reply_to=replies.name,
                    user_id=USER,
                    correlation_id="notice-1",
                    headers=headers,
                ),
                routing_key="",
            )
            give_up = time.monotonic() + 10
            while "dead_notice_unattributable" not in worker.logs():
                assert time.monotonic() < give_up, worker.logs()
                await asyncio.sleep(0.05)
            assert await replies.get(fail=False, no_ack=True) is None
        finally:
            await conn.close()


class TestProviderFailures:
    async def test_connection_dropped_mid_stream_is_reported_not_retried(
        self, spawn_worker: SpawnWorker, client: FleetClient, keyring: Keyring, mock: RunningMock
    ) -> None:
        """After the first token the job cannot be retried silently: the caller must know."""
        await spawn_worker()
        model = await fault_model(mock, "mdrop", "drop-after:3", 5)
        seen: list[str] = []
        with pytest.raises(ProviderUnavailable):
            async for ev in client.stream_chat(
                sealed_target(keyring, model=model), [Message(role="user", content="drop me")]
            ):
                if isinstance(ev, Delta):
                    seen.append(ev.text)
        assert seen, "tokens before the drop reach the caller"
        stats = await mock_admin(mock, "GET", "/_mock/stats")
        await mock_admin(mock, "DELETE", "/_mock/faults")
        assert stats["queued_faults"] and stats["faults_by_kind"]["drop-after"] >= 1

    async def test_drop_before_the_first_token_is_retried(
        self, spawn_worker: SpawnWorker, client: FleetClient, keyring: Keyring, mock: RunningMock
    ) -> None:
        await spawn_worker()
        model = await fault_model(mock, "mdrop0", "drop-after:0", 1)
        text, final, _ = await collect(client, sealed_target(keyring, model=model), "drop early")
        assert text and final.metrics.retries == 1

    async def test_silence_longer_than_the_read_timeout_is_a_timeout(
        self, spawn_worker: SpawnWorker, client: FleetClient, keyring: Keyring, mock: RunningMock
    ) -> None:
        await spawn_worker(env={"FLEET_HTTP_READ_TIMEOUT": "0.5"})
        model = await fault_model(mock, "mstall", "stall-after:2:5", 1)
        with pytest.raises(ProviderTimeout):
            await collect(client, sealed_target(keyring, model=model), "stall")


class TestFallbacks:
    async def test_a_failing_primary_falls_back_to_the_next_target(
        self, spawn_worker: SpawnWorker, client: FleetClient, keyring: Keyring, mock: RunningMock
    ) -> None:
        await spawn_worker()
        primary = await fault_model(mock, "mprimary", "404", 1)
        backup = sealed_target(keyring, model="mock-backup")
        final = await client.chat(
            sealed_target(keyring, model=primary),
            [Message(role="user", content="fall back")],
            fallbacks=[backup],
        )
        assert final.target.model == "mock-backup" and final.message is not None
        assert final.message.content == await direct_text(mock, "fall back", "mock-backup")

    async def test_bad_requests_do_not_fall_back_and_are_dead_lettered(
        self, spawn_worker: SpawnWorker, client: FleetClient, keyring: Keyring, dead_letters: Any
    ) -> None:
        await spawn_worker()
        from contracts import BadRequest

        with pytest.raises(BadRequest, match=r"options\.temperature"):
            await client.chat(
                sealed_target(keyring),
                [Message(role="user", content="x")],
                options={"temperature": "hot"},
                fallbacks=[sealed_target(keyring, model="mock-backup")],
                request_id="bad-options-1",
            )
        dead = await dead_letters()
        codes = [m.headers[t.HDR_DEAD_CODE] for m in dead if m.correlation_id == "bad-options-1"]
        assert codes == ["bad_request"]


class TestDurableReplies:
    async def test_backfill_answers_survive_a_producer_restart(
        self, spawn_worker: SpawnWorker, amqp_url: str, keyring: Keyring
    ) -> None:
        from contracts import EmbedJob

        queue = f"test-backfill-{uuid.uuid4().hex[:6]}"
        target = sealed_target(keyring, model="mock-embed")
        ids = [f"backfill-{i}" for i in range(10)]
        async with FleetClient(amqp_url, reply_queue=queue) as first:
            for rid in ids:
                job = EmbedJob(v=1, request_id=rid, target=target, inputs=[rid, "x"])
                await first.submit(job)
        # The producer is gone before any worker has run: answers must wait for it.
        await spawn_worker()
        got: dict[str, Final] = {}
        async with FleetClient(amqp_url, reply_queue=queue) as second:
            async with asyncio.timeout(30):
                async for answer in second.results():
                    assert isinstance(answer, Final), answer
                    got[answer.request_id] = answer
                    if len(got) == len(ids):
                        break
            await second.delete_reply_queue()
        assert sorted(got) == sorted(ids)
        assert all(f.embeddings is not None and f.embeddings.count == 2 for f in got.values())
