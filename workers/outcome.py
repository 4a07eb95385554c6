"""How one job attempt ended, in one record: what the audit trail stores and metrics count.

The runtime builds exactly one `AttemptRecord` per delivery it settles (answered,
failed, refused before or after decoding, or its reply queue gone) and hands it to
the `Recorder` *before* acking, so a record that must be durable (the audit trail)
is written before the broker forgets the job. Everything here is plain data: no
secrets (a credential is named by its id, never its key), no provider text beyond
the error message the producer was sent.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Protocol

from contracts.frames import Answered, Metrics, Usage


@dataclass(frozen=True, slots=True)
class TargetRef:
    """A target as the audit names it: provider, model and the stored credential's id
    (None for a sealed credential, which has no id)."""

    provider: str
    model: str
    credential_id: str | None = None


@dataclass(slots=True, kw_only=True)
class AttemptRecord:
    request_id: str  # "" when a refused message had none readable
    attempt: int
    submission: int = 0
    # The broker-validated login that published the job (its tenant); None when the
    # message carried no identity (refused).
    producer: str | None
    kind: str  # chat | embed | rerank | verify | unknown (refused before decoding)
    queue: str  # the job queue it came from
    worker: str
    started_at: float  # unix seconds, when the worker took the delivery
    status: str  # "ok" or the error code the producer was sent
    error: str | None = None  # the error message the producer was sent (never a secret)
    # The target that answered (status ok) or failed last, and those tried before it.
    target: TargetRef | None = None
    tried: list[TargetRef] = field(default_factory=list)
    answered: Answered | None = None  # as the final frame names it
    provider_request_id: str | None = None
    metrics: Metrics | None = None  # the final frame's (queue, ttft, provider, total, cost)
    usage: Usage | None = None
    metadata: dict[str, str] = field(default_factory=dict)  # the job's, as sent
    # The job and its answer as scrubbed JSON, only with FLEET_AUDIT_BODIES.
    request_body: str | None = None
    response_body: str | None = None
    dead_lettered: bool = False  # copied to llm.dead
    reached_provider: bool = False  # a provider call was made (or attempted)


class Recorder(Protocol):
    """Where settled attempts go before their ack (audit trail, metrics)."""

    async def record(self, record: AttemptRecord) -> None:
        """Return once the record is as durable as this recorder makes it."""
        ...


class NoRecorder:
    """Audit off: nothing to wait for."""

    async def record(self, record: AttemptRecord) -> None:
        return None
