"""Per-key request and token budgets for the mock providers, as real APIs enforce them.

Two token buckets per API key, one counting requests and one counting tokens,
each refilled continuously to its per-minute limit (0 = unlimited). A request
that does not fit is refused with how long to wait; every answer can report the
remaining budget in its provider's `x-ratelimit-*` style headers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

__all__ = ["Budget", "RateLimiter"]


@dataclass(frozen=True, slots=True)
class Budget:
    """One request's verdict and the budget left after it.

    A budget that is off (its per-minute limit 0) reads 0 in all three of its fields.
    """

    allowed: bool
    retry_after: float  # seconds until the request would fit (0 when allowed)
    limit_requests: int
    remaining_requests: int
    reset_requests: float  # seconds until the request bucket is full again
    limit_tokens: int
    remaining_tokens: int
    reset_tokens: float


class _Bucket:
    __slots__ = ("level", "updated")

    def __init__(self, capacity: float, now: float) -> None:
        self.level = capacity
        self.updated = now


class RateLimiter:
    def __init__(
        self,
        requests_per_minute: int = 0,
        tokens_per_minute: int = 0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if requests_per_minute < 0 or tokens_per_minute < 0:
            raise ValueError("rate limits must be >= 0")
        self.rpm = requests_per_minute
        self.tpm = tokens_per_minute
        self._clock = clock
        self._buckets: dict[tuple[str, str], _Bucket] = {}

    @property
    def enabled(self) -> bool:
        return bool(self.rpm or self.tpm)

    def _level(self, key: str, kind: str, capacity: int, now: float) -> _Bucket:
        bucket = self._buckets.get((key, kind))
        if bucket is None:
            bucket = self._buckets[(key, kind)] = _Bucket(capacity, now)
        bucket.level = min(capacity, bucket.level + (now - bucket.updated) * capacity / 60.0)
        bucket.updated = now
        return bucket

    def take(self, key: str, tokens: int) -> Budget:
        """Charge one request of `tokens` to `key` if both budgets allow it."""
        now = self._clock()
        waits: list[float] = []
        levels: dict[str, _Bucket] = {}
        for kind, capacity, cost in (("req", self.rpm, 1), ("tok", self.tpm, tokens)):
            if not capacity:
                continue
            bucket = levels[kind] = self._level(key, kind, capacity, now)
            # A request larger than the whole budget is charged as the whole budget:
            # told to wait for a full bucket (a minute at most), it then does fit.
            need = min(cost, capacity) - bucket.level
            if need > 0:
                waits.append(need * 60.0 / capacity)
        allowed = not waits
        if allowed:
            for kind, cost in (("req", 1), ("tok", tokens)):
                if kind in levels:
                    levels[kind].level -= min(cost, levels[kind].level)
        req, tok = levels.get("req"), levels.get("tok")
        return Budget(
            allowed=allowed,
            retry_after=max(waits, default=0.0),
            limit_requests=self.rpm,
            remaining_requests=int(req.level) if req else 0,
            reset_requests=(self.rpm - req.level) * 60.0 / self.rpm if req else 0.0,
            limit_tokens=self.tpm,
            remaining_tokens=int(tok.level) if tok else 0,
            reset_tokens=(self.tpm - tok.level) * 60.0 / self.tpm if tok else 0.0,
        )
