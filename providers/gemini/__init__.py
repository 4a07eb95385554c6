"""The Gemini API (Google AI Studio): `gemini` itself and `gemini-mock`, the built-in
mock server's Gemini dialect (`llm-fleet mock-provider`, under `/gemini`).

`mapping`, `parse`, `errors`, `mock_generate` and `mock_errors` hold what Vertex AI
shares with Gemini (the same `generateContent` wire under other URLs and auth).
"""

from __future__ import annotations

from dataclasses import replace

from providers.core.limits import EmbedLimits
from providers.core.spec import Capability, ProviderSpec
from providers.gemini.adapter import BATCH_LIMIT, Gemini

_ALL = Capability.CHAT | Capability.STREAM | Capability.TOOLS | Capability.EMBED
_ALL |= Capability.VERIFY

SPEC = ProviderSpec(
    name="gemini",
    capabilities=_ALL,
    build=Gemini,
    default_base_url="https://generativelanguage.googleapis.com/v1beta",
    auth="x-goog-api-key",
    credential_fields=("api_key", "base_url"),
    description="Google Gemini API (AI Studio): generateContent and embeddings",
    # batchEmbedContents takes 100 requests; Gemini's embedding models read 2,048
    # tokens of a text.
    embed_limits=EmbedLimits(max_inputs=BATCH_LIMIT, max_input_tokens=2048),
)

SPECS = (
    SPEC,
    replace(
        SPEC,
        name="gemini-mock",
        default_base_url="http://127.0.0.1:8900/gemini/v1beta",
        description="the built-in mock server (`llm-fleet mock-provider`), Gemini dialect",
    ),
)
