"""Send at the credential's rate limit, not past it, and recover quickly from a 429.

Two token buckets, one for requests and one for tokens, refill continuously at
the per-minute rates in force. A bucket holds only `BURST_SECONDS` of its rate
(slack for a moment when we could not send), and starts empty: a run sends at the
rate from its first request, so no window of any length sees more than the limit
and one request, also into a provider window other users of the key have partly
spent. A
request costs its estimate up front; one larger than a whole bucket is admitted
when the bucket is full and leaves it in debt, so big requests neither deadlock
nor raise the sustained rate, which is the rate in force exactly.

Where the rates come from: flags win, per dimension; otherwise each answer's
`RateLimit.limit_*` teaches them (at `LEARNED_SHARE`, a little under, so our
estimate's error and clock skew do not run the provider's bucket dry). Until a
limit is known, only an in-flight window holds the run back, and it finds its
size by AIMD: it starts at `START_WINDOW`, grows by one per answer up to
`max_in_flight`, and halves on a 429.

What the provider says it has left (`remaining_*`) can only lower our buckets,
never raise them: when other users of the key leave less headroom than our own
accounting believes, the level drops to what is left minus what we have in
flight (which the provider may not have counted yet), and refills from there.
`reset_*` is not used: providers mean different things by it (OpenAI the time
until the budget is whole, Anthropic the end of a fixed window), and the
remaining count is enough to stay under either.

A 429 pauses every acquisition until `retry_after` (or an exponential 1, 2,
4 … 60 s when the provider gives none; a success resets it), empties both
buckets (the provider just said they are) and keeps them empty during the pause
(what the provider refills meanwhile goes to the requests still in flight; a
burst at the end of the pause would only earn more 429s), and cuts the rates in
force by `CUT_FACTOR`. The cut recovers additively, by `RECOVERY_PER_SECOND` of
the limit per second after the pause, so the full rate is back about 15 s after
a single 429. Answers to requests sent before a cut (answers come about in the
order sent) are likely 429s of the same episode: they extend the pause but cut
nothing more, as TCP cuts its window once per round trip.

Waiters are served first come, first served. Only the first in line waits on
the clock, and it sleeps exactly until the pause ends or its bucket holds
enough (recomputing once after, in case a 429 arrived meanwhile); the others
wait for their turn. `clock` and `sleep` are injectable so tests run simulated
minutes in milliseconds.
"""

from __future__ import annotations

import asyncio
import collections
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal

from contracts.frames import RateLimit

__all__ = ["Pacer", "PacerStats"]

BURST_SECONDS = 2.0
LEARNED_SHARE = 0.98
START_WINDOW = 4
CUT_FACTOR = 0.85
MIN_FACTOR = 0.1
RECOVERY_PER_SECOND = 0.01
FIRST_BACKOFF = 1.0
MAX_BACKOFF = 60.0
_STATS_WINDOW = 60.0  # seconds of sends the "currently used" rates average over
_EPSILON = 1e-9

LimitSource = Literal["flag", "learned"]


@dataclass(frozen=True, slots=True)
class PacerStats:
    requests_per_minute: float  # sent, over the last minute (or since the first send)
    tokens_per_minute: float  # estimated tokens sent, likewise
    limit_requests_per_minute: float | None  # in force now (after any cut); None: unknown
    limit_tokens_per_minute: float | None
    requests_limit: LimitSource | None  # where the request limit came from
    tokens_limit: LimitSource | None
    in_flight: int
    window: int  # how many may be in flight now
    pauses: int
    paused_seconds: float
    pause_left: float  # seconds until the current pause ends (0: none)
    rate_limited: int  # 429s seen


class _Bucket:
    __slots__ = ("level", "per_minute", "source")

    def __init__(self, per_minute: float | None, source: LimitSource | None) -> None:
        self.per_minute = per_minute
        self.source = source
        self.level = 0.0  # no opening burst: at the rate from the first request

    @property
    def known(self) -> bool:
        return self.per_minute is not None

    @property
    def capacity(self) -> float:
        return 0.0 if self.per_minute is None else self.per_minute * BURST_SECONDS / 60.0


