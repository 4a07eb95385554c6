"""Vertex AI: Google's Gemini models in a Google Cloud project, with a service account.

The credential is the service account's JSON key file as it is (plus optional
`location` and `project`); the adapter trades it for OAuth2 access tokens. The
default address follows each credential's location (`urls`); an operator's address
(FLEET_PROVIDER_URLS) replaces the host, and FLEET_PROVIDER_TOKEN_URLS the token
endpoint (otherwise the key file's `token_uri`, otherwise Google's).
"""

from __future__ import annotations

from dataclasses import replace

from providers.core.limits import EmbedLimits
from providers.core.spec import Capability, ProviderSpec
from providers.vertex.adapter import Vertex
from providers.vertex.embed import MAX_INSTANCES
from providers.vertex.urls import DEFAULT_BASE_URL

_ALL = Capability.CHAT | Capability.STREAM | Capability.TOOLS | Capability.EMBED
_ALL |= Capability.VERIFY

SPEC = ProviderSpec(
    name="vertex",
    capabilities=_ALL,
    build=Vertex,
    default_base_url=DEFAULT_BASE_URL,
    auth="oauth2-service-account",
    credential_fields=(
        "type",
        "project_id",
        "private_key_id",
        "private_key",
        "client_email",
        "client_id",
        "token_uri",
        "quota_project_id",
        "location",
        "project",
    ),
    description="Vertex AI (Gemini models and text embeddings) with a service account "
    "key; the host follows the credential's location",
    # text-embedding-00x and text-multilingual-embedding-002: 250 instances and 20,000
    # tokens a request; gemini-embedding-001 one instance. A long text is cut to the
    # model's 2,048 tokens (autoTruncate, on by default), not refused.
    embed_limits=EmbedLimits(
        max_inputs=MAX_INSTANCES,
        max_request_tokens=20_000,
        by_model={"gemini-embedding-001": EmbedLimits(max_inputs=1)},
    ),
)

SPECS = (
    SPEC,
    replace(
        SPEC,
        name="vertex-mock",
        default_base_url="http://127.0.0.1:8900/vertex/v1",
        default_token_url="http://127.0.0.1:8900/vertex/token",
        description="the built-in mock server (`llm-fleet mock-provider`), Vertex AI dialect "
        "and token endpoint",
    ),
)
