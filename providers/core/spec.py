"""What a provider is: its spec (name, address, auth, capabilities) and the
Protocols its adapter implements, one per capability.

An adapter implements only what its API offers. The spec's `capabilities`
says which Protocols that is; the registry checks the two agree when it is
built, and the executor answers a job asking for anything else with
`bad_request` ("provider X does not support rerank") instead of calling a stub.
"""

from __future__ import annotations

import enum
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

from contracts import catalog
from contracts.catalog import ProviderInfo
from providers.core.http import HttpClientPool
from providers.core.limits import EmbedLimits
from providers.core.ratelimits import RateLimitReader, openai_rate_limits
from providers.core.types import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    RerankRequest,
    RerankResult,
    Secret,
    StreamEvent,
    VerifyResult,
)

__all__ = [
    "Capability",
    "ChatAdapter",
    "EmbedAdapter",
    "ProviderContext",
    "ProviderSpec",
    "RerankAdapter",
    "StreamAdapter",
    "VerifyAdapter",
]


class Capability(enum.Flag):
    CHAT = enum.auto()
    STREAM = enum.auto()  # token-by-token chat; without it a streamed job gets one delta
    TOOLS = enum.auto()  # function calling
    EMBED = enum.auto()
    RERANK = enum.auto()
    VERIFY = enum.auto()  # a cheap credential check

    @property
    def names(self) -> list[str]:
        return [name for flag, name in _NAMES.items() if flag in self]


_NAMES = {
    Capability.CHAT: catalog.CHAT,
    Capability.STREAM: catalog.STREAM,
    Capability.TOOLS: catalog.TOOLS,
    Capability.EMBED: catalog.EMBED,
    Capability.RERANK: catalog.RERANK,
    Capability.VERIFY: catalog.VERIFY,
}


class ChatAdapter(Protocol):
    async def chat(self, req: ChatRequest, secret: Secret) -> ChatResult: ...


class StreamAdapter(Protocol):
    """`stream_chat` yields Text/Tool deltas and ends with one `StreamEnd`.

    A caller that stops early must `aclose()` it (`contextlib.aclosing`): that is
    what closes the HTTP response, instead of the garbage collector, much later.
    Retries are not the adapter's job: the worker retries a stream only until it
    has yielded something.
    """

    def stream_chat(self, req: ChatRequest, secret: Secret) -> AsyncIterator[StreamEvent]: ...


class EmbedAdapter(Protocol):
    async def embed(self, req: EmbedRequest, secret: Secret) -> EmbedResult: ...


class RerankAdapter(Protocol):
    async def rerank(self, req: RerankRequest, secret: Secret) -> RerankResult: ...


class VerifyAdapter(Protocol):
    async def verify(self, secret: Secret) -> VerifyResult: ...


# The method each capability requires of an adapter (checked at registration).
REQUIRED_METHOD: Mapping[Capability, str] = {
    Capability.CHAT: "chat",
    Capability.STREAM: "stream_chat",
    Capability.EMBED: "embed",
    Capability.RERANK: "rerank",
    Capability.VERIFY: "verify",
}


@dataclass(frozen=True, slots=True)
class ProviderContext:
    """What an adapter is built with: shared HTTP pool and the operator's addresses.

    `base_url` is the operator's override (FLEET_PROVIDER_URLS) or else the spec's
    default; None means each credential must bring its own `base_url`.
    """

    name: str
    http: HttpClientPool
    base_url: str | None
    token_url: str | None = None


@dataclass(frozen=True, slots=True)
class ProviderSpec:
    """One provider as the registry knows it.

    `build` makes the adapter; a spec may be registered under several names
    (`vllm`, `ollama` share OpenAI's dialect) with `replace(spec, name=…)`.
    `credential_fields` documents what the adapter reads from a credential.
    `rate_limits` reads the provider's rate-limit headers (OpenAI's by default);
    `embed_limits` says how much one embeddings request may carry, for every
    provider with EMBED (see providers/core/limits.py).
    """

    name: str
    capabilities: Capability
    build: Callable[[ProviderContext], object]
    default_base_url: str | None
    auth: str
    credential_fields: tuple[str, ...] = ("api_key",)
    default_token_url: str | None = None
    description: str = ""
    rate_limits: RateLimitReader = openai_rate_limits
    embed_limits: EmbedLimits | None = None

    @classmethod
    def custom(
        cls, name: str, capabilities: Capability, base_url: str | None = None
    ) -> ProviderSpec:
        """A spec for an adapter built by hand (tests, embedding the worker in-process)."""

        def unbuildable(context: ProviderContext) -> object:
            raise TypeError(f"{name}: a custom spec's adapter is registered, not built")

        return cls(
            name=name,
            capabilities=capabilities,
            build=unbuildable,
            default_base_url=base_url,
            auth="custom",
        )

    def info(self, base_url: str | None = None) -> ProviderInfo:
        return ProviderInfo(
            name=self.name,
            capabilities=self.capabilities.names,
            default_base_url=base_url if base_url is not None else self.default_base_url,
            auth=self.auth,
            credential_fields=list(self.credential_fields),
            description=self.description,
        )
