"""Executor: crashes are logged redacted, non-JSON numbers rejected, provider streams closed."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import gc
import io
import json
import os
import sys
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from aiormq.exceptions import ChannelInvalidStateError

from contracts.errors import BadRequest, ContractError
from contracts.frames import ToolCallDelta, Usage
from contracts.jobs import ChatJob, Credential, EmbedJob, Message, Target, Tool, ToolCall
from providers.core.http import HttpClientPool
from providers.core.spec import Capability, ProviderContext, ProviderSpec
from providers.core.types import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    RefusalDelta,
    RerankRequest,
    RerankResult,
    Secret,
    StreamEnd,
    StreamEvent,
    VerifyResult,
)
from providers.mock.config import MockConfig
from providers.mock.server import start_mock
from providers.openai.adapter import OpenAICompatible
from providers.registry import ProviderRegistry
from providers.retry import RetryPolicy
from workers.credentials import CredentialResolver
from workers.crypto import Keyring, seal
from workers.execute import Executor, InputRejected, ProviderCallCrashed, RunState
from workers.logs import configure_logging
from workers.reply import ReplyQueueGone

KEY = "sk-crash-canary-123456"
# The broker user a job was published by: its envelopes are sealed for it.
TENANT = "guest"
ROOT = Path(__file__).resolve().parents[2]


class Leaky:
    """A provider whose library blows up quoting the key (as some clients do)."""

    name = "leaky"

    async def chat(self, req: ChatRequest, secret: Secret) -> ChatResult:
        raise RuntimeError(f"header value {secret.api_key!r} rejected")

    async def stream_chat(self, req: ChatRequest, secret: Secret) -> AsyncIterator[StreamEvent]:
        raise RuntimeError(f"header value {secret.api_key!r} rejected")
        yield  # pragma: no cover

    async def embed(self, req: EmbedRequest, secret: Secret) -> EmbedResult:
        return EmbedResult(data=b"", dims=0, count=0, usage=Usage())

    async def rerank(self, req: RerankRequest, secret: Secret) -> RerankResult:
        return RerankResult(items=[], usage=Usage())

    async def verify(self, secret: Secret) -> VerifyResult:
        return VerifyResult(ok=True)


class NullStream:
    first_delta_at = None

    def text(self, piece: str) -> None: ...

    def tool(self, delta: Any) -> None: ...


@pytest.mark.parametrize("stream", [True, False])
async def test_crash_is_logged_redacted_and_reduced_to_its_type(stream: bool) -> None:
    out = io.StringIO()
    configure_logging("json", "INFO", stream=out)
    ring = Keyring.from_env({"INTEGRATION_CRYPTO_KEY": base64.b64encode(os.urandom(32)).decode()})
    registry = ProviderRegistry()
    registry.register_adapter("leaky", Leaky())
    executor = Executor(registry, CredentialResolver(ring), RetryPolicy())
    job = ChatJob(
        v=1,
        request_id="r",
        messages=[Message(role="user", content="x")],
        stream=stream,
        target=Target(
            provider="leaky",
            model="m",
            credential=Credential(sealed=seal(ring, "leaky", {"api_key": KEY}, tenant=TENANT)),
        ),
    )
    with pytest.raises(ProviderCallCrashed) as info:
        await executor.run(job, NullStream(), RunState(tenant=TENANT))  # type: ignore[arg-type]
    assert str(info.value) == "RuntimeError" and info.value.__cause__ is None
    logged = out.getvalue()
    assert "provider_call_crashed" in logged and "[redacted]" in logged
    assert KEY not in logged


# -- requests that are not JSON ---------------------------------------------------------


def sealed(ring: Keyring, provider: str, model: str = "m") -> Target:
    return Target(
        provider=provider,
        model=model,
        credential=Credential(sealed=seal(ring, provider, {"api_key": KEY}, tenant=TENANT)),
    )


def new_ring() -> Keyring:
    return Keyring.from_env({"INTEGRATION_CRYPTO_KEY": base64.b64encode(os.urandom(32)).decode()})


def http_provider(
    name: str, handler: Callable[[httpx.Request], httpx.Response]
) -> tuple[OpenAICompatible, HttpClientPool]:
    pool = HttpClientPool(transport=httpx.MockTransport(handler))
    return OpenAICompatible(ProviderContext(name, pool, "https://llm.test/v1")), pool


@pytest.mark.parametrize(
    ("tools", "options", "field"),
    [
        (
            [Tool(name="t", parameters={"type": "object", "maximum": float("inf")})],
            {},
            "tools[0].function.parameters.maximum",
        ),
        ([], {"model.temperature": float("nan")}, "options.model.temperature"),
    ],
)
@pytest.mark.parametrize("stream", [True, False])
async def test_non_finite_numbers_are_rejected_without_a_fallback(
    tools: list[Tool], options: dict[str, Any], field: str, stream: bool
) -> None:
    sent: list[httpx.Request] = []

    def handler(r: httpx.Request) -> httpx.Response:
        sent.append(r)
        return httpx.Response(500)

    ring = new_ring()
    registry = ProviderRegistry()
    primary, pool_a = http_provider("primary", handler)
    backup, pool_b = http_provider("backup", handler)
    registry.register_adapter("primary", primary)
    registry.register_adapter("backup", backup)
    job = ChatJob(
        v=1,
        request_id="r",
        messages=[Message(role="user", content="x")],
        tools=tools,
        options=options,
        stream=stream,
        target=sealed(ring, "primary"),
        fallbacks=[sealed(ring, "backup")],
    )
    executor = Executor(registry, CredentialResolver(ring), RetryPolicy())
    try:
        # InputRejected: answered with bad_request *and* dead-lettered, as the job
        # can never succeed, on this target or any other.
        with pytest.raises(InputRejected) as info:
            await executor.run(job, NullStream(), RunState(tenant=TENANT))  # type: ignore[arg-type]
    finally:
        await pool_a.aclose()
        await pool_b.aclose()
    error = info.value.error
    assert isinstance(error, ContractError) and error.field == field
    assert error.code.value == "bad_request" and "not a finite number" in error.message
    assert sent == []


# -- provider streams are closed on every way out --------------------------------------


def sse_chunk(text: str) -> bytes:
    payload = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": None}]}
    return f"data: {json.dumps(payload)}\n\n".encode()


class EndlessBody(httpx.AsyncByteStream):
    """A provider that never stops generating, and records when its response is closed."""

    def __init__(self) -> None:
        self.closed = False
        self.sent = 0

    async def __aiter__(self) -> AsyncIterator[bytes]:
        while True:
            self.sent += 1
            yield sse_chunk(f"t{self.sent} ")
            await asyncio.sleep(0.001)

    async def aclose(self) -> None:
        self.closed = True


class RaisingStream:
    """A reply stream whose `text()` raises (or calls `on_token`) on a given token."""

    first_delta_at = None

    def __init__(
        self, on: int, exc: BaseException | None = None, on_token: Callable[[], None] | None = None
    ) -> None:
        self._on = on
        self._exc = exc
        self._on_token = on_token
        self.seen = 0

    def text(self, piece: str) -> None:
        self.seen += 1
        if self.seen == self._on:
            if self._on_token is not None:
                self._on_token()
            if self._exc is not None:
                raise self._exc

    def tool(self, delta: Any) -> None: ...


@contextlib.contextmanager
def loop_hygiene() -> Iterator[list[AsyncGenerator[Any, Any]]]:
    """Record the async generators of providers/ and workers/ started inside the block,
    and fail if asyncio had anything to report (un-stopped generators, destroyed tasks)."""
    started: list[AsyncGenerator[Any, Any]] = []
    firstiter, finalizer = sys.get_asyncgen_hooks()

    def record(agen: AsyncGenerator[Any, Any]) -> None:
        source = Path(agen.ag_code.co_filename)  # type: ignore[attr-defined]
        if any(source.is_relative_to(ROOT / pkg) for pkg in ("providers", "workers")):
            started.append(agen)
        if firstiter is not None:
            firstiter(agen)

    loop = asyncio.get_running_loop()
    reported: list[dict[str, Any]] = []
    previous = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: reported.append(context))
    sys.set_asyncgen_hooks(firstiter=record, finalizer=finalizer)
    try:
        yield started
    finally:
        sys.set_asyncgen_hooks(firstiter=firstiter, finalizer=finalizer)
        gc.collect()  # anything left for the garbage collector shows up now...
        loop.set_exception_handler(previous)
    assert reported == []


async def settle() -> None:
    """...and whatever the collector handed to the loop runs here."""
    for _ in range(5):
        await asyncio.sleep(0)


def endless_executor(body: EndlessBody) -> tuple[Executor, ChatJob, HttpClientPool]:
    ring = new_ring()
    provider, pool = http_provider(
        "endless", lambda r: httpx.Response(200, stream=body, headers={"content-type": "sse"})
    )
    registry = ProviderRegistry()
    registry.register_adapter("endless", provider)
    job = ChatJob(
        v=1,
        request_id="r",
        messages=[Message(role="user", content="x")],
        stream=True,
        target=sealed(ring, "endless"),
    )
    return Executor(registry, CredentialResolver(ring), RetryPolicy()), job, pool


@pytest.mark.parametrize(
    "exc",
    [
        ReplyQueueGone("amq.gen-x"),
        ConnectionResetError("broker went away"),
        # What aiormq raises into a publish on a channel the broker already closed:
        # a broker failure (the job is redelivered), not a crash of the provider call.
        ChannelInvalidStateError("<Channel 1> closed"),
    ],
    ids=["reply-queue-gone", "broker-error", "channel-closed"],
)
async def test_reply_stream_failure_closes_the_provider_stream_at_once(
    exc: BaseException,
) -> None:
    body = EndlessBody()
    executor, job, pool = endless_executor(body)
    try:
        with loop_hygiene() as generators:
            with pytest.raises(type(exc)):
                await executor.run(job, RaisingStream(on=3, exc=exc), RunState(tenant=TENANT))  # type: ignore[arg-type]
            # Closed before run() returned: not when the collector gets to it.
            assert body.closed
            assert generators and all(g.ag_frame is None for g in generators)
            sent = body.sent
            await settle()
    finally:
        await pool.aclose()
    assert body.sent == sent  # the provider stopped generating


async def test_cancelling_the_job_closes_the_provider_stream_at_once() -> None:
    body = EndlessBody()
    executor, job, pool = endless_executor(body)
    mid_stream = asyncio.Event()
    try:
        with loop_hygiene() as generators:
            stream = RaisingStream(on=3, on_token=mid_stream.set)
            task = asyncio.create_task(executor.run(job, stream, RunState(tenant=TENANT)))  # type: ignore[arg-type]
            await mid_stream.wait()
            task.cancel()  # what a producer's cancel, a lost broker or shutdown does
            with pytest.raises(asyncio.CancelledError):
                await task
            assert body.closed
            assert generators and all(g.ag_frame is None for g in generators)
            await settle()
    finally:
        await pool.aclose()


async def test_reply_queue_gone_hangs_up_on_a_real_http_provider() -> None:
    """Through the real network stack: the mock sees the connection go, mid-stall."""
    mock = await start_mock(MockConfig(accept_any_key=True))
    pool = HttpClientPool()
    ring = new_ring()
    registry = ProviderRegistry()
    adapter = OpenAICompatible(ProviderContext("mock", pool, mock.base_url))
    registry.register_adapter("mock", adapter)
    job = ChatJob(
        v=1,
        request_id="r",
        messages=[Message(role="user", content="x")],
        stream=True,
        target=sealed(ring, "mock", model="mock-stalls"),
    )
    admin = httpx.AsyncClient(base_url=mock.root + "/_mock")
    try:
        fault = {"spec": "stall-after:3:30", "times": 1, "model": "mock-stalls"}
        (await admin.post("/faults", json=fault)).raise_for_status()
        executor = Executor(registry, CredentialResolver(ring), RetryPolicy())
        with loop_hygiene():
            with pytest.raises(ReplyQueueGone):
                # Fails on the second token, while the provider still owes 20+ more.
                stream = RaisingStream(on=2, exc=ReplyQueueGone("amq.gen-x"))
                await executor.run(job, stream, RunState(tenant=TENANT))  # type: ignore[arg-type]
            for _ in range(200):  # the server notices the hang-up on its next loop turns
                stats = (await admin.get("/stats")).json()
                if not stats["open_streams"]:
                    break
                await asyncio.sleep(0.01)
            assert stats["open_streams"] == 0
            assert stats["streams_abandoned"] == 1 and stats["streams_completed"] == 0
            await settle()
    finally:
        await admin.aclose()
        await pool.aclose()
        await mock.close()


# -- capabilities and refusals ---------------------------------------------------------


class Recording:
    """A reply stream that keeps what the executor sends."""

    first_delta_at = None

    def __init__(self) -> None:
        self.sent: list[tuple[str, Any]] = []

    def text(self, piece: str) -> None:
        self.sent.append(("text", piece))

    def tool(self, delta: Any) -> None:
        self.sent.append(("tool", delta))

    def refusal(self, piece: str) -> None:
        self.sent.append(("refusal", piece))


class Refuser:
    """Streams a refusal the way OpenAI's structured outputs do."""

    async def stream_chat(self, req: ChatRequest, secret: Secret) -> AsyncIterator[StreamEvent]:
        yield RefusalDelta("I can't")
        yield RefusalDelta(" help.")
        yield StreamEnd(finish_reason="stop", usage=Usage(input_tokens=3, output_tokens=2))