class Pacer:
    """Admits requests at the rate limit; see the module docstring."""

    def __init__(
        self,
        *,
        requests_per_minute: float | None,
        tokens_per_minute: float | None,
        max_in_flight: int,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
    ) -> None:
        for name, value in (("requests", requests_per_minute), ("tokens", tokens_per_minute)):
            if value is not None and not (value > 0 and math.isfinite(value)):
                raise ValueError(f"{name} per minute must be a positive number, got {value}")
        if max_in_flight < 1:
            raise ValueError(f"max_in_flight must be at least 1, got {max_in_flight}")
        self._clock = clock
        self._sleep = sleep
        self._requests = _Bucket(requests_per_minute, "flag" if requests_per_minute else None)
        self._tokens = _Bucket(tokens_per_minute, "flag" if tokens_per_minute else None)
        self._max_in_flight = max_in_flight
        self._window = float(max_in_flight if self._any_limit else min(START_WINDOW, max_in_flight))
        self._in_flight = 0
        self._in_flight_costs: collections.deque[int] = collections.deque()
        self._in_flight_tokens = 0
        now = clock()
        self._updated = now
        # Rate factor: `_cut_to` until `_recover_from`, then up by RECOVERY_PER_SECOND to 1.
        self._cut_to = 1.0
        self._recover_from = now
        self._pause_until = now
        self._backoff = FIRST_BACKOFF
        # Requests sent and answered so far; a 429 answering a request sent before the
        # last cut (answers come about in the order sent) belongs to that cut's episode.
        self._sent_total = 0
        self._released_total = 0
        self._episode_end = -1
        self._waiters: collections.deque[asyncio.Future[None]] = collections.deque()
        self._room = asyncio.Event()  # set when a slot frees or the window grows
        self._sent: collections.deque[tuple[float, int]] = collections.deque()
        self._first_send: float | None = None
        self._pauses = 0
        self._paused_seconds = 0.0
        self._rate_limited = 0

    # ---- sending ---------------------------------------------------------------------

    async def acquire(self, tokens: int) -> None:
        """Wait until a request of about `tokens` may be sent, then take an in-flight slot."""
        turn = asyncio.get_running_loop().create_future()
        self._waiters.append(turn)
        try:
            if self._waiters[0] is not turn:
                await turn
            while True:
                now = self._clock()
                delay = self._delay(tokens, now)
                if delay is None:
                    self._room.clear()
                    await self._room.wait()
                elif delay > 0:
                    await self._sleep(delay)
                else:
                    self._take(tokens, now)
                    return
        finally:
            was_first = self._waiters[0] is turn
            self._waiters.remove(turn)
            if was_first and self._waiters and not self._waiters[0].done():
                self._waiters[0].set_result(None)

    def release(self) -> None:
        """The request was answered (any way): its in-flight slot is free."""
        if self._in_flight == 0:
            return
        self._in_flight -= 1
        # Answers mostly come in the order sent; the oldest cost is the best guess.
        self._in_flight_tokens -= self._in_flight_costs.popleft()
        self._released_total += 1
        self._room.set()

    def answered(self, rate_limit: RateLimit | None) -> None:
        """A request succeeded; learn from the budget the provider reported with it."""
        now = self._clock()
        self._refill(now)
        self._learn(rate_limit)
        self._backoff = FIRST_BACKOFF
        if not self._any_limit and self._window < self._max_in_flight:
            self._window = min(float(self._max_in_flight), self._window + 1.0)
            self._room.set()

    def rate_limited(self, retry_after: float | None, rate_limit: RateLimit | None) -> None:
        """A request came back 429: pause, and slow down (once per episode).

        Call it after `release()` for that answer, as `answered()`."""
        now = self._clock()
        self._refill(now)
        self._rate_limited += 1
        self._learn(rate_limit)
        new_episode = self._released_total > self._episode_end
        if retry_after is not None and math.isfinite(retry_after) and retry_after >= 0:
            self._pause(now, now + retry_after)
        elif new_episode:
            self._pause(now, now + self._backoff)
            self._backoff = min(MAX_BACKOFF, self._backoff * 2)
        for bucket in (self._requests, self._tokens):
            bucket.level = min(bucket.level, 0.0)
        factor = self._factor(now)
        if new_episode:
            factor = max(MIN_FACTOR, factor * CUT_FACTOR)
            self._episode_end = self._sent_total
            if not self._any_limit:
                self._window = max(1.0, self._window / 2)
        # Re-anchored at `now`, so the factor never jumps except by the cut itself.
        self._cut_to = factor
        self._recover_from = max(now, self._pause_until)

    @property
    def stats(self) -> PacerStats:
        now = self._clock()
        self._refill(now)
        self._forget_sends_before(now - _STATS_WINDOW)
        span = 0.0 if self._first_send is None else min(_STATS_WINDOW, now - self._first_send)
        per_minute = 60.0 / span if span > 0 else 0.0
        factor = self._factor(now)
        req, tok = self._requests, self._tokens
        return PacerStats(
            requests_per_minute=len(self._sent) * per_minute,
            tokens_per_minute=sum(cost for _, cost in self._sent) * per_minute,
            limit_requests_per_minute=None if req.per_minute is None else req.per_minute * factor,
            limit_tokens_per_minute=None if tok.per_minute is None else tok.per_minute * factor,
            requests_limit=req.source,
            tokens_limit=tok.source,
            in_flight=self._in_flight,
            window=self._window_size,
            pauses=self._pauses,
            paused_seconds=self._paused_seconds,
            pause_left=max(0.0, self._pause_until - now),
            rate_limited=self._rate_limited,
        )

    # ---- the buckets -----------------------------------------------------------------

    @property
    def _any_limit(self) -> bool:
        return self._requests.known or self._tokens.known

    @property
    def _window_size(self) -> int:
        return max(1, int(self._window))

    def _delay(self, tokens: int, now: float) -> float | None:
        """Seconds until a request of `tokens` may go (0: now), None: when a slot frees."""
        self._refill(now)
        paused = max(0.0, self._pause_until - now)
        rate_factor = self._factor(now)
        refill = 0.0
        for bucket, cost in ((self._requests, 1), (self._tokens, tokens)):
            if bucket.per_minute is None:
                continue
            need = min(float(cost), bucket.capacity) - bucket.level
            if need > _EPSILON * max(1.0, cost):
                # At today's rate; a recovering rate only makes the wait a little long.
                refill = max(refill, need * 60.0 / (bucket.per_minute * rate_factor))
        # Buckets stay empty while paused, so their refill starts when the pause ends.
        delay = paused + refill
        if delay > 0:
            return delay
        return None if self._in_flight >= self._window_size else 0.0

    def _take(self, tokens: int, now: float) -> None:
        self._requests.level -= 1
        self._tokens.level -= tokens
        self._in_flight += 1
        self._sent_total += 1
        self._in_flight_costs.append(tokens)
        self._in_flight_tokens += tokens
        self._sent.append((now, tokens))
        self._forget_sends_before(now - _STATS_WINDOW)
        if self._first_send is None:
            self._first_send = now

    def _forget_sends_before(self, moment: float) -> None:
        while self._sent and self._sent[0][0] <= moment:
            self._sent.popleft()

    def _refill(self, now: float) -> None:
        if now <= self._updated:
            return
        factor_seconds = self._factor_integral(self._updated, now)
        self._updated = now
        for bucket in (self._requests, self._tokens):
            if bucket.per_minute is not None:
                gained = bucket.per_minute * factor_seconds / 60.0
                bucket.level = min(bucket.capacity, bucket.level + gained)

    def _factor(self, at: float) -> float:
        recovered = self._cut_to + RECOVERY_PER_SECOND * max(0.0, at - self._recover_from)
        return min(1.0, recovered)

    def _factor_integral(self, start: float, end: float) -> float:
        """The refill factor integrated over [start, end] (`start` no earlier than the
        last 429): nothing until the pause ends, then the cut rate ramping up to 1."""
        ramp_start = self._recover_from
        ramp_end = ramp_start + max(0.0, 1.0 - self._cut_to) / RECOVERY_PER_SECOND
        total, at = 0.0, max(start, min(end, ramp_start))
        if at < min(end, ramp_end):
            step = min(end, ramp_end)
            total += (self._factor(at) + self._factor(step)) / 2 * (step - at)
            at = step
        return total + max(0.0, end - at)

    def _pause(self, now: float, until: float) -> None:
        if until <= self._pause_until:
            return
        if self._pause_until > now:
            self._paused_seconds += until - self._pause_until
        else:
            self._paused_seconds += until - now
            self._pauses += 1
        self._pause_until = until

    # ---- learning --------------------------------------------------------------------

    def _learn(self, info: RateLimit | None) -> None:
        if info is None:
            return
        had_limit = self._any_limit
        for bucket, limit, remaining, in_flight in (
            (self._requests, info.limit_requests, info.remaining_requests, self._in_flight),
            (self._tokens, info.limit_tokens, info.remaining_tokens, self._in_flight_tokens),
        ):
            # A limit of 0 is a provider saying "not enforced", not "send nothing".
            if bucket.source != "flag" and limit is not None and limit > 0:
                learned = limit * LEARNED_SHARE
                if bucket.per_minute is None:
                    bucket.per_minute, bucket.source = learned, "learned"
                    bucket.level = 0.0
                elif bucket.per_minute != learned:
                    bucket.per_minute = learned
                    bucket.level = min(bucket.level, bucket.capacity)
            if bucket.known and remaining is not None and remaining >= 0 and limit != 0:
                # Less headroom than we believe (others use the key too): believe the
                # provider, less what we sent that it may not have counted yet. Floored
                # at one bucket of debt, since part of that was surely counted.
                headroom = max(float(remaining - in_flight), -bucket.capacity)
                bucket.level = min(bucket.level, headroom)
        if self._any_limit and not had_limit:
            self._window = float(self._max_in_flight)  # the buckets pace from now on
            self._room.set()
