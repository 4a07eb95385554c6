"""Voyage AI: `voyage` itself and `voyage-mock`, the built-in mock server's Voyage
dialect (`llm-fleet mock-provider`, under `/voyage`)."""

from __future__ import annotations

from dataclasses import replace

from providers.core.limits import EmbedLimits
from providers.core.spec import Capability, ProviderSpec
from providers.voyage.adapter import Voyage
from providers.voyage.limits import MAX_INPUTS, embed_token_limit

# 1,000 texts a request, and a cap on their tokens that depends on the model
# (providers/voyage/limits.py has the table and the rest's 120K); a long text is
# cut to the model's context (`truncation: true`).
_CAPPED_MODELS = (
    "voyage-4-lite",
    "voyage-3.5-lite",
    "voyage-3-lite",
    "voyage-4",
    "voyage-3.5",
    "voyage-3",
    "voyage-2",
)
EMBED_LIMITS = EmbedLimits(
    max_inputs=MAX_INPUTS,
    max_request_tokens=embed_token_limit("voyage-3-large"),  # as every model not listed
    by_model={
        model: EmbedLimits(max_inputs=MAX_INPUTS, max_request_tokens=embed_token_limit(model))
        for model in _CAPPED_MODELS
    },
)

SPEC = ProviderSpec(
    name="voyage",
    capabilities=Capability.EMBED | Capability.RERANK | Capability.VERIFY,
    build=Voyage,
    default_base_url="https://api.voyageai.com/v1",
    auth="bearer",
    credential_fields=("api_key", "base_url"),
    description="Voyage AI embeddings and rerankers",
    embed_limits=EMBED_LIMITS,
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
