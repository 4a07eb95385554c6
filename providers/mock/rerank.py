"""Relevance scores the mocks rank documents by: deterministic and plausible.

A score is the share of the query's words found in the document (case and
punctuation aside), nudged by a small stable term from the document's text so
that documents sharing as many words still come in a fixed order, and kept
inside (0, 1) as the providers' relevance scores are. Tests can therefore
assert order: a document holding every query word ranks above one holding some.
"""

from __future__ import annotations

import hashlib
import re
from typing import Final

__all__ = ["rank", "relevance", "token_count"]

_WORD: Final = re.compile(r"\w+")


def _words(text: str) -> list[str]:
    return _WORD.findall(text.lower())


def relevance(query: str, document: str) -> float:
    asked = set(_words(query))
    found = set(_words(document))
    overlap = len(asked & found) / len(asked) if asked else 0.0
    # A tie-breaker below the smallest overlap step (1/len(asked)) for any query.
    digest = hashlib.sha256(document.encode()).digest()
    jitter = int.from_bytes(digest[:4], "big") / 2**32 / 1000
    return round(0.0005 + 0.998 * overlap + jitter, 6)


def rank(query: str, documents: list[str]) -> list[tuple[int, float]]:
    """(index, score) of every document, best first (ties in document order)."""
    scored = [(i, relevance(query, doc)) for i, doc in enumerate(documents)]
    return sorted(scored, key=lambda pair: (-pair[1], pair[0]))


def token_count(text: str) -> int:
    """What the mocks bill for a text: its words, at least one."""
    return max(len(_words(text)), 1)
