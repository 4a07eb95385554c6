"""Label values for /metrics, bounded so that no producer can grow the number of series.

Every label value comes from a closed set (job kinds, outcomes: `ok` or an error
code), from this worker's provider registry, or from model names. Producers choose
model names, so each provider keeps the first `models_per_provider` it sees under
their own name and counts the rest as `other`. Nothing that varies per request
(request ids, error text, tenants) is ever a label: the audit trail has those.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Final

from contracts.codes import ErrorCode

OTHER: Final = "other"

KINDS: Final = frozenset({"chat", "embed", "rerank", "verify", "unknown"})
OUTCOMES: Final = frozenset({"ok", "reply_queue_gone", *(code.value for code in ErrorCode)})

# `gen_ai.operation.name`: the semantic conventions' well-known value where one
# applies (chat, embeddings); rerank and verify have none, so they keep their own.
OPERATION_NAMES: Final[Mapping[str, str]] = {
    "chat": "chat",
    "embed": "embeddings",
    "rerank": "rerank",
    "verify": "verify",
}

# `gen_ai.provider.name`: the conventions require their well-known value where one
# applies; every other provider (self-hosted servers, mocks…) keeps its registry name.
SEMCONV_PROVIDER_NAMES: Final[Mapping[str, str]] = {
    "anthropic": "anthropic",
    "azure": "azure.ai.openai",
    "azure-foundry": "azure.ai.inference",
    "bedrock": "aws.bedrock",
    "cohere": "cohere",
    "gemini": "gcp.gemini",
    "mistral": "mistral_ai",
    "openai": "openai",
    "vertex": "gcp.vertex_ai",
}

MODELS_PER_PROVIDER: Final = 200
# Without a registry (tests, tools) provider names are capped like model names.
MAX_PROVIDERS: Final = 64


class LabelBounds:
    """Maps raw names to label values, remembering which model names got a series."""

    def __init__(
        self,
        providers: Iterable[str] | None = None,
        *,
        models_per_provider: int = MODELS_PER_PROVIDER,
    ) -> None:
        self._known = None if providers is None else frozenset(providers)
        self._models_per_provider = models_per_provider
        self._models: dict[str, set[str]] = {}

    def provider(self, name: str) -> str:
        """The registry name, or `other` for a name no adapter answers to (a job's typo)."""
        if self._known is not None:
            return name if name in self._known else OTHER
        if name in self._models or len(self._models) < MAX_PROVIDERS:
            self._models.setdefault(name, set())
            return name
        return OTHER

    def model(self, provider: str, model: str) -> str:
        """`model` under `provider` (a label from `provider()`), or `other` past the cap."""
        if provider == OTHER:
            return OTHER
        seen = self._models.setdefault(provider, set())
        if model in seen:
            return model
        if len(seen) < self._models_per_provider:
            seen.add(model)
            return model
        return OTHER

    @staticmethod
    def kind(kind: str) -> str:
        return kind if kind in KINDS else OTHER

    @staticmethod
    def outcome(status: str) -> str:
        return status if status in OUTCOMES else OTHER


def semconv_provider(provider: str) -> str:
    """`gen_ai.provider.name` for a provider label (already bounded)."""
    return SEMCONV_PROVIDER_NAMES.get(provider, provider)
