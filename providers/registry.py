"""Provider name → spec and adapter, built from every provider package's specs.

Adding a provider means adding its folder (`providers/<name>/` exporting
`SPECS`) and its module name to `BUILTIN`; nothing else changes.
"""

from __future__ import annotations

import importlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import cast

from contracts.catalog import ProviderInfo
from contracts.errors import BadRequest
from providers.core.http import HttpClientPool
from providers.core.spec import (
    REQUIRED_METHOD,
    Capability,
    ChatAdapter,
    EmbedAdapter,
    ProviderContext,
    ProviderSpec,
    RerankAdapter,
    StreamAdapter,
    VerifyAdapter,
)

__all__ = ["BUILTIN", "Provider", "ProviderRegistry", "builtin_specs", "default_registry"]

# Provider packages whose `SPECS` the default registry serves.
BUILTIN: tuple[str, ...] = (
    "openai",
    "ollama",
    "vllm",
    "anthropic",
    "gemini",
    "vertex",
    "azure",
    "bedrock",
    "huggingface",
    "mistral",
    "replicate",
    "cohere",
    "voyage",
    "tei",
)


def builtin_specs() -> list[ProviderSpec]:
    specs: list[ProviderSpec] = []
    for module in BUILTIN:
        specs.extend(importlib.import_module(f"providers.{module}").SPECS)
    return specs


@dataclass(frozen=True, slots=True)
class Provider:
    """A registered adapter with its spec; each accessor checks the capability first."""

    spec: ProviderSpec
    adapter: object
    base_url: str | None

    @property
    def name(self) -> str:
        return self.spec.name

    def supports(self, capability: Capability) -> bool:
        return capability in self.spec.capabilities

    def require(self, capability: Capability) -> None:
        if capability not in self.spec.capabilities:
            what = capability.names[0] if capability.names else str(capability)
            raise BadRequest(f"provider {self.name!r} does not support {what}")

    def chat(self) -> ChatAdapter:
        self.require(Capability.CHAT)
        return cast(ChatAdapter, self.adapter)

    def streamer(self) -> StreamAdapter:
        self.require(Capability.STREAM)
        return cast(StreamAdapter, self.adapter)

    def embedder(self) -> EmbedAdapter:
        self.require(Capability.EMBED)
        return cast(EmbedAdapter, self.adapter)

    def reranker(self) -> RerankAdapter:
        self.require(Capability.RERANK)
        return cast(RerankAdapter, self.adapter)

    def verifier(self) -> VerifyAdapter:
        self.require(Capability.VERIFY)
        return cast(VerifyAdapter, self.adapter)

    def info(self) -> ProviderInfo:
        return self.spec.info(self.base_url)


class ProviderRegistry:
    """Providers by the name jobs put in `target.provider`.

    Registering an existing name replaces it (tests swap adapters this way).
    """

    def __init__(self) -> None:
        self._providers: dict[str, Provider] = {}

    def register(self, spec: ProviderSpec, adapter: object, base_url: str | None = None) -> None:
        missing = [
            method
            for capability, method in REQUIRED_METHOD.items()
            if capability in spec.capabilities and not callable(getattr(adapter, method, None))
        ]
        if missing:
            raise TypeError(f"{spec.name}: adapter lacks {', '.join(missing)} its spec promises")
        url = base_url if base_url is not None else spec.default_base_url
        self._providers[spec.name] = Provider(spec, adapter, url)

    def register_adapter(self, name: str, adapter: object) -> None:
        """Register a hand-built adapter (tests, in-process use) with the capabilities
        its methods offer; tools are assumed wherever chat is."""
        capabilities = Capability(0)
        for capability, method in REQUIRED_METHOD.items():
            if callable(getattr(adapter, method, None)):
                capabilities |= capability
        if capabilities & (Capability.CHAT | Capability.STREAM):
            capabilities |= Capability.TOOLS
        self.register(ProviderSpec.custom(name, capabilities), adapter)

    def get(self, name: str) -> Provider:
        try:
            return self._providers[name]
        except KeyError:
            known = ", ".join(self.names())
            raise BadRequest(f"unknown provider {name!r}; known: {known}") from None

    def names(self) -> list[str]:
        return sorted(self._providers)

    def describe(self) -> list[ProviderInfo]:
        return [self._providers[name].info() for name in self.names()]

    def __contains__(self, name: object) -> bool:
        return name in self._providers


def default_registry(
    http: HttpClientPool,
    base_urls: Mapping[str, str] | None = None,
    token_urls: Mapping[str, str] | None = None,
    specs: Iterable[ProviderSpec] | None = None,
) -> ProviderRegistry:
    """Every built-in provider; `base_urls[name]` replaces that provider's default address."""
    base_urls = base_urls or {}
    token_urls = token_urls or {}
    registry = ProviderRegistry()
    for spec in builtin_specs() if specs is None else specs:
        base_url = base_urls.get(spec.name, spec.default_base_url)
        token_url = token_urls.get(spec.name, spec.default_token_url)
        context = ProviderContext(spec.name, http, base_url, token_url)
        registry.register(spec, spec.build(context), base_url)
    unknown = sorted((set(base_urls) | set(token_urls)) - set(registry.names()))
    if unknown:
        # A typo here would otherwise send traffic to the default address silently.
        raise ValueError(f"addresses given for unknown providers: {', '.join(unknown)}")
    return registry
