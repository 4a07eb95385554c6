"""Anthropic's Messages API: `anthropic` itself and `anthropic-mock`, the built-in
mock server's Anthropic dialect (`llm-fleet mock-provider`, under `/anthropic`)."""

from __future__ import annotations

from dataclasses import replace

from providers.anthropic.adapter import Anthropic
from providers.anthropic.ratelimits import anthropic_rate_limits
from providers.core.spec import Capability, ProviderSpec

SPEC = ProviderSpec(
    name="anthropic",
    capabilities=Capability.CHAT | Capability.STREAM | Capability.TOOLS | Capability.VERIFY,
    build=Anthropic,
    default_base_url="https://api.anthropic.com/v1",
    auth="x-api-key",
    credential_fields=("api_key", "base_url", "anthropic_version", "anthropic_beta"),
    description="Anthropic Messages API",
    rate_limits=anthropic_rate_limits,
)

SPECS = (
    SPEC,
    replace(
        SPEC,
        name="anthropic-mock",
        default_base_url="http://127.0.0.1:8900/anthropic/v1",
        description="the built-in mock server (`llm-fleet mock-provider`), Anthropic dialect",
    ),
)
