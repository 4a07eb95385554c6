"""The backfill batcher: chunks sized to a provider's limits, long and empty texts."""

from __future__ import annotations

import pytest

from workers.backfill.batching import REQUEST_TOKEN_MARGIN, Batcher, BatchLimits, Chunk
from workers.backfill.items import Item, Rejection
from workers.backfill.tokens import TokenEstimator, heuristic_tokens


def items(n: int, text: str = "some words to embed here", start: int = 0) -> list[Item]:
    return [Item(position=i, id=f"id-{i}", text=text) for i in range(start, start + n)]


def feed(batcher: Batcher, rows: list[Item]) -> tuple[list[Chunk], list[Rejection]]:
    chunks: list[Chunk] = []
    refused: list[Rejection] = []
    for row in rows:
        ready, rejection = batcher.add(row)
        chunks.extend(ready)
        if rejection is not None:
            refused.append(rejection)
    last = batcher.flush()
    if last is not None:
        chunks.append(last)
    return chunks, refused


def test_chunks_close_at_max_inputs_in_input_order() -> None:
    batcher = Batcher(BatchLimits(max_inputs=96), TokenEstimator(), long_texts="refuse")
    rows = items(250)
    first, _ = batcher.add(rows[0])
    assert first == [] and batcher.pending == 1
    chunks, refused = feed(batcher, rows[1:])
    assert refused == []
    assert [len(c.items) for c in chunks] == [96, 96, 58]
    assert [i.id for c in chunks for i in c.items] == [r.id for r in rows]
    assert batcher.pending == 0 and batcher.flush() is None


def test_a_full_chunk_is_ready_as_soon_as_its_last_item_arrives() -> None:
    batcher = Batcher(BatchLimits(max_inputs=3), TokenEstimator(), long_texts="refuse")
    ready: list[Chunk] = []
    for row in items(3):
        ready, _ = batcher.add(row)
    assert len(ready) == 1 and len(ready[0].items) == 3
    assert batcher.pending == 0


