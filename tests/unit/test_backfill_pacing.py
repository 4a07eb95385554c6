"""The backfill pacer on a simulated clock: rates, pauses, recovery, learning, AIMD."""

from __future__ import annotations

import asyncio
import random

import pytest

from contracts.frames import RateLimit
from providers.mock.ratelimit import RateLimiter
from workers.backfill.pacing import (
    BURST_SECONDS,
    CUT_FACTOR,
    LEARNED_SHARE,
    MAX_BACKOFF,
    START_WINDOW,
    Pacer,
)


class FakeTime:
    """A clock that moves only when the pacer sleeps; records every sleep."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        assert seconds > 0, "the pacer must not sleep for nothing (busy loop)"
        self.sleeps.append(seconds)
        self.now += seconds
        await asyncio.sleep(0)


def make(
    fake: FakeTime,
    *,
    rpm: float | None = None,
    tpm: float | None = None,
    max_in_flight: int = 1000,
) -> Pacer:
    return Pacer(
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
        max_in_flight=max_in_flight,
        clock=fake.clock,
        sleep=fake.sleep,
    )


async def send(pacer: Pacer, fake: FakeTime, tokens: int = 1) -> float:
    """One request answered at once; the time it was let through."""
    await pacer.acquire(tokens)
    at = fake.now
    pacer.release()
    pacer.answered(None)
    return at


async def run_for(
    pacer: Pacer, fake: FakeTime, seconds: float, cost: int | list[int] = 1
) -> list[tuple[float, int]]:
    """Send flat out for `seconds` of simulated time; (time, tokens) of each send."""
    end = fake.now + seconds
    sends: list[tuple[float, int]] = []
    costs = cost if isinstance(cost, list) else None
    n = 0
    while fake.now < end:
        tokens = costs[n % len(costs)] if costs else int(cost)  # type: ignore[arg-type]
        at = await send(pacer, fake, tokens)
        if at >= end:
            break
        sends.append((at, tokens))
        n += 1
    return sends


def most_in_any_window(sends: list[tuple[float, int]], window: float, tokens: bool) -> float:
    """The most requests (or tokens) sent in any interval of `window` seconds."""
    best, total, first = 0.0, 0.0, 0
    for at, cost in sends:
        total += cost if tokens else 1
        while sends[first][0] <= at - window:
            total -= sends[first][1] if tokens else 1
            first += 1
        best = max(best, total)
    return best


async def test_sustained_request_rate_is_the_flag_exactly_never_above() -> None:
    fake = FakeTime()
    pacer = make(fake, rpm=600)
    sends = await run_for(pacer, fake, 600.0)
    # Ten simulated minutes: exactly 10 requests a second from the first one.
    assert len(sends) == pytest.approx(6000, abs=2)
    # Any minute holds at most the limit and one request: no opening burst.
    assert most_in_any_window(sends, 60.0, tokens=False) <= 600 + 1
    steady = [at for at, _ in sends if at >= sends[0][0] + 60]
    per_minute = (len(steady) - 1) / (steady[-1] - steady[0]) * 60
    assert per_minute == pytest.approx(600, rel=0.01)
    assert pacer.stats.requests_per_minute == pytest.approx(600, rel=0.02)


async def test_a_fresh_pacer_sends_at_the_rate_from_its_first_request() -> None:
    fake = FakeTime()
    pacer = make(fake, rpm=3000)
    start = fake.now
    sends = await run_for(pacer, fake, 1.0)
    # 3,000/min = 50/s: no burst into a window other users of the key may have spent.
    assert len(sends) == pytest.approx(50, abs=1)
    assert sends[0][0] == pytest.approx(start + 1 / 50)


async def test_token_rate_with_mixed_sizes_is_within_one_percent() -> None:
    fake = FakeTime()
    pacer = make(fake, tpm=100_000)
    rng = random.Random(7)
    costs = [rng.randint(100, 3000) for _ in range(500)]
    sends = await run_for(pacer, fake, 600.0, costs)
    spent = sum(cost for _, cost in sends)
    assert spent == pytest.approx(1_000_000, rel=0.01)
    # Never more than a minute's budget and one request in any minute.
    assert most_in_any_window(sends, 60.0, tokens=True) <= 100_000 + 3000


async def test_both_buckets_bind_whichever_is_tighter() -> None:
    fake = FakeTime()
    pacer = make(fake, rpm=6000, tpm=60_000)  # 1,000-token requests: tokens bind at 60/min
    sends = await run_for(pacer, fake, 300.0, 1000)
    assert len(sends) / 5 == pytest.approx(60, rel=0.02)


async def test_a_request_bigger_than_the_bucket_is_admitted_when_full() -> None:
    fake = FakeTime()
    pacer = make(fake, tpm=60)  # 1 token/s, bucket of 2
    start = fake.now
    await pacer.acquire(100)  # 50 buckets' worth: must not deadlock
    assert fake.now == start + BURST_SECONDS  # once the bucket is full
    start = fake.now
    pacer.release()
    await pacer.acquire(1)
    # The debt (100 - 2) is paid back at the rate before anything else goes.
    assert fake.now - start == pytest.approx(99.0, rel=1e-6)
    assert fake.sleeps == [BURST_SECONDS, 99.0], "exact sleeps, no polling"


async def test_waiters_wake_exactly_when_the_bucket_allows() -> None:
    fake = FakeTime()
    pacer = make(fake, rpm=60)  # one a second
    base = fake.now
    times = [await send(pacer, fake) for _ in range(6)]
    assert [round(t - base, 9) for t in times] == [1.0, 2.0, 3.0, 4.0, 5.0, 6.0]
    assert fake.sleeps == pytest.approx([1.0] * 6)


async def test_fifo_a_big_request_first_in_line_is_not_overtaken() -> None:
    fake = FakeTime()
    pacer = make(fake, tpm=600)  # 10 tokens/s, bucket of 20
    order: list[str] = []

    async def one(name: str, tokens: int) -> None:
        await pacer.acquire(tokens)
        order.append(name)
        pacer.release()

    await pacer.acquire(20)  # empty the bucket
    pacer.release()
    big = asyncio.create_task(one("big", 20))
    await asyncio.sleep(0)
    small = asyncio.create_task(one("small", 1))
    await asyncio.gather(big, small)
    assert order == ["big", "small"]


async def test_in_flight_cap_holds_and_a_release_lets_one_more_in() -> None:
    fake = FakeTime()
    pacer = make(fake, rpm=60_000, max_in_flight=3)
    admitted: list[int] = []

    async def one(n: int) -> None:
        await pacer.acquire(1)
        admitted.append(n)

    tasks = [asyncio.create_task(one(n)) for n in range(6)]
    for _ in range(20):
        await asyncio.sleep(0)
    assert admitted == [0, 1, 2]
    assert pacer.stats.in_flight == 3
    pacer.release()
    for _ in range(20):
        await asyncio.sleep(0)
    assert admitted == [0, 1, 2, 3]
    for _ in range(3):
        pacer.release()
    await asyncio.gather(*tasks)
    assert admitted == list(range(6))


async def test_429_pause_is_honoured_for_everyone() -> None:
    fake = FakeTime()
    pacer = make(fake, rpm=60_000)
    await send(pacer, fake)
    start = fake.now
    pacer.rate_limited(7.5, None)
    assert pacer.stats.pause_left == pytest.approx(7.5)
    await pacer.acquire(1)
    assert fake.now - start >= 7.5
    assert pacer.stats.pauses == 1
    assert pacer.stats.paused_seconds == pytest.approx(7.5)
    assert pacer.stats.rate_limited == 1


async def test_429_without_retry_after_backs_off_exponentially_and_resets_on_success() -> None:
    fake = FakeTime()
    pacer = make(fake, rpm=60_000)
    pauses = []
    for _ in range(9):
        pacer.rate_limited(None, None)
        pauses.append(round(pacer.stats.pause_left, 6))
        await pacer.acquire(1)
        pacer.release()  # answered by another 429: no success in between
    assert pauses == [1, 2, 4, 8, 16, 32, 60, 60, 60]
    assert MAX_BACKOFF == 60
    pacer.answered(None)
    pacer.rate_limited(None, None)
    assert pacer.stats.pause_left == pytest.approx(1.0)


async def test_429_cuts_the_rate_then_recovers_it_within_tens_of_seconds() -> None:
    fake = FakeTime()
    pacer = make(fake, rpm=600)
    await run_for(pacer, fake, 30.0)
    pacer.rate_limited(2.0, None)
    assert pacer.stats.limit_requests_per_minute == pytest.approx(600 * CUT_FACTOR)
    after = await run_for(pacer, fake, 5.0)
    # Right after the pause: the cut rate (the buckets were emptied by the 429).
    assert len(after) / 3.0 == pytest.approx(600 * CUT_FACTOR / 60, rel=0.1)
    await run_for(pacer, fake, 15.0)
    assert pacer.stats.limit_requests_per_minute == pytest.approx(600)
    later = await run_for(pacer, fake, 60.0)
    assert len(later) == pytest.approx(600, rel=0.01)


async def test_answers_in_flight_at_a_429_do_not_cut_again() -> None:
    fake = FakeTime()
    pacer = make(fake, rpm=600)
    for _ in range(10):
        await pacer.acquire(1)
    for _ in range(10):  # all ten come back 429: one episode
        pacer.release()
        pacer.rate_limited(1.0, None)
    assert pacer.stats.limit_requests_per_minute == pytest.approx(600 * CUT_FACTOR)
    await pacer.acquire(1)
    pacer.release()
    before = pacer.stats.limit_requests_per_minute
    assert before is not None and before < 600 * CUT_FACTOR * 1.01  # barely recovered yet
    pacer.rate_limited(1.0, None)  # sent after the cut: a new episode
    assert pacer.stats.limit_requests_per_minute == pytest.approx(before * CUT_FACTOR)


async def test_limits_are_learned_from_rate_limit_info() -> None:
    fake = FakeTime()
    pacer = make(fake, max_in_flight=64)
    assert pacer.stats.limit_requests_per_minute is None
    await pacer.acquire(500)
    pacer.release()
    info = RateLimit(limit_requests=3000, limit_tokens=1_000_000, remaining_requests=2999)
    pacer.answered(info)
    stats = pacer.stats
    assert stats.limit_requests_per_minute == pytest.approx(3000 * LEARNED_SHARE)
    assert stats.limit_tokens_per_minute == pytest.approx(1_000_000 * LEARNED_SHARE)
    assert stats.requests_limit == "learned" and stats.tokens_limit == "learned"
    assert stats.window == 64  # the buckets pace now
    sends = await run_for(pacer, fake, 120.0, 500)  # tokens bind: 1,960 requests/min
    assert len(sends) / 2 == pytest.approx(1_000_000 * LEARNED_SHARE / 500, rel=0.02)


async def test_flags_win_over_learned_limits_and_zero_means_not_enforced() -> None:
    fake = FakeTime()
    pacer = make(fake, rpm=100)
    await send(pacer, fake)
    pacer.answered(RateLimit(limit_requests=5000, limit_tokens=0, remaining_requests=4000))
    # An unenforced budget's "0 remaining" says nothing either.
    pacer.answered(RateLimit(limit_requests=0, remaining_requests=0))
    start = fake.now
    await send(pacer, fake)
    assert fake.now - start == pytest.approx(0.6)  # the flag's 100/min, not 5,000/min
    stats = pacer.stats
    assert stats.limit_requests_per_minute == pytest.approx(100)
    assert stats.requests_limit == "flag"
    assert stats.limit_tokens_per_minute is None


async def test_remaining_lowers_the_bucket_but_never_raises_it() -> None:
    fake = FakeTime()
    pacer = make(fake, rpm=600)  # 10/s
    await send(pacer, fake)
    pacer.answered(RateLimit(remaining_requests=1_000_000))  # more than we believe: ignored
    start = fake.now
    for _ in range(20):
        await send(pacer, fake)
    assert fake.now == pytest.approx(start + 2.0)  # still our own 10/s

    fake2 = FakeTime()
    other = make(fake2, rpm=600)
    await other.acquire(1)
    await other.acquire(1)  # two in flight
    await asyncio.sleep(0)
    fake2.now += 5.0  # idle: our own bucket is full again (20 requests)
    other.release()  # one answered, and the provider has 1 request left for the key
    other.answered(RateLimit(remaining_requests=1))
    start = fake2.now
    await other.acquire(1)
    # 1 left minus 1 in flight = 0: a tenth of a second to refill one request.
    assert fake2.now - start == pytest.approx(0.1)


async def test_aimd_window_without_limits() -> None:
    fake = FakeTime()
    pacer = make(fake, max_in_flight=10)
    assert pacer.stats.window == START_WINDOW
    for _ in range(3):
        await send(pacer, fake)  # each answered: +1
    assert pacer.stats.window == START_WINDOW + 3
    for _ in range(10):
        await send(pacer, fake)
    assert pacer.stats.window == 10  # capped at max_in_flight
    pacer.rate_limited(0.0, None)
    assert pacer.stats.window == 5
    await pacer.acquire(1)
    pacer.release()
    pacer.rate_limited(0.0, None)
    assert pacer.stats.window == 2
    # Without limits nothing but the window and the pause holds requests back.
    assert pacer.stats.limit_requests_per_minute is None


async def test_cancelled_waiter_hands_its_turn_on() -> None:
    fake = FakeTime()
    pacer = make(fake, rpm=60_000, max_in_flight=1)
    await pacer.acquire(1)
    first = asyncio.create_task(pacer.acquire(1))
    second = asyncio.create_task(pacer.acquire(1))
    await asyncio.sleep(0)
    first.cancel()
    with pytest.raises(asyncio.CancelledError):
        await first
    pacer.release()
    await asyncio.wait_for(second, 1.0)
    assert pacer.stats.in_flight == 1


def test_bad_arguments_are_refused() -> None:
    with pytest.raises(ValueError):
        Pacer(requests_per_minute=0, tokens_per_minute=None, max_in_flight=1)
    with pytest.raises(ValueError):
        Pacer(requests_per_minute=None, tokens_per_minute=None, max_in_flight=0)


# -- against the mock provider's own limiter (providers/mock/ratelimit.py) ------------------


async def simulate(
    *, minutes: float, others_tokens_per_minute: float = 0.0
) -> tuple[list[float], int, Pacer]:
    """Send flat out to a key limited to 3,000 requests and 1M tokens a minute, learning
    the limits from its answers only; tokens sent per minute, 429s, and the pacer."""
    fake = FakeTime()
    limiter = RateLimiter(3000, 1_000_000, clock=fake.clock)
    pacer = make(fake, max_in_flight=64)
    rng = random.Random(1)
    per_minute: list[float] = []
    start = mark = last = fake.now
    tokens = refused = 0
    while fake.now < start + minutes * 60:
        cost = rng.randint(200, 800)  # 500 on average: the token budget binds
        await pacer.acquire(cost)
        if others_tokens_per_minute:  # another user of the same key, spending steadily
            limiter.take("key", int(others_tokens_per_minute * (fake.now - last) / 60))
            last = fake.now
        budget = limiter.take("key", cost)
        info = RateLimit(
            limit_requests=budget.limit_requests,
            remaining_requests=budget.remaining_requests,
            reset_requests=budget.reset_requests,
            limit_tokens=budget.limit_tokens,
            remaining_tokens=budget.remaining_tokens,
            reset_tokens=budget.reset_tokens,
        )
        pacer.release()
        if budget.allowed:
            pacer.answered(info)
            tokens += cost
        else:
            refused += 1
            pacer.rate_limited(budget.retry_after, info)
        if fake.now - mark >= 60:
            per_minute.append(tokens / (fake.now - mark) * 60)
            mark, tokens = fake.now, 0
    return per_minute, refused, pacer


async def test_learned_limits_reach_the_providers_budget_without_a_429() -> None:
    per_minute, refused, pacer = await simulate(minutes=5)
    assert refused == 0
    # 98% of the limit, every minute after the first (whose burst the provider's full
    # bucket absorbs).
    for rate in per_minute[1:]:
        assert rate == pytest.approx(1_000_000 * LEARNED_SHARE, rel=0.01)
    assert per_minute[0] <= 1_000_000 * 1.02
    assert pacer.stats.tokens_limit == "learned"


async def test_a_key_shared_with_another_user_settles_on_what_is_left() -> None:
    per_minute, refused, _ = await simulate(minutes=8, others_tokens_per_minute=500_000)
    # Once the provider's minute of headroom is spent, `remaining` holds us to the half
    # the other user leaves, with a few 429s a minute at most.
    for rate in per_minute[-4:]:
        assert rate == pytest.approx(500_000, rel=0.03)
    assert refused < 15 * len(per_minute)
