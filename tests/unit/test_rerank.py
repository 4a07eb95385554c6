"""Rankings: checked before producers see them; the mocks' scores order by overlap."""

from __future__ import annotations

import math

import pytest

from contracts.errors import InternalError
from contracts.frames import RerankItem
from providers.core.rerank import checked_ranking
from providers.mock.rerank import rank, relevance


def items(*pairs: tuple[int, float]) -> list[RerankItem]:
    return [RerankItem(index=i, score=s) for i, s in pairs]


def test_sorted_best_first_ties_in_document_order_and_cut_to_top_n() -> None:
    got = checked_ranking("p", items((0, 0.1), (2, 0.9), (1, 0.9), (3, 0.5)), 4, None)
    assert [i.index for i in got] == [1, 2, 3, 0]
    assert [i.index for i in checked_ranking("p", got, 4, 2)] == [1, 2]


@pytest.mark.parametrize(
    ("pairs", "words"),
    [
        (((0, 0.5), (4, 0.1)), "document 4 of 4"),
        (((0, 0.5), (-1, 0.1)), "document -1"),
        (((1, 0.5), (1, 0.4)), "twice"),
        (((0, math.nan),), "non-finite"),
        (((0, math.inf),), "non-finite"),
    ],
)
def test_a_ranking_that_is_not_of_these_documents_is_refused(
    pairs: tuple[tuple[int, float], ...], words: str
) -> None:
    with pytest.raises(InternalError, match=words) as info:
        checked_ranking("p", items(*pairs), 4, None)
    assert str(info.value).startswith("p: ")


def test_mock_scores_follow_word_overlap() -> None:
    docs = ["cats and dogs", "the queue is durable", "a durable queue of jobs", "queue"]
    order = [i for i, _ in rank("durable queue", docs)]
    assert set(order[:2]) == {1, 2} and order[2] == 3 and order[3] == 0
    assert all(0 < relevance("durable queue", d) < 1 for d in docs)
    assert relevance("x", "y") == relevance("x", "y")  # deterministic
