"""Replicate's predictions API: `replicate` itself and `replicate-mock`, the built-in
mock server's Replicate dialect (`llm-fleet mock-provider`, under `/replicate`)."""

from __future__ import annotations

from dataclasses import replace

from providers.core.spec import Capability, ProviderSpec
from providers.replicate.adapter import Replicate

SPEC = ProviderSpec(
    name="replicate",
    capabilities=Capability.CHAT | Capability.STREAM | Capability.VERIFY,
    build=Replicate,
    default_base_url="https://api.replicate.com/v1",
    auth="bearer",
    credential_fields=("api_key", "base_url"),
    description="Replicate predictions API (language models)",
)

SPECS = (
    SPEC,
    replace(
        SPEC,
        name="replicate-mock",
        default_base_url="http://127.0.0.1:8900/replicate/v1",
        description="the built-in mock server (`llm-fleet mock-provider`), Replicate dialect",
    ),
)
