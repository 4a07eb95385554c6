"""Ollama: its native API (`ollama`), its OpenAI-compatible `/v1` (`ollama-openai`), and
`ollama-mock`, the built-in mock server's Ollama dialect (`llm-fleet mock-provider`,
under `/ollama`).

`ollama` speaks `/api/chat` (NDJSON streams, tool calls whole, arguments as
objects), `/api/embed`, `/api/version` and `/api/tags` (`providers.ollama.adapter`).
`ollama-openai` is the OpenAI adapter pointed at Ollama's `/v1`, for jobs written
against the OpenAI dialect; it streams usage too, but knows none of the native
API's options (`format` schemas, `think`).
"""

from __future__ import annotations

from dataclasses import replace

from providers.core.limits import EmbedLimits
from providers.core.spec import Capability, ProviderSpec
from providers.ollama.adapter import Ollama
from providers.openai.adapter import OpenAICompatible

_ALL = Capability.CHAT | Capability.STREAM | Capability.TOOLS | Capability.EMBED
_ALL |= Capability.VERIFY

SPEC = ProviderSpec(
    name="ollama",
    capabilities=_ALL,
    build=Ollama,
    default_base_url="http://localhost:11434",
    auth="none, or bearer (ollama.com)",
    credential_fields=("api_key", "base_url"),
    description="Ollama's native API (/api/chat, /api/embed)",
    # Ollama documents no limit on inputs and cuts a long one to the model's context
    # (`truncate` defaults to true): OpenAI's count keeps one answer of a sane size.
    embed_limits=EmbedLimits(max_inputs=2048),
)

SPECS = (
    SPEC,
    replace(
        SPEC,
        name="ollama-openai",
        build=OpenAICompatible,
        default_base_url="http://localhost:11434/v1",
        description="Ollama's OpenAI-compatible API (/v1)",
    ),
    replace(
        SPEC,
        name="ollama-mock",
        default_base_url="http://127.0.0.1:8900/ollama",
        description="the built-in mock server (`llm-fleet mock-provider`), Ollama's native dialect",
    ),
)
