"""The Gemini API (Google AI Studio): `gemini` itself and `gemini-mock`, the built-in
mock server's Gemini dialect (`llm-fleet mock-provider`, under `/gemini`).

`mapping`, `parse`, `errors`, `mock_generate` and `mock_errors` hold what Vertex AI
shares with Gemini (the same `generateContent` wire under other URLs and auth).
"""

from __future__ import annotations

from dataclasses import replace

from providers.core.spec import Capability, ProviderSpec
from providers.gemini.adapter import Gemini

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
