"""Embeddings, for providers that offer them: packed rows, usage, errors."""

from __future__ import annotations

import struct

import pytest

from contracts.errors import FleetError, ProviderUnavailable, RateLimited
from providers.core.spec import Capability
from providers.core.types import EmbedRequest
from providers.registry import Provider
from tests.conformance.support import MockAdmin, check_error, require, secret

TEXTS = ["the first text", "a second, different text", "the first text"]


async def test_embed_rows(provider: Provider, model: str) -> None:
    require(provider, Capability.EMBED)
    result = await provider.embedder().embed(
        EmbedRequest(model=model, inputs=TEXTS), secret(provider)
    )
    assert result.count == len(TEXTS)
    assert result.dims > 0
    assert len(result.data) == result.count * result.dims * 4
    rows = [
        struct.unpack_from(f"<{result.dims}f", result.data, i * result.dims * 4)
        for i in range(result.count)
    ]
    # In input order: equal texts have equal vectors, different texts do not.
    assert rows[0] == rows[2]
    assert rows[0] != rows[1]
    assert result.usage.input_tokens > 0


async def test_embed_errors(provider: Provider, model: str, admin: MockAdmin) -> None:
    require(provider, Capability.EMBED)
    req = EmbedRequest(model=model, inputs=TEXTS)
    for spec, cls, status in (("500", ProviderUnavailable, 500), ("429", RateLimited, 429)):
        await admin.fault(spec, model)
        with pytest.raises(FleetError) as info:
            await provider.embedder().embed(req, secret(provider))
        check_error(info.value, provider, cls, retryable=True, status=status)