def test_chunks_close_before_passing_the_request_token_budget_with_a_margin() -> None:
    estimator = TokenEstimator()
    text = "word " * 100  # 100 pieces, 125 bytes/4: about 125 tokens
    per_text = estimator.estimate_for_limits(text)
    limits = BatchLimits(max_inputs=1000, max_request_tokens=1000)
    chunks, _ = feed(Batcher(limits, estimator, long_texts="refuse"), items(20, text))
    budget = 1000 * REQUEST_TOKEN_MARGIN
    assert all(len(c.items) * per_text <= budget for c in chunks)
    assert len(chunks[0].items) == int(budget // per_text)  # as full as the budget allows
    assert sum(len(c.items) for c in chunks) == 20


def test_chunk_tokens_are_the_pacing_estimate() -> None:
    estimator = TokenEstimator()
    estimator.observe(1000, 700)  # calibrated below the heuristic
    rows = items(5, "alpha beta gamma delta")
    chunks, _ = feed(Batcher(BatchLimits(max_inputs=10), estimator, long_texts="refuse"), rows)
    assert chunks[0].tokens == sum(estimator.estimate(r.text) for r in rows)
    assert chunks[0].heuristic == sum(heuristic_tokens(r.text) for r in rows)
    assert chunks[0].tokens < chunks[0].heuristic
    # Re-estimated at send time with a calibration learned since, without the texts.
    estimator.observe(100, 50)
    assert estimator.calibrated(chunks[0].heuristic) < chunks[0].tokens


def test_long_texts_are_refused_with_the_numbers() -> None:
    limits = BatchLimits(max_inputs=10, max_input_tokens=50)
    long = Item(position=1, id="long", text="word " * 200)
    chunks, refused = feed(
        Batcher(limits, TokenEstimator(), long_texts="refuse"),
        [*items(1), long, *items(1, start=2)],
    )
    assert [r.id for r in refused] == ["long"]
    assert refused[0].code == "too_long"
    assert "about 250 tokens" in refused[0].reason and "at most 50 per text" in refused[0].reason
    assert [i.id for c in chunks for i in c.items] == ["id-0", "id-2"]


def test_long_texts_are_truncated_and_counted() -> None:
    estimator = TokenEstimator()
    limits = BatchLimits(max_inputs=10, max_input_tokens=50)
    long = Item(position=1, id="long", text="word " * 200)
    chunks, refused = feed(
        Batcher(limits, estimator, long_texts="truncate"), [*items(1), long, *items(1, start=2)]
    )
    assert refused == []
    [chunk] = chunks
    assert chunk.truncated == 1 and chunk.cut_ids == {"long"}
    cut = chunk.items[1]
    assert cut.id == "long" and cut.position == 1
    assert long.text.startswith(cut.text) and estimator.estimate_for_limits(cut.text) <= 50


def test_a_text_over_the_request_cap_is_treated_as_too_long_even_without_a_text_cap() -> None:
    limits = BatchLimits(max_inputs=10, max_request_tokens=100)
    long = Item(position=0, id="long", text="word " * 500)
    _, refused = feed(Batcher(limits, TokenEstimator(), long_texts="refuse"), [long])
    assert refused and "at most 100 per text" in refused[0].reason


def test_a_text_between_the_budget_and_the_cap_goes_alone() -> None:
    estimator = TokenEstimator()
    text = "word " * 76  # 95 tokens: over 90% of 100, under 100
    assert 90 < estimator.estimate_for_limits(text) <= 100
    limits = BatchLimits(max_inputs=10, max_request_tokens=100)
    chunks, refused = feed(
        Batcher(limits, estimator, long_texts="refuse"),
        [*items(1), Item(1, "big", text), *items(1, start=2)],
    )
    assert refused == []
    assert [[i.id for i in c.items] for c in chunks] == [["id-0"], ["big"], ["id-2"]]


@pytest.mark.parametrize("text", ["", "   ", "\n\t "])
def test_empty_texts_are_refused(text: str) -> None:
    batcher = Batcher(BatchLimits(max_inputs=10), TokenEstimator(), long_texts="truncate")
    ready, rejection = batcher.add(Item(0, "e", text))
    assert ready == [] and rejection is not None
    assert rejection.code == "empty_text" and rejection.id == "e"
    assert batcher.pending == 0


def test_limits_follow_a_calibration_above_one() -> None:
    estimator = TokenEstimator()
    estimator.observe(100, 200)  # the provider counts twice what the heuristic says
    text = "word " * 30  # heuristic about 38
    limits = BatchLimits(max_inputs=10, max_input_tokens=60)
    _, refused = feed(Batcher(limits, estimator, long_texts="refuse"), [Item(0, "x", text)])
    assert refused and refused[0].code == "too_long"


def test_split_halves_a_chunk_and_keeps_truncation_counts() -> None:
    estimator = TokenEstimator()
    limits = BatchLimits(max_inputs=10, max_input_tokens=20)
    rows = [
        *items(3),
        Item(3, "long-a", "word " * 50),
        *items(3, start=4),
        Item(7, "long-b", "x " * 90),
    ]
    batcher = Batcher(limits, estimator, long_texts="truncate")
    chunks, _ = feed(batcher, rows)
    [chunk] = chunks
    assert chunk.truncated == 2
    first, second = batcher.split(chunk)
    assert [i.id for i in first.items + second.items] == [i.id for i in chunk.items]
    assert (len(first.items), len(second.items)) == (4, 4)
    assert (first.truncated, second.truncated) == (1, 1)
    assert first.tokens + second.tokens == chunk.tokens
    assert first.heuristic + second.heuristic == chunk.heuristic
    one, other = batcher.split(first)
    assert len(one.items) == 2 and len(other.items) == 2
    with pytest.raises(ValueError):
        batcher.split(Chunk(items(1), 5))


def test_limits_must_be_positive() -> None:
    with pytest.raises(ValueError):
        BatchLimits(max_inputs=0)
    with pytest.raises(ValueError):
        BatchLimits(max_inputs=5, max_request_tokens=0)
