"""Input order holds answers back until all earlier tickets are settled; arrival order never."""

from __future__ import annotations

import random

import pytest

from workers.backfill.ordering import ArrivalOrder, InputOrder, Outcome, make_order


def outcome(n: int) -> Outcome:
    return Outcome(f"id-{n}", 1, n.to_bytes(4, "little"))


def test_input_order_releases_an_unbroken_run_from_the_oldest_ticket() -> None:
    order = InputOrder()
    tickets = [order.take() for _ in range(4)]
    assert order.resolve(tickets[2], outcome(2)) == []
    assert order.resolve(tickets[1], None) == []  # a refused text: nothing to write
    assert order.resolve(tickets[0], outcome(0)) == [outcome(0), outcome(2)]
    assert order.open == 1
    assert order.resolve(tickets[3], outcome(3)) == [outcome(3)]
    assert order.open == 0


def test_input_order_keeps_input_order_whatever_the_arrival_order() -> None:
    order = InputOrder()
    tickets = [order.take() for _ in range(500)]
    shuffled = tickets[:]
    random.Random(7).shuffle(shuffled)
    written: list[Outcome] = []
    for ticket in shuffled:
        written += order.resolve(ticket, outcome(ticket))
    assert written == [outcome(t) for t in tickets]


def test_arrival_order_writes_at_once() -> None:
    order = ArrivalOrder()
    first, second = order.take(), order.take()
    assert order.resolve(second, outcome(1)) == [outcome(1)]
    assert order.open == 1
    assert order.resolve(first, None) == []
    assert order.open == 0


@pytest.mark.parametrize("kind", ["input", "arrival"])
def test_a_ticket_settles_once(kind: str) -> None:
    order = make_order(kind)
    ticket = order.take()
    order.resolve(ticket, outcome(0))
    with pytest.raises(ValueError):
        order.resolve(ticket, outcome(0))
    with pytest.raises(ValueError):
        order.resolve(ticket + 5, outcome(0))


def test_unknown_order_is_refused() -> None:
    with pytest.raises(ValueError):
        make_order("sorted")
