"""An answer as token-like pieces: each one streamed delta and one counted token.

Shared by every provider's mock so a stop sequence cuts the same text at the same
place in all of them, whatever each API then calls the reason it stopped.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

__all__ = ["StopCut", "cut_at_stop", "split_pieces"]

_PIECE: Final = re.compile(r"\s*[\w']+|\s*[^\w\s]+|\s+")


def split_pieces(text: str) -> list[str]:
    """Token-like pieces whose concatenation is `text`."""
    return _PIECE.findall(text)


@dataclass(frozen=True, slots=True)
class StopCut:
    """The pieces sent before a stop sequence, and the sequence that matched."""

    pieces: list[str]
    sequence: str


def cut_at_stop(pieces: Sequence[str], stops: Sequence[str]) -> StopCut | None:
    """The answer up to the first stop sequence in it (which is not sent), or None.

    Empty sequences never match. The earliest occurrence wins; at one position,
    the sequence listed first. A
    piece the stop begins inside is sent in part, as a model's last token would be.
    """
    text = "".join(pieces)
    hits = [
        (text.find(stop), order, stop) for order, stop in enumerate(stops) if stop and stop in text
    ]
    if not hits:
        return None
    end, _, sequence = min(hits)
    kept: list[str] = []
    used = 0
    for piece in pieces:
        if used + len(piece) > end:
            if end > used:
                kept.append(piece[: end - used])
            break
        kept.append(piece)
        used += len(piece)
    return StopCut(kept, sequence)
