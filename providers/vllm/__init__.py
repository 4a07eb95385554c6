"""vLLM's OpenAI-compatible server (`vllm`): chat, streams, tools, embeddings, rerank;
and `vllm-mock`, the built-in mock server's vLLM dialect (`llm-fleet mock-provider`,
under `/vllm`).

See `providers.vllm.adapter`. The server takes no credential unless started with
`--api-key`; then the key goes as a Bearer token.
"""

from __future__ import annotations

from dataclasses import replace

from providers.core.limits import EmbedLimits
from providers.core.spec import Capability, ProviderSpec
from providers.vllm.adapter import Vllm

_ALL = Capability.CHAT | Capability.STREAM | Capability.TOOLS | Capability.EMBED
_ALL |= Capability.RERANK | Capability.VERIFY

SPEC = ProviderSpec(
    name="vllm",
    capabilities=_ALL,
    build=Vllm,
    default_base_url="http://localhost:8000/v1",
    auth="none, or bearer (--api-key)",
    credential_fields=("api_key", "base_url"),
    description="vLLM's OpenAI-compatible server (chat, embeddings, rerank)",
    # vLLM documents no limit on inputs (OpenAI's count is used); one text may be as
    # long as the served model's context, which only the server knows.
    embed_limits=EmbedLimits(max_inputs=2048),
)

SPECS = (
    SPEC,
    replace(
        SPEC,
        name="vllm-mock",
        default_base_url="http://127.0.0.1:8900/vllm/v1",
        description="the built-in mock server (`llm-fleet mock-provider`), vLLM dialect",
    ),
)
