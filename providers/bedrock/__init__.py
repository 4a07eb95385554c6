"""Amazon Bedrock: `bedrock` itself and `bedrock-mock`, the built-in mock server's
Bedrock dialect (`llm-fleet mock-provider`, under `/bedrock`, with the mock's
default access keys: `providers.bedrock.mock_auth`)."""

from __future__ import annotations

from dataclasses import replace

from providers.bedrock.adapter import Bedrock
from providers.bedrock.embed import COHERE_BATCH
from providers.bedrock.endpoints import DEFAULT_BASE_URL
from providers.core.limits import EmbedLimits
from providers.core.spec import Capability, ProviderSpec

# InvokeModel bodies are the model's own. Titan takes one text a call, up to 8,192
# tokens; Cohere's Embed takes 96, and refuses a text past its context (Bedrock's
# `truncate` defaults to NONE): 512 tokens for v3, 128K for v4, which is also served
# through the geographic and global inference profiles. Any other model id gets
# Titan's body (providers/bedrock/embed.py), so one text a call.
_TITAN = EmbedLimits(max_inputs=1, max_input_tokens=8192)
_COHERE_V3 = EmbedLimits(max_inputs=COHERE_BATCH, max_input_tokens=512)
_COHERE_V4 = EmbedLimits(max_inputs=COHERE_BATCH, max_input_tokens=128_000)
EMBED_LIMITS = EmbedLimits(
    max_inputs=1,
    by_model={
        "amazon.titan-embed-text-v2:0": _TITAN,
        "amazon.titan-embed-text-v1": _TITAN,
        "amazon.titan-embed-g1-text-02": _TITAN,
        "cohere.embed-english-v3": _COHERE_V3,
        "cohere.embed-multilingual-v3": _COHERE_V3,
        **{f"{profile}cohere.embed-v4:0": _COHERE_V4 for profile in ("", "us.", "eu.", "global.")},
    },
)

SPEC = ProviderSpec(
    name="bedrock",
    capabilities=Capability.CHAT
    | Capability.STREAM
    | Capability.TOOLS
    | Capability.EMBED
    | Capability.RERANK
    | Capability.VERIFY,
    build=Bedrock,
    default_base_url=DEFAULT_BASE_URL,
    auth="sigv4",
    credential_fields=(
        "access_key_id",
        "secret_access_key",
        "session_token",
        "region",
        "api_key",
        "base_url",
    ),
    description="Amazon Bedrock: Converse, InvokeModel embeddings (Titan, Cohere), Rerank; "
    "SigV4 or a Bedrock API key",
    embed_limits=EMBED_LIMITS,
)

SPECS = (
    SPEC,
    replace(
        SPEC,
        name="bedrock-mock",
        default_base_url="http://127.0.0.1:8900/bedrock",
        description="the built-in mock server (`llm-fleet mock-provider`), Bedrock dialect",
    ),
)
