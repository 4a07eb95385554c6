"""Value types shared by every backfill module.

They live in one leaf module with no project imports so that readers, sinks, the journal,
the batcher and the runner can all exchange them without import cycles.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import PurePath
from typing import TypeVar

F = TypeVar("F", bound=str)


@dataclass(frozen=True, slots=True)
class Item:
    """One text to embed, as read from the input."""

    # 0-based row index in the input as read (file line with content / CSV row / query row)
    position: int
    id: str
    text: str


@dataclass(frozen=True, slots=True)
class BadRow:
    """A row that cannot become an Item (undecodable, not an object, missing/ill-typed field)."""

    position: int
    id: str | None  # when the row had a usable id
    reason: str  # "line 12: not valid JSON", "row 7: field 'text' is missing"


@dataclass(frozen=True, slots=True)
class Rejection:
    """An id the backfill will not embed, recorded for good (final, not retried on rerun)."""

    id: str
    code: str  # "bad_row", "empty_text", "too_long", "duplicate_id", or a contracts error code
    reason: str


@dataclass(frozen=True, slots=True)
class Vectors:
    """Answers for some ids; row i belongs to ids[i]."""

    ids: tuple[str, ...]
    dims: int
    # float32 little-endian, len(ids) * dims * 4 bytes (as contracts.frames.Embeddings.data)
    data: bytes


class BackfillError(Exception):
    """A problem the user must fix (bad flags, unreadable input, output mismatch).

    The message is shown as is, without traceback; it never contains a secret.
    """


def format_from_suffix(path: str, suffixes: Mapping[str, F]) -> F:
    """The file format its suffix names (`.jsonl`, `.csv`, …), or a BackfillError."""
    found = suffixes.get(PurePath(path).suffix.lower())
    if found is None:
        raise BackfillError(
            f"cannot tell the format of {path} from its suffix "
            f"({', '.join(suffixes)}): name it with the format option"
        )
    return found
