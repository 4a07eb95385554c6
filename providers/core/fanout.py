"""Several requests for one job, a few at a time, answers in order.

Embedding jobs larger than a provider takes in one request (Cohere's 96 texts,
Titan's one, TEI's 32, ...) are split; the pieces go out concurrently, bounded so
one job cannot take the whole connection pool, and come back in input order.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from contracts.errors import FleetError

__all__ = ["in_order"]

A = TypeVar("A")
T = TypeVar("T")


async def in_order(
    call: Callable[[A], Awaitable[T]],
    args: Sequence[A],
    *,
    limit: int,
    prefer: tuple[type[BaseException], ...] = (),
) -> list[T]:
    """`call(arg)` for each of `args`, at most `limit` at once, results in `args`' order.

    The first failure cancels the rest and is raised as itself, not as an
    ExceptionGroup: one of `prefer`'s classes first, then a `FleetError`, then
    anything else; never one of the cancellations it caused.
    """
    if len(args) == 1:
        return [await call(args[0])]
    gate = asyncio.Semaphore(limit)

    async def one(arg: A) -> T:
        async with gate:
            return await call(arg)

    try:
        async with asyncio.TaskGroup() as group:
            tasks = [group.create_task(one(arg)) for arg in args]
    except BaseExceptionGroup as failed:
        raise _first_error(failed, prefer) from None
    return [task.result() for task in tasks]


def _first_error(
    group: BaseExceptionGroup[BaseException], prefer: tuple[type[BaseException], ...]
) -> BaseException:
    leaves = _leaves(group)
    for wanted in (*prefer, FleetError):
        for error in leaves:
            if isinstance(error, wanted):
                return error
    others = [e for e in leaves if not isinstance(e, asyncio.CancelledError)]
    return (others or [group])[0]


def _leaves(error: BaseException) -> list[BaseException]:
    if isinstance(error, BaseExceptionGroup):
        return [leaf for inner in error.exceptions for leaf in _leaves(inner)]
    return [error]
