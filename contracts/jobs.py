"""Job envelopes producers publish to `llm.jobs` (msgpack, contract version `v`).

Unknown fields are ignored so older workers accept newer producers; missing or
ill-typed required fields fail decoding with a `ContractError` naming the field.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

import msgspec
from msgspec import Meta, Struct

NonEmptyStr = Annotated[str, Meta(min_length=1, max_length=512)]
Role = Literal["system", "developer", "user", "assistant", "tool"]


class Credential(Struct, kw_only=True, omit_defaults=True):
    """Either the id of a stored credential or a sealed AES-256-GCM envelope."""

    id: str | None = None
    sealed: str | None = None

    def __post_init__(self) -> None:
        if (self.id is None) == (self.sealed is None):
            raise ValueError("exactly one of `id` or `sealed` must be set")

    def __repr__(self) -> str:  # never print envelopes into logs
        return f"Credential(id={self.id!r}, sealed={'<sealed>' if self.sealed else None})"


class Target(Struct, kw_only=True, omit_defaults=True):
    provider: NonEmptyStr
    model: NonEmptyStr
    credential: Credential


class ContentPart(Struct, kw_only=True, omit_defaults=True):
    type: Literal["text", "image_url"]
    text: str | None = None
    image_url: str | None = None


class ToolCall(Struct, kw_only=True, omit_defaults=True):
    id: str
    name: str
    arguments: str  # JSON text, as providers send it


class Message(Struct, kw_only=True, omit_defaults=True):
    role: Role
    content: str | list[ContentPart] | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    name: str | None = None
    # An assistant's refusal to answer, apart from `content` (OpenAI's structured
    # outputs send it as `refusal`); producers show it instead of an answer.
    refusal: str | None = None

    def text(self) -> str:
        if self.content is None:
            return ""
        if isinstance(self.content, str):
            return self.content
        return "".join(p.text or "" for p in self.content if p.type == "text")


class Tool(Struct, kw_only=True, omit_defaults=True):
    name: NonEmptyStr
    description: str = ""
    parameters: dict[str, Any] = msgspec.field(default_factory=dict)
    strict: bool | None = None


class JobBase(Struct, kw_only=True, omit_defaults=True, tag_field="kind"):
    v: int
    request_id: NonEmptyStr
    target: Target
    fallbacks: list[Target] = msgspec.field(default_factory=list)
    # The seed's `model.*` keys (with or without the prefix); see providers.options.
    options: dict[str, Any] = msgspec.field(default_factory=dict)
    deadline: int | None = None  # unix ms
    metadata: dict[str, str] = msgspec.field(default_factory=dict)
    trace: dict[str, str] = msgspec.field(default_factory=dict)
    # Raised by the producer each time it publishes the same request again (its
    # reply queue was lost, or a publish was never confirmed). Workers echo it in
    # every frame, so the producer reads only the newest submission's frames.
    submission: Annotated[int, Meta(ge=0, le=1_000_000)] = 0
    # False: a provider's rate-limit refusal (429) is answered at once as a retryable
    # `rate_limited` error with its `retry_after`, instead of being waited out on a
    # worker slot; for producers that pace themselves (backfills) and send it again.
    wait_on_rate_limit: bool = True


class ChatJob(JobBase, tag="chat"):
    messages: Annotated[list[Message], Meta(min_length=1)]
    tools: list[Tool] = msgspec.field(default_factory=list)
    stream: bool = True


class EmbedJob(JobBase, tag="embed"):
    inputs: Annotated[list[str], Meta(min_length=1, max_length=2048)]
    input_type: str | None = None
    dimensions: Annotated[int, Meta(gt=0)] | None = None


class RerankJob(JobBase, tag="rerank"):
    query: str
    documents: Annotated[list[str], Meta(min_length=1, max_length=1000)]
    top_n: Annotated[int, Meta(gt=0)] | None = None


class VerifyJob(JobBase, tag="verify"):
    pass


Job = ChatJob | EmbedJob | RerankJob | VerifyJob
JobKind = Literal["chat", "embed", "rerank", "verify"]

_KINDS: dict[type[JobBase], JobKind] = {
    ChatJob: "chat",
    EmbedJob: "embed",
    RerankJob: "rerank",
    VerifyJob: "verify",
}


def job_kind(job: Job) -> JobKind:
    """The job's `kind` tag (msgspec keeps tags on the class, not the instance)."""
    return _KINDS[type(job)]
