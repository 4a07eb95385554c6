"""The order answers reach the output: the input's, or as they arrive.

Every item that needs an outcome in this run takes a ticket when it is read
(tickets count up in input order); its outcome (a vector, or nothing for a text
that was refused) is handed back with the ticket. `InputOrder` releases outcomes
only as an unbroken run from the oldest open ticket, so the output is in input
order however the answers arrive; `ArrivalOrder` releases each at once (the
output is then keyed by id). Either way the runner bounds how many tickets may
be open, which bounds what `InputOrder` holds back.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

__all__ = ["ArrivalOrder", "InputOrder", "Outcome", "OutputOrder", "make_order"]


@dataclass(frozen=True, slots=True)
class Outcome:
    """One item's vector (float32 little-endian, `dims` wide)."""

    id: str
    dims: int
    vector: bytes


class OutputOrder(Protocol):
    def take(self) -> int:
        """A ticket for the next item read."""
        ...

    def resolve(self, ticket: int, outcome: Outcome | None) -> list[Outcome]:
        """Settle one ticket; the outcomes that may be written now, in order."""
        ...

    @property
    def open(self) -> int:
        """Tickets taken and not yet settled."""
        ...


class InputOrder:
    def __init__(self) -> None:
        self._next_ticket = 0
        self._oldest = 0  # the first ticket not yet released
        self._settled: dict[int, Outcome | None] = {}

    def take(self) -> int:
        ticket = self._next_ticket
        self._next_ticket += 1
        return ticket

    def resolve(self, ticket: int, outcome: Outcome | None) -> list[Outcome]:
        if ticket < self._oldest or ticket in self._settled or ticket >= self._next_ticket:
            raise ValueError(f"ticket {ticket} is not open")
        self._settled[ticket] = outcome
        released: list[Outcome] = []
        while self._oldest in self._settled:
            ready = self._settled.pop(self._oldest)
            if ready is not None:
                released.append(ready)
            self._oldest += 1
        return released

    @property
    def open(self) -> int:
        return self._next_ticket - self._oldest - len(self._settled)


class ArrivalOrder:
    def __init__(self) -> None:
        self._next_ticket = 0
        self._open: set[int] = set()

    def take(self) -> int:
        ticket = self._next_ticket
        self._next_ticket += 1
        self._open.add(ticket)
        return ticket

    def resolve(self, ticket: int, outcome: Outcome | None) -> list[Outcome]:
        try:
            self._open.remove(ticket)
        except KeyError:
            raise ValueError(f"ticket {ticket} is not open") from None
        return [] if outcome is None else [outcome]

    @property
    def open(self) -> int:
        return len(self._open)


def make_order(order: str) -> OutputOrder:
    if order == "input":
        return InputOrder()
    if order == "arrival":
        return ArrivalOrder()
    raise ValueError(f"order must be 'input' or 'arrival', got {order!r}")
