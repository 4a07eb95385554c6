"""`--dry-run`: the plan counts what a run would send, and prices and times it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterable

import pytest

from workers.backfill.batching import Batcher, BatchLimits
from workers.backfill.items import BadRow, Item
from workers.backfill.plan import Plan, format_plan, make_plan
from workers.backfill.tokens import TokenEstimator
from workers.prices import load_price_table

TEXT = "embeddings map texts to vectors"  # 5 words, 31 bytes: heuristic 8 tokens


async def rows_of(rows: Iterable[Item | BadRow]) -> AsyncIterator[Item | BadRow]:
    for row in rows:
        yield row


async def plan_for(
    rows: list[Item | BadRow],
    *,
    done: set[str] | None = None,
    limits: BatchLimits | None = None,
    long_texts: str = "refuse",
    provider: str = "mock",
    model: str = "mock-embed",
    rpm: float | None = None,
    tpm: float | None = None,
) -> Plan:
    estimator = TokenEstimator()
    batcher = Batcher(
        limits or BatchLimits(max_inputs=10),
        estimator,
        long_texts="truncate" if long_texts == "truncate" else "refuse",
    )
    return await make_plan(
        rows_of(rows),
        done=done or set(),
        batcher=batcher,
        estimator=estimator,
        prices=load_price_table(),
        provider=provider,
        model=model,
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
    )


def corpus(n: int) -> list[Item | BadRow]:
    return [Item(position=i, id=f"id-{i}", text=TEXT) for i in range(n)]


async def test_counts_requests_tokens_and_prices_them() -> None:
    plan = await plan_for(corpus(95), rpm=60)
    assert (plan.texts, plan.already_done, plan.refused, plan.truncated) == (95, 0, 0, 0)
    assert plan.requests == 10  # 9 full chunks of 10, and 5 left
    assert plan.tokens == 95 * 8
    # The mock's made-up price: 0.10 USD per million embedding tokens.
    assert plan.cost_usd == pytest.approx(95 * 8 * 0.10 / 1e6)
    assert plan.seconds == pytest.approx(10.0) and plan.bound_by == "requests/min"


async def test_skips_what_is_done_and_counts_refusals_duplicates_and_truncations() -> None:
    rows: list[Item | BadRow] = [
        *corpus(4),
        BadRow(position=4, id=None, reason="line 5: not valid JSON"),
        BadRow(position=5, id="bad-with-id", reason="row 6: field 'text' is missing"),
        Item(position=6, id="id-1", text="again"),  # a repeated id: the first is kept
        Item(position=7, id="empty", text="  "),
        Item(position=8, id="long", text="word " * 200),
    ]
    plan = await plan_for(
        rows,
        done={"id-0", "<row 5>"},  # an earlier run wrote id-0 and refused the bad line
        limits=BatchLimits(max_inputs=10, max_input_tokens=50),
        long_texts="truncate",
    )
    assert plan.texts == 9
    assert plan.already_done == 2
    assert plan.duplicates == 1
    assert plan.refused == 2  # the bad row with an id and the empty text
    assert plan.truncated == 1
    assert plan.requests == 1  # id-1..id-3 and the cut long text
    assert plan.tokens == 3 * 8 + 50


async def test_time_is_bound_by_the_tighter_limit() -> None:
    plan = await plan_for(corpus(100), rpm=6000, tpm=400)  # 800 tokens at 400/min
    assert plan.bound_by == "tokens/min" and plan.seconds == pytest.approx(120.0)
    unknown = await plan_for(corpus(10))
    assert unknown.seconds is None and unknown.bound_by is None


async def test_a_model_without_a_price_has_an_unknown_cost() -> None:
    plan = await plan_for(corpus(3), provider="no-such-provider", model="x")
    assert plan.cost_usd is None
    assert "cost unknown" in format_plan(plan)


def test_format_plan_reads_like_the_example() -> None:
    plan = Plan(
        texts=1_000_000,
        already_done=12_000,
        refused=3,
        truncated=7,
        tokens=31_200_000,
        requests=10_417,
        cost_usd=0.624,
        seconds=624.0,
        bound_by="tokens/min",
        duplicates=2,
        tokens_per_minute=3_000_000,
        requests_per_minute=3000,
    )
    text = format_plan(plan)
    first = text.splitlines()[0]
    assert first == (
        "1,000,000 texts (12,000 already done), ~31.2M tokens in 10,417 requests, ~$0.62, "
        "~10.4 min at 3M tokens/min (bound by tokens/min)"
    )
    assert "3 refused" in text and "7 truncated" in text and "2 repeated ids" in text
    assert "nothing was sent" in text


def test_format_plan_without_limits_says_how_to_get_a_time() -> None:
    plan = Plan(
        texts=10,
        already_done=0,
        refused=0,
        truncated=0,
        tokens=80,
        requests=1,
        cost_usd=0.000008,
        seconds=None,
        bound_by=None,
    )
    text = format_plan(plan)
    assert text.splitlines()[0] == "10 texts, ~80 tokens in 1 request, ~$0.0000080"
    assert "--rpm" in text and "--tpm" in text
