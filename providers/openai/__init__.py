"""OpenAI's Chat Completions dialect: OpenAI itself and every server speaking it.

The same adapter is registered under several names that differ only in their
default address: `openai`, `openai-compatible` (no default: the operator or the
credential names the server) and `mock` (the built-in mock server, for the demo
and tests). vLLM and Ollama have folders of their own (`providers/vllm`,
`providers/ollama`), which reuse this adapter for what they share with OpenAI.
"""

from __future__ import annotations

from dataclasses import replace

from providers.core.limits import EmbedLimits
from providers.core.spec import Capability, ProviderSpec
from providers.openai.adapter import OpenAICompatible

_ALL = Capability.CHAT | Capability.STREAM | Capability.TOOLS | Capability.EMBED
_ALL |= Capability.VERIFY

# OpenAI's embeddings reference: at most 2,048 inputs, each at most 8,192 tokens (a
# longer one is refused, not cut), and 300,000 tokens in all. OpenAI-compatible
# servers are held to the same: their clients are written for it.
EMBED_LIMITS = EmbedLimits(max_inputs=2048, max_input_tokens=8192, max_request_tokens=300_000)

SPEC = ProviderSpec(
    name="openai",
    capabilities=_ALL,
    build=OpenAICompatible,
    default_base_url="https://api.openai.com/v1",
    auth="bearer",
    credential_fields=("api_key", "base_url", "organization", "project"),
    description="OpenAI Chat Completions and Embeddings",
    embed_limits=EMBED_LIMITS,
)

SPECS = (
    SPEC,
    replace(
        SPEC,
        name="openai-compatible",
        default_base_url=None,
        description="any server speaking OpenAI's API; its address comes from the "
        "operator (FLEET_PROVIDER_URLS) or the credential's base_url",
    ),
    replace(
        SPEC,
        name="mock",
        default_base_url="http://127.0.0.1:8900/openai/v1",
        description="the built-in mock server (`llm-fleet mock-provider`), OpenAI dialect",
    ),
)
