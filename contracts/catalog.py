"""What the fleet can call: one entry per registered provider.

Shared by `llm-fleet providers`, the worker's catalog answer and
`FleetClient.providers()`, so a producer learns the provider names and what
each supports without sending a job that fails.
"""

from __future__ import annotations

from msgspec import Struct

# Capability names, as they appear in `ProviderInfo.capabilities`.
CHAT = "chat"
STREAM = "stream"
TOOLS = "tools"
EMBED = "embed"
RERANK = "rerank"
VERIFY = "verify"


class ProviderInfo(Struct, kw_only=True, omit_defaults=True):
    name: str
    capabilities: list[str]
    # None: the operator or the credential must give one (e.g. a self-hosted server).
    default_base_url: str | None = None
    auth: str = "bearer"
    # Credential fields the adapter reads (api_key first); others are ignored.
    credential_fields: list[str] = []
    # One line on what the provider is, for people reading the list.
    description: str = ""


class CatalogRequest(Struct, kw_only=True, omit_defaults=True):
    """`FleetClient.providers()`: published to `llm.catalog` with `reply_to` and
    `correlation_id` (= request_id); a worker answers with a `catalog` frame."""

    v: int = 1
    request_id: str
