"""Amazon Bedrock: `bedrock` itself and `bedrock-mock`, the built-in mock server's
Bedrock dialect (`llm-fleet mock-provider`, under `/bedrock`, with the mock's
default access keys: `providers.bedrock.mock_auth`)."""

from __future__ import annotations

from dataclasses import replace

from providers.bedrock.adapter import Bedrock
from providers.bedrock.endpoints import DEFAULT_BASE_URL
from providers.core.spec import Capability, ProviderSpec

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
