"""Split requests: bounded concurrency, answers in order, the first real failure raised."""

from __future__ import annotations

import asyncio

import pytest

from contracts.errors import RateLimited
from providers.core.fanout import in_order


async def test_answers_in_order_with_at_most_limit_running() -> None:
    running = peak = 0

    async def call(n: int) -> int:
        nonlocal running, peak
        running += 1
        peak = max(peak, running)
        await asyncio.sleep(0.001 * (10 - n))  # later ones finish first
        running -= 1
        return n * n

    assert await in_order(call, list(range(10)), limit=3) == [n * n for n in range(10)]
    assert peak == 3


class Refused(Exception):
    pass


async def test_first_failure_cancels_the_rest_and_is_raised_as_itself() -> None:
    finished: list[int] = []

    async def call(n: int) -> int:
        if n == 1:
            raise RateLimited("p: slow down")
        if n == 2:
            raise ValueError("bug")
        await asyncio.sleep(0.5)
        finished.append(n)
        return n

    with pytest.raises(RateLimited):  # a FleetError before any other exception
        await in_order(call, [0, 1, 2, 3], limit=4)
    assert finished == []

    async def refuse(n: int) -> int:
        if n:
            raise Refused
        raise RateLimited("p: slow down")

    with pytest.raises(Refused):  # a preferred class before a FleetError
        await in_order(refuse, [0, 1], limit=2, prefer=(Refused,))
