"""The backfill's token estimate: heuristic, calibration, truncation."""

from __future__ import annotations

import time

import pytest

from workers.backfill.tokens import TokenEstimator, heuristic_tokens

ENGLISH = (
    "The quick brown fox jumps over the lazy dog. Embeddings map each text to a vector, "
    "and texts that mean similar things end up close together in that space. "
)


def test_english_is_about_four_characters_a_token() -> None:
    text = ENGLISH * 10
    tokens = heuristic_tokens(text)
    assert len(text) / 4.5 <= tokens <= len(text) / 3.5
    # Never fewer than words: no real tokenizer gives a word less than a token.
    assert tokens >= len(text.split())


def test_cjk_counts_about_one_token_a_character_not_three_quarters() -> None:
    text = "埋め込みはテキストをベクトルに変換します" * 5  # 20 characters, 3 bytes each
    assert heuristic_tokens(text) >= len(text)
    hangul = "임베딩은텍스트를벡터로바꿉니다"
    assert heuristic_tokens(hangul) >= len(hangul)


def test_code_and_numbers_count_their_pieces() -> None:
    # By length alone these would be ~7 tokens; a BPE tokenizer makes ~12 and ~7 of them.
    assert heuristic_tokens('{"id": 123, "name": "foo"}') >= 11
    assert heuristic_tokens("3.14159265358979") >= 7  # digits go in threes
    assert heuristic_tokens("def f(x):\n    return x + 1") >= 9


def test_every_text_is_at_least_one_token() -> None:
    assert heuristic_tokens("") == 1
    assert heuristic_tokens("a") == 1
    estimator = TokenEstimator()
    assert estimator.estimate("") == 1
    assert estimator.estimate_for_limits("") == 1


def test_lone_surrogates_do_not_break_the_estimate() -> None:
    assert heuristic_tokens("abc\ud800def") >= 2


def test_observe_calibrates_estimate_towards_real_counts() -> None:
    estimator = TokenEstimator()
    assert estimator.ratio == 1.0
    texts = [ENGLISH] * 8
    words = sum(len(t.split()) for t in texts)  # what the mock providers count
    for _ in range(40):
        estimator.observe(sum(estimator.estimate(t) for t in texts), words)
    assert estimator.ratio < 1.0
    calibrated = sum(estimator.estimate(t) for t in texts)
    assert calibrated == pytest.approx(words, rel=0.02)


def test_limits_never_trust_a_ratio_below_one_but_follow_one_above() -> None:
    estimator = TokenEstimator()
    estimator.observe(1000, 500)  # the provider counts half what we guessed
    assert estimator.ratio == pytest.approx(0.5)
    assert estimator.estimate(ENGLISH) < heuristic_tokens(ENGLISH)
    assert estimator.estimate_for_limits(ENGLISH) == heuristic_tokens(ENGLISH)
    other = TokenEstimator()
    other.observe(1000, 1500)  # a tokenizer that counts more than we guess
    assert other.estimate_for_limits(ENGLISH) >= 1.5 * heuristic_tokens(ENGLISH)


def test_ratio_is_smoothed_and_clamped() -> None:
    estimator = TokenEstimator()
    for _ in range(20):
        estimator.observe(100, 100)
    estimator.observe(100, 10_000)  # one absurd answer counts as 5x, blended in at a tenth
    assert estimator.ratio == pytest.approx(1.4)
    for _ in range(200):
        estimator.observe(estimator.estimate("x"), 10_000)
    assert estimator.ratio == pytest.approx(5.0) and estimator.ratio <= 5.0
    estimator.observe(0, 10)
    estimator.observe(10, 0)  # no usage reported: ignored
    assert estimator.ratio == pytest.approx(5.0)


def test_truncate_keeps_the_longest_prefix_within_the_cap_at_a_word_boundary() -> None:
    estimator = TokenEstimator()
    text = ENGLISH * 50
    cut = estimator.truncate(text, 100)
    assert text.startswith(cut)
    assert estimator.estimate_for_limits(cut) <= 100
    assert estimator.estimate_for_limits(cut) >= 90  # not needlessly short
    assert text[len(cut)] == " "  # ends with a whole word
    assert estimator.truncate("short text", 100) == "short text"


def test_truncate_cuts_a_text_without_spaces_anywhere() -> None:
    estimator = TokenEstimator()
    text = "x" * 10_000
    cut = estimator.truncate(text, 50)
    assert estimator.estimate_for_limits(cut) <= 50
    assert len(cut) >= 196
    with pytest.raises(ValueError):
        estimator.truncate(text, 0)


def test_estimate_is_fast_enough_for_a_corpus() -> None:
    text = ENGLISH * 4  # ~600 bytes, a typical document chunk
    n = 2000
    started = time.perf_counter()
    for _ in range(n):
        heuristic_tokens(text)
    per_mb = (time.perf_counter() - started) / (len(text) * n / 1e6)
    # ~0.1 s/MB on one core; even ten times slower it keeps up with any rate limit.
    assert per_mb < 2.0
