"""`--dry-run`: what a backfill would send, cost and take, before anything is spent.

The plan reads the whole input through the same batcher a run uses, so its
request count, truncations and refusals are the run's own (with an uncalibrated
estimator: no provider has counted anything yet, so token numbers are the
heuristic's, within about 20% for prose). Cost comes from the price table,
embeddings being billed per input token; time from whichever of the
requests/min and tokens/min limits binds, when one is known.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Collection
from dataclasses import dataclass

from contracts.frames import Usage
from workers.backfill.batching import Batcher, Chunk
from workers.backfill.items import BadRow, Item
from workers.backfill.progress import format_duration
from workers.backfill.tokens import TokenEstimator
from workers.prices import PriceTable

__all__ = ["Plan", "format_plan", "make_plan"]


@dataclass(frozen=True, slots=True)
class Plan:
    texts: int  # rows in the input (bad rows and repeated ids included)
    already_done: int  # ids an earlier run settled
    refused: int  # bad rows, empty and (with --long-texts refuse) over-long texts
    truncated: int
    tokens: int  # estimated input tokens to send
    requests: int
    cost_usd: float | None  # from workers.prices; None when the model has no price
    seconds: float | None  # at the binding rate limit, when one is known
    bound_by: str | None  # "requests/min" or "tokens/min"
    duplicates: int = 0  # rows repeating an earlier id (the first is kept)
    provider: str = ""
    model: str = ""
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None


async def make_plan(
    rows: AsyncIterator[Item | BadRow],
    *,
    done: Collection[str],
    batcher: Batcher,
    estimator: TokenEstimator,
    prices: PriceTable,
    provider: str,
    model: str,
    requests_per_minute: float | None,
    tokens_per_minute: float | None,
) -> Plan:
    """Count what a run of the same command would do with `rows`.

    `estimator` is the one `batcher` sizes with; nothing calibrates it here, and
    the chunks carry its estimates.
    """
    texts = already_done = refused = truncated = tokens = requests = duplicates = 0
    seen: set[str] = set()

    def count(chunk: Chunk) -> None:
        nonlocal truncated, tokens, requests
        truncated += chunk.truncated
        tokens += chunk.tokens
        requests += 1

    async for row in rows:
        texts += 1
        # As the runner names them: a bad row without a usable id by its row number.
        row_id = row.id if row.id is not None else f"<row {row.position + 1}>"
        if row_id in done:
            already_done += 1
            continue
        if row_id in seen:
            duplicates += 1
            continue
        seen.add(row_id)
        if isinstance(row, BadRow):
            refused += 1
            continue
        chunks, rejection = batcher.add(row)
        if rejection is not None:
            refused += 1
        for chunk in chunks:
            count(chunk)
    last = batcher.flush()
    if last is not None:
        count(last)
    cost = prices.cost(provider, model, Usage(input_tokens=tokens), "embed") if tokens else 0.0
    seconds, bound_by = _duration(requests, tokens, requests_per_minute, tokens_per_minute)
    return Plan(
        texts=texts,
        already_done=already_done,
        refused=refused,
        truncated=truncated,
        tokens=tokens,
        requests=requests,
        cost_usd=cost,
        seconds=seconds,
        bound_by=bound_by,
        duplicates=duplicates,
        provider=provider,
        model=model,
        requests_per_minute=requests_per_minute,
        tokens_per_minute=tokens_per_minute,
    )


def _duration(
    requests: int, tokens: int, rpm: float | None, tpm: float | None
) -> tuple[float | None, str | None]:
    candidates = [
        (count / limit * 60.0, name)
        for count, limit, name in ((requests, rpm, "requests/min"), (tokens, tpm, "tokens/min"))
        if limit
    ]
    if not candidates:
        return None, None
    return max(candidates)


def _short(number: float) -> str:
    """1,234 / 31.2k / 1M / 31.2M / 1.5B."""
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(number) >= size * 10 or (suffix != "k" and abs(number) >= size):
            return f"{number / size:.1f}".removesuffix(".0") + suffix
    return f"{number:,.0f}"


def _approximate_cost(usd: float) -> str:
    """Two significant digits are all an estimate has: $0.62, $0.0012, $1,234.57."""
    if usd <= 0:
        return "$0"
    if usd >= 1:
        return f"${usd:,.2f}"
    return f"${usd:.{max(2, 1 - math.floor(math.log10(usd)))}f}"


def format_plan(plan: Plan) -> str:
    """The plan as a few human lines (the first says it all)."""
    done = f" ({plan.already_done:,} already done)" if plan.already_done else ""
    requests = f"{plan.requests:,} request" + ("" if plan.requests == 1 else "s")
    head = f"{plan.texts:,} texts{done}, ~{_short(plan.tokens)} tokens in {requests}"
    if plan.cost_usd is not None:
        head += f", ~{_approximate_cost(plan.cost_usd)}"
    if plan.seconds is not None and plan.bound_by is not None:
        by_requests = plan.bound_by == "requests/min"
        rate = plan.requests_per_minute if by_requests else plan.tokens_per_minute
        at = f" at {_short(rate)} {plan.bound_by}" if rate else ""
        head += f", ~{_minutes(plan.seconds)}{at} (bound by {plan.bound_by})"
    lines = [head]
    if plan.cost_usd is None:
        lines.append(
            f"  cost unknown: no price for {plan.provider}/{plan.model} in the price table"
        )
    if plan.seconds is None and plan.requests:
        lines.append(
            "  time unknown: give --rpm and/or --tpm (otherwise the run learns the limits "
            "from the provider's answers)"
        )
    if plan.refused:
        lines.append(f"  {plan.refused:,} refused (bad rows, empty or over-long texts)")
    if plan.truncated:
        lines.append(f"  {plan.truncated:,} truncated to the model's limit")
    if plan.duplicates:
        lines.append(f"  {plan.duplicates:,} repeated ids skipped (the first occurrence is kept)")
    lines.append("  token counts are estimates; nothing was sent")
    return "\n".join(lines)


def _minutes(seconds: float) -> str:
    if seconds < 60:
        return format_duration(seconds)
    if seconds < 3600:
        return f"{seconds / 60:.1f} min"
    return format_duration(seconds)
