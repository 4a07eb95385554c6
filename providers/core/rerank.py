"""A provider's ranking, checked before a producer sees it.

Rerank answers are indices into the job's documents with scores. The job's
documents travel once (in the job); the answer carries only indices, so an index
out of range or given twice would point a producer at the wrong document. Every
adapter's result passes through `checked_ranking`: sorted by score (highest
first, ties in document order), cut to `top_n`, and refused if it is not a
ranking of the documents sent.
"""

from __future__ import annotations

import math
from collections.abc import Iterable

from contracts.errors import InternalError
from contracts.frames import RerankItem

__all__ = ["checked_ranking"]


def checked_ranking(
    provider: str, items: Iterable[RerankItem], documents: int, top_n: int | None
) -> list[RerankItem]:
    """`items` sorted best first and cut to `top_n`; `InternalError` when an index is
    out of range or repeated, or a score is not a finite number."""
    ranked = list(items)
    seen: set[int] = set()
    for item in ranked:
        if isinstance(item.index, bool) or not 0 <= item.index < documents:
            raise InternalError(
                f"{provider}: rerank answer names document {item.index!r} of {documents}"
            )
        if item.index in seen:
            raise InternalError(f"{provider}: rerank answer names document {item.index} twice")
        seen.add(item.index)
        if not math.isfinite(item.score):
            raise InternalError(f"{provider}: rerank answer has a non-finite score")
    ranked.sort(key=lambda item: (-item.score, item.index))
    return ranked if top_n is None else ranked[:top_n]
