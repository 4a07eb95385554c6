"""Cohere's API v2: `cohere` itself and `cohere-mock`, the built-in mock server's
Cohere dialect (`llm-fleet mock-provider`, under `/cohere`)."""

from __future__ import annotations

from dataclasses import replace

from providers.cohere.adapter import Cohere
from providers.cohere.embed import BATCH
from providers.core.limits import EmbedLimits
from providers.core.spec import Capability, ProviderSpec

SPEC = ProviderSpec(
    name="cohere",
    capabilities=Capability.CHAT
    | Capability.STREAM
    | Capability.TOOLS
    | Capability.EMBED
    | Capability.RERANK
    | Capability.VERIFY,
    build=Cohere,
    default_base_url="https://api.cohere.com",
    auth="bearer",
    credential_fields=("api_key", "base_url"),
    description="Cohere API v2: Chat, Embed, Rerank",
    # 96 texts a request; a longer text is cut (`truncate` defaults to END).
    embed_limits=EmbedLimits(max_inputs=BATCH),
)

SPECS = (
    SPEC,
    replace(
        SPEC,
        name="cohere-mock",
        default_base_url="http://127.0.0.1:8900/cohere",
        description="the built-in mock server (`llm-fleet mock-provider`), Cohere dialect",
    ),
)
