"""Name → `Provider` lookup, so workers dispatch through a dict, never if/elif."""

from __future__ import annotations

from collections.abc import Mapping

from contracts.errors import BadRequest
from providers.base import Provider
from providers.http import HttpClientPool
from providers.openai_compat import OpenAICompatible

__all__ = ["OPENAI_COMPATIBLE_DEFAULTS", "ProviderRegistry", "default_registry"]

# Provider name → default base URL (None: the credential or operator must supply one).
OPENAI_COMPATIBLE_DEFAULTS: Mapping[str, str | None] = {
    "openai": "https://api.openai.com/v1",
    "openai-compatible": None,
    "vllm": "http://localhost:8000/v1",
    "ollama": "http://localhost:11434/v1",
    "mock": "http://127.0.0.1:8900/v1",
}


class ProviderRegistry:
    """Adapters by the provider name jobs put in `target.provider`.

    Registering an existing name replaces it (tests swap adapters this way).
    """

    def __init__(self) -> None:
        self._providers: dict[str, Provider] = {}

    def register(self, name: str, provider: Provider) -> None:
        self._providers[name] = provider

    def get(self, name: str) -> Provider:
        try:
            return self._providers[name]
        except KeyError:
            known = ", ".join(self.names())
            raise BadRequest(f"unknown provider {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._providers)

    def __contains__(self, name: object) -> bool:
        return name in self._providers


def default_registry(
    http: HttpClientPool, base_urls: Mapping[str, str] | None = None
) -> ProviderRegistry:
    """Every built-in adapter; `base_urls[name]` replaces that provider's default URL."""
    overrides = base_urls or {}
    registry = ProviderRegistry()
    for name, default in OPENAI_COMPATIBLE_DEFAULTS.items():
        registry.register(name, OpenAICompatible(name, http, overrides.get(name, default)))
    return registry
