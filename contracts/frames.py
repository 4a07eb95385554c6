"""Reply frames workers publish to the producer's reply queue.

Every frame carries `request_id`, `attempt` (the delivery count of the job) and
`seq` (0, 1, 2… within one attempt), and the job's `submission` (how often the
producer had to publish it again). A stream is `start`, any number of `delta`,
then exactly one `final` or `error`. A catalog request is answered by one
`catalog` frame (or an `error`).
"""

from __future__ import annotations

import sys
from array import array

import msgspec
from msgspec import Struct

from contracts.catalog import ProviderInfo
from contracts.jobs import Message


class FrameBase(Struct, kw_only=True, omit_defaults=True, tag_field="type"):
    v: int = 1
    request_id: str
    attempt: int
    seq: int
    submission: int = 0


class Start(FrameBase, tag="start"):
    worker: str


class ToolCallDelta(Struct, kw_only=True, omit_defaults=True):
    index: int
    id: str | None = None
    name: str | None = None
    arguments: str = ""


def tool_call_deltas(message: Message) -> list[ToolCallDelta]:
    """A whole message's tool calls as the deltas a stream of it would have carried."""
    return [
        ToolCallDelta(index=i, id=c.id, name=c.name, arguments=c.arguments)
        for i, c in enumerate(message.tool_calls or ())
    ]


class Delta(FrameBase, tag="delta"):
    text: str = ""
    tool_calls: list[ToolCallDelta] = msgspec.field(default_factory=list)
    refusal: str = ""  # pieces of `Message.refusal`, as the provider streams them


class Usage(Struct, kw_only=True, omit_defaults=True):
    """Tokens of one answer. The optional counts are None when the provider does not
    report them (not 0, which would claim "none were cached")."""

    input_tokens: int = 0
    output_tokens: int = 0
    total_tokens: int = 0
    # Part of input_tokens served from the provider's prompt cache (billed lower).
    cached_input_tokens: int | None = None
    # Input tokens written to the prompt cache (Anthropic bills them higher).
    cache_write_tokens: int | None = None
    # Part of output_tokens spent on reasoning/thinking before the visible answer.
    reasoning_tokens: int | None = None
    # What a rerank billed where the provider counts searches, not tokens (Cohere).
    search_units: int | None = None


class Metrics(Struct, kw_only=True, omit_defaults=True):
    queue_ms: float | None = None  # publish → worker start
    ttft_ms: float | None = None  # worker start → first token from provider
    provider_ms: float = 0.0  # time spent in provider calls, retries included
    total_ms: float = 0.0  # worker start → final frame
    retries: int = 0
    frames: int = 0
    # What the answer cost by the fleet's price table, in US dollars; None when the
    # table does not know the provider and model (unknown, which is not free).
    cost_usd: float | None = None


class NamedMetric(Struct, kw_only=True):
    """One metric under the name the system the fleet replaces used (`TIME_TAKEN`,
    `INPUT_TOKEN`, `COST`…), its value as text, for producers that read those."""

    name: str
    value: str
    description: str = ""


class Answered(Struct, kw_only=True):
    """The target that produced the answer (the primary or a fallback)."""

    provider: str
    model: str


class Embeddings(Struct, kw_only=True):
    """Vectors as packed little-endian float32, `count` rows of `dims`."""

    dims: int
    count: int
    data: bytes

    def vectors(self) -> list[list[float]]:
        flat = array("f")
        flat.frombytes(self.data)
        if sys.byteorder == "big":
            flat.byteswap()
        d = self.dims
        return [flat[i * d : (i + 1) * d].tolist() for i in range(self.count)]


class RerankItem(Struct, kw_only=True):
    index: int
    score: float


class VerifyInfo(Struct, kw_only=True):
    ok: bool
    detail: str = ""


class RateLimit(Struct, kw_only=True, omit_defaults=True):
    """The provider's budget for the credential, as its last response's rate-limit
    headers reported it (`x-ratelimit-*`, `anthropic-ratelimit-*`, …).

    Each field is None when the provider did not say. Resets are seconds from when
    the worker read the response until that budget is full again. Producers that
    pace themselves (`llm-fleet backfill`) learn limits and headroom from it.
    """

    limit_requests: int | None = None
    remaining_requests: int | None = None
    reset_requests: float | None = None
    limit_tokens: int | None = None
    remaining_tokens: int | None = None
    reset_tokens: float | None = None


class Final(FrameBase, tag="final"):
    target: Answered
    usage: Usage = msgspec.field(default_factory=Usage)
    metrics: Metrics = msgspec.field(default_factory=Metrics)
    finish_reason: str | None = None
    message: Message | None = None
    embeddings: Embeddings | None = None
    rerank: list[RerankItem] | None = None
    verify: VerifyInfo | None = None
    named_metrics: list[NamedMetric] = msgspec.field(default_factory=list)
    rate_limit: RateLimit | None = None


class Error(FrameBase, tag="error"):
    """A failed job: everything the worker's exception carried (contracts/errors.py).

    `retryable` is the worker's decision for this failure, which may differ from
    the code's usual class (a provider's `x-should-retry`, a job refused for good).
    `retry_after`: seconds the provider asked callers to wait, when it said.
    """

    code: str
    message: str
    retryable: bool = False
    provider_status: int | None = None
    retry_after: float | None = None
    provider_request_id: str | None = None
    rate_limit: RateLimit | None = None


class Catalog(FrameBase, tag="catalog"):
    """The answer to a catalog request (`FleetClient.providers()`), not to a job."""

    providers: list[ProviderInfo]


Frame = Start | Delta | Final | Error | Catalog
