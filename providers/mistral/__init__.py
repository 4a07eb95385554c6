"""Mistral (La Plateforme): chat, streaming, tools, embeddings, credential checks.

`mistral` calls Mistral itself; `mistral-mock` the built-in mock server's
Mistral dialect (`llm-fleet mock-provider`), for the demo and tests.
"""

from __future__ import annotations

from dataclasses import replace

from providers.core.spec import Capability, ProviderSpec
from providers.mistral.adapter import Mistral

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
