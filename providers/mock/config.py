"""Settings of one mock provider process, plus named presets for load tests."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Final

# Models every dialect knows; any other name is the provider's "model not found".
DEFAULT_MODELS: Final[tuple[str, ...]] = (
    "mock-model",
    "gpt-4o-mini",
    "gpt-4o",
    "o3-mini",
    "text-embedding-3-small",
    "text-embedding-3-large",
    "claude-sonnet-4-5",
    "claude-3-5-haiku-latest",
    "gemini-2.5-flash",
    "gemini-2.5-pro",
    "gemini-embedding-001",
    "text-embedding-005",
    "anthropic.claude-3-haiku-20240307-v1:0",
    "amazon.titan-embed-text-v2:0",
    "cohere.embed-english-v3",
    "amazon.rerank-v1:0",
)


@dataclass(frozen=True, slots=True)
class MockConfig:
    """How the mock behaves. Frozen so one value can be shared by forked workers.

    `ttft_ms` delays the first chunk of every answer; `tokens_per_sec` paces the
    rest (0 = as fast as the socket takes them). An answer is `max_tokens_default`
    tokens long; a smaller request `max_tokens` cuts it short (finish `length`).
    `fault_rate` injects `fault_kind` (a spec from `providers.mock.faults`) into
    that fraction of requests, drawn from an RNG seeded with `seed`.
    `accept_any_key` lets any non-empty bearer key in (a missing one is still a 401).
    `ttft_ms` and the token time also delay non-streaming answers and embeddings.
    `stamp_tokens` replaces each token with `" t<time.time_ns()>"` taken as it is
    written, so a benchmark can measure delivery delay per token.
    """

    api_keys: frozenset[str] = frozenset({"mock-key"})
    accept_any_key: bool = False
    ttft_ms: float = 0.0
    tokens_per_sec: float = 0.0
    max_tokens_default: int = 64
    embed_dims: int = 1536
    fault_rate: float = 0.0
    fault_kind: str = "500"
    seed: int = 0
    stamp_tokens: bool = False
    models: tuple[str, ...] = DEFAULT_MODELS
    # Per API key budgets answered with each provider's own 429 (0 = unlimited).
    requests_per_minute: int = 0
    tokens_per_minute: int = 0
    # Prompt plus answer tokens a model accepts; more is the provider's
    # context-length error.
    context_window: int = 128_000

    def accepts(self, key: str) -> bool:
        """Whether a presented API key gets in (an empty one never does)."""
        return bool(key) and (self.accept_any_key or key in self.api_keys)

    def __post_init__(self) -> None:
        if self.ttft_ms < 0 or self.tokens_per_sec < 0:
            raise ValueError("ttft_ms and tokens_per_sec must be >= 0")
        if self.max_tokens_default < 1 or self.embed_dims < 1:
            raise ValueError("max_tokens_default and embed_dims must be >= 1")
        if not 0.0 <= self.fault_rate <= 1.0:
            raise ValueError("fault_rate must be within [0, 1]")
        if self.requests_per_minute < 0 or self.tokens_per_minute < 0:
            raise ValueError("requests_per_minute and tokens_per_minute must be >= 0")
        if self.context_window < 1:
            raise ValueError("context_window must be >= 1")


PROFILES: Final[Mapping[str, MockConfig]] = MappingProxyType(
    {
        "instant": MockConfig(),
        "realistic": MockConfig(ttft_ms=300.0, tokens_per_sec=50.0, max_tokens_default=200),
    }
)
