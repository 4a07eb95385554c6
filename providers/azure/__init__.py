"""Azure OpenAI and Azure AI Foundry: OpenAI's dialect on a customer's own resource.

Three names share one adapter (`providers.azure.adapter`):

* `azure`: Azure OpenAI, dated API versions by default (`2024-10-21`), the
  deployment in the path;
* `azure-foundry`: the same API in its v1 form (`/openai/v1/…`, the deployment
  as `model`, no api-version), the form Azure AI Foundry resources
  (`*.services.ai.azure.com`) document and the only one serving their
  non-OpenAI models. A spec of its own so a Foundry credential needs no
  `api_version`, and an operator can give Foundry and Azure OpenAI different
  addresses and token endpoints;
* `azure-mock`: the built-in mock server's Azure dialect (`llm-fleet mock-provider`).

Neither cloud spec has a default address: the resource is the customer's, named
by the credential's `endpoint` or the operator's FLEET_PROVIDER_URLS.
"""

from __future__ import annotations

from dataclasses import replace

from providers.azure.adapter import AzureFoundry, AzureOpenAI
from providers.azure.auth import ENTRA_TOKEN_URL
from providers.core.spec import Capability, ProviderSpec
from providers.openai import EMBED_LIMITS

_ALL = Capability.CHAT | Capability.STREAM | Capability.TOOLS | Capability.EMBED
_ALL |= Capability.VERIFY

SPEC = ProviderSpec(
    name="azure",
    capabilities=_ALL,
    build=AzureOpenAI,
    default_base_url=None,
    auth="api-key or Entra ID bearer",
    credential_fields=(
        "endpoint",
        "base_url",
        "api_version",
        "deployment",
        "api_key",
        "tenant_id",
        "client_id",
        "client_secret",
        "token_url",
        "scope",
    ),
    default_token_url=ENTRA_TOKEN_URL,
    description="Azure OpenAI (deployments, dated api-version; api_version 'v1' for the v1 API)",
    # Azure OpenAI's embeddings deployments take what OpenAI's API does.
    embed_limits=EMBED_LIMITS,
)

SPECS = (
    SPEC,
    replace(
        SPEC,
        name="azure-foundry",
        build=AzureFoundry,
        description="Azure AI Foundry / Azure OpenAI v1 API (/openai/v1, deployment as model)",
    ),
    replace(
        SPEC,
        name="azure-mock",
        default_base_url="http://127.0.0.1:8900/azure",
        default_token_url="http://127.0.0.1:8900/azure/login/{tenant_id}/oauth2/v2.0/token",
        description="the built-in mock server (`llm-fleet mock-provider`), Azure dialect",
    ),
)