class ChatOnly:
    """An API that cannot stream: the executor must answer a streamed job in one delta."""

    def __init__(self, message: Message | None = None) -> None:
        self.message = message or Message(role="assistant", content="whole answer")

    async def chat(self, req: ChatRequest, secret: Secret) -> ChatResult:
        return ChatResult(
            message=self.message,
            finish_reason="stop",
            usage=Usage(input_tokens=1, output_tokens=2, total_tokens=3),
        )


def chat_job(ring: Keyring, provider: str, **fields: Any) -> ChatJob:
    return ChatJob(
        v=1,
        request_id="r",
        messages=[Message(role="user", content="x")],
        target=sealed(ring, provider),
        **fields,
    )


async def test_a_streamed_refusal_reaches_deltas_and_the_final_message() -> None:
    ring = new_ring()
    registry = ProviderRegistry()
    registry.register_adapter("refuser", Refuser())
    stream = Recording()
    executor = Executor(registry, CredentialResolver(ring), RetryPolicy())
    fields = await executor.run(chat_job(ring, "refuser"), stream, RunState(tenant=TENANT))  # type: ignore[arg-type]
    assert stream.sent == [("refusal", "I can't"), ("refusal", " help.")]
    assert fields["message"].refusal == "I can't help."
    assert fields["message"].content is None and fields["finish_reason"] == "stop"


