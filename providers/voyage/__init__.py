"""Voyage AI: `voyage` itself and `voyage-mock`, the built-in mock server's Voyage
dialect (`llm-fleet mock-provider`, under `/voyage`)."""

from __future__ import annotations

from dataclasses import replace

from providers.core.spec import Capability, ProviderSpec
from providers.voyage.adapter import Voyage

SPEC = ProviderSpec(
    name="voyage",
    capabilities=Capability.EMBED | Capability.RERANK | Capability.VERIFY,
    build=Voyage,
    default_base_url="https://api.voyageai.com/v1",
    auth="bearer",
    credential_fields=("api_key", "base_url"),
    description="Voyage AI embeddings and rerankers",
)

SPECS = (
    SPEC,
    replace(
        SPEC,
        name="voyage-mock",
        default_base_url="http://127.0.0.1:8900/voyage/v1",
        description="the built-in mock server (`llm-fleet mock-provider`), Voyage dialect",
    ),
)
