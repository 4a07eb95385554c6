"""Mistral (La Plateforme): chat, streaming, tools, embeddings, credential checks.

`mistral` calls Mistral itself; `mistral-mock` the built-in mock server's
Mistral dialect (`llm-fleet mock-provider`), for the demo and tests.
"""

from __future__ import annotations

from dataclasses import replace

from providers.core.limits import EmbedLimits
from providers.core.spec import Capability, ProviderSpec
from providers.mistral.adapter import Mistral
from providers.mistral.embed import MAX_INPUTS, MAX_TOKENS
from providers.mistral.ratelimits import mistral_rate_limits

_ALL = Capability.CHAT | Capability.STREAM | Capability.TOOLS | Capability.EMBED
_ALL |= Capability.VERIFY

SPEC = ProviderSpec(
    name="mistral",
    capabilities=_ALL,
    build=Mistral,
    default_base_url="https://api.mistral.ai/v1",
    auth="bearer",
    credential_fields=("api_key", "base_url", "safe_prompt"),
    description="Mistral AI chat completions and embeddings",
    rate_limits=mistral_rate_limits,
    # 512 inputs and 16,384 tokens a request (providers/mistral/embed.py); a text past
    # the model's 8,192 tokens is refused, not cut.
    embed_limits=EmbedLimits(
        max_inputs=MAX_INPUTS, max_input_tokens=8192, max_request_tokens=MAX_TOKENS
    ),
)

SPECS = (
    SPEC,
    replace(
        SPEC,
        name="mistral-mock",
        default_base_url="http://127.0.0.1:8900/mistral/v1",
        description="the built-in mock server (`llm-fleet mock-provider`), Mistral dialect",
    ),
)