async def test_capabilities_decide_before_any_call() -> None:
    ring = new_ring()
    registry = ProviderRegistry()
    registry.register(
        ProviderSpec.custom("plain", Capability.CHAT), ChatOnly()
    )  # no STREAM, no TOOLS
    executor = Executor(registry, CredentialResolver(ring), RetryPolicy())
    stream = Recording()
    fields = await executor.run(chat_job(ring, "plain"), stream, RunState(tenant=TENANT))  # type: ignore[arg-type]
    assert stream.sent == [("text", "whole answer")]
    assert fields["message"].content == "whole answer"
    with pytest.raises(BadRequest, match="provider 'plain' does not support tools"):
        job = chat_job(ring, "plain", tools=[Tool(name="t")])
        await executor.run(job, Recording(), RunState(tenant=TENANT))  # type: ignore[arg-type]
    with pytest.raises(BadRequest, match="provider 'plain' does not support embed"):
        embed = EmbedJob(v=1, request_id="e", inputs=["a"], target=sealed(ring, "plain"))
        await executor.run(embed, Recording(), RunState(tenant=TENANT))  # type: ignore[arg-type]


async def test_an_unstreamed_answer_sends_its_refusal_and_tool_calls_as_deltas() -> None:
    ring = new_ring()
    registry = ProviderRegistry()
    answer = Message(
        role="assistant",
        refusal="I can't help.",
        tool_calls=[ToolCall(id="c1", name="f", arguments="{}")],
    )
    registry.register(ProviderSpec.custom("plain", Capability.CHAT), ChatOnly(answer))
    executor = Executor(registry, CredentialResolver(ring), RetryPolicy())
    stream = Recording()
    await executor.run(chat_job(ring, "plain"), stream, RunState(tenant=TENANT))  # type: ignore[arg-type]
    assert stream.sent == [
        ("refusal", "I can't help."),
        ("tool", ToolCallDelta(index=0, id="c1", name="f", arguments="{}")),
    ]
