"""HuggingFace Text Embeddings Inference: `tei` (no default address: the operator or
the credential names the server) and `tei-mock`, the built-in mock server's TEI
dialect (`llm-fleet mock-provider`, under `/tei`)."""

from __future__ import annotations

from dataclasses import replace

from providers.core.limits import EmbedLimits
from providers.core.spec import Capability, ProviderSpec
from providers.tei.adapter import DEFAULT_BATCH, TEI

SPEC = ProviderSpec(
    name="tei",
    capabilities=Capability.EMBED | Capability.RERANK | Capability.VERIFY,
    build=TEI,
    default_base_url=None,
    auth="bearer",
    credential_fields=("api_key", "base_url"),
    description="HuggingFace Text Embeddings Inference (self-hosted or an Inference "
    "Endpoint); its address comes from the operator (FLEET_PROVIDER_URLS) or the "
    "credential's base_url, the api_key is optional",
    # TEI's --max-client-batch-size (32 unless the operator changed it); long texts
    # are cut (`truncate: true`).
    embed_limits=EmbedLimits(max_inputs=DEFAULT_BATCH),
)

SPECS = (
    SPEC,
    replace(
        SPEC,
        name="tei-mock",
        default_base_url="http://127.0.0.1:8900/tei",
        description="the built-in mock server (`llm-fleet mock-provider`), TEI dialect",
    ),
)
