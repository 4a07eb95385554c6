"""Executor: an unexpected provider crash is logged redacted and travels on without its text."""

from __future__ import annotations

import base64
import io
import os
from collections.abc import AsyncIterator
from typing import Any

import pytest

from contracts.frames import Usage
from contracts.jobs import ChatJob, Credential, Message, Target
from providers.base import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    RerankRequest,
    RerankResult,
    Secret,
    StreamEvent,
    VerifyResult,
)
from providers.registry import ProviderRegistry
from providers.retry import RetryPolicy
from workers.credentials import CredentialResolver
from workers.crypto import Keyring, seal
from workers.execute import Executor, ProviderCallCrashed, RunState
from workers.logs import configure_logging

KEY = "sk-crash-canary-123456"


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
    registry.register("leaky", Leaky())
    executor = Executor(registry, CredentialResolver(ring), RetryPolicy())
    job = ChatJob(
        v=1,
        request_id="r",
        messages=[Message(role="user", content="x")],
        stream=stream,
        target=Target(
            provider="leaky",
            model="m",
            credential=Credential(sealed=seal(ring, "leaky", {"api_key": KEY})),
        ),
    )
    with pytest.raises(ProviderCallCrashed) as info:
        await executor.run(job, NullStream(), RunState())  # type: ignore[arg-type]
    assert str(info.value) == "RuntimeError" and info.value.__cause__ is None
    logged = out.getvalue()
    assert "provider_call_crashed" in logged and "[redacted]" in logged
    assert KEY not in logged
