"""Which jobs went back to their queue through no fault of their own.

A quorum queue counts every return of a message (`x-delivery-count`): a worker
killed by the job, but also every consumer connection a broker restart or a
lost cluster node closed, so one restart can add several to each job in
flight. The fleet's delivery limit is meant to stop a job that keeps killing
its workers, so the count that matters is returns minus *releases*: returns
a surviving worker can vouch for, because it lost its broker connection (or
ran out of shutdown grace) while holding the job.

A worker that releases jobs publishes one note naming them to the stream
`llm.releases` (durable, replicated with the cluster, kept for an hour), and
every worker reads the stream into this ledger. The ledger is consulted only
when a job's broker count has reached the limit, so the hot path never pays
for it.
"""

from __future__ import annotations

import uuid
from collections import OrderedDict
from collections.abc import Iterable

import msgspec

_MAX_JOBS = 100_000
_MAX_NOTES = 20_000


class ReleaseNote(msgspec.Struct, kw_only=True):
    v: int = 1
    id: str
    worker: str
    reason: str
    jobs: list[str]


_decoder = msgspec.msgpack.Decoder(ReleaseNote)
_encoder = msgspec.msgpack.Encoder()


def job_key(reply_to: str, request_id: str, submission: int) -> str:
    """One published job: two producers may reuse a request id, a resubmission is new."""
    return f"{reply_to}\x1f{request_id}\x1f{submission}"


def release_note(worker: str, reason: str, jobs: Iterable[str]) -> bytes:
    note = ReleaseNote(id=uuid.uuid4().hex, worker=worker, reason=reason, jobs=list(jobs))
    return _encoder.encode(note)


class ReleaseLedger:
    """Releases per job, bounded (oldest forgotten first); notes read twice count once."""

    def __init__(self) -> None:
        self._releases: OrderedDict[str, int] = OrderedDict()
        self._notes: OrderedDict[str, None] = OrderedDict()

    def releases(self, key: str) -> int:
        return self._releases.get(key, 0)

    def read(self, body: bytes) -> bool:
        """Take one note from the stream; False when it is not a note (ignored)."""
        try:
            note = _decoder.decode(body)
        except (msgspec.DecodeError, msgspec.ValidationError, RecursionError, ValueError):
            return False
        if note.id in self._notes:
            return True  # every session re-reads the stream from its start
        self._notes[note.id] = None
        if len(self._notes) > _MAX_NOTES:
            self._notes.popitem(last=False)
        for key in note.jobs:
            self._releases[key] = self._releases.get(key, 0) + 1
            self._releases.move_to_end(key)
        while len(self._releases) > _MAX_JOBS:
            self._releases.popitem(last=False)
        return True
