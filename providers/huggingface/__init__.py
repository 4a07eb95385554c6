"""Hugging Face Inference Providers, through the router (`router.huggingface.co`).

Two names share one adapter (`providers.huggingface.adapter`):

* `huggingface`: the router's OpenAI-compatible chat (any model the Hub's
  providers serve, `org/name[:provider|:fastest|:cheapest]`), HF Inference's
  feature-extraction pipeline for embeddings, and the Hub's whoami for credential
  checks;
* `huggingface-mock`: the built-in mock server's Hugging Face dialect
  (`llm-fleet mock-provider`, under `/huggingface`).

Self-hosted TGI speaks OpenAI's dialect (`openai-compatible`); self-hosted TEI is
its own provider.
"""

from __future__ import annotations

from dataclasses import replace

from providers.core.limits import EmbedLimits
from providers.core.spec import Capability, ProviderSpec
from providers.huggingface.adapter import HuggingFace
from providers.huggingface.embed import BATCH
from providers.huggingface.endpoints import DEFAULT_BASE_URL

SPEC = ProviderSpec(
    name="huggingface",
    capabilities=Capability.CHAT
    | Capability.STREAM
    | Capability.TOOLS
    | Capability.EMBED
    | Capability.VERIFY,
    build=HuggingFace,
    default_base_url=DEFAULT_BASE_URL,
    auth="bearer",
    credential_fields=("api_key", "base_url", "bill_to"),
    description="Hugging Face Inference Providers: router chat (org/model[:provider]), "
    "HF Inference feature-extraction embeddings, Hub whoami",
    # HF Inference runs feature extraction on TEI: 32 texts a request by default.
    embed_limits=EmbedLimits(max_inputs=BATCH),
)

SPECS = (
    SPEC,
    replace(
        SPEC,
        name="huggingface-mock",
        default_base_url="http://127.0.0.1:8900/huggingface/v1",
        description="the built-in mock server (`llm-fleet mock-provider`), Hugging Face dialect",
    ),
)
