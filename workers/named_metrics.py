"""The final frame's metrics under the names the system the fleet replaces used.

Producers written against that system read `{name, value, description}` entries:
TIME_TAKEN, STATUS, LLM_REQUEST_ID, INPUT_TOKEN, OUTPUT_TOKEN, TOTAL_TOKEN,
CACHED_CONTENT_TOKEN, THOUGHTS_TOKEN, TIME_TO_FIRST_TOKEN, COST, INPUT_COST and
OUTPUT_COST. Values are text, as there. Unlike there, every provider's usage goes
under the same names: input is INPUT_TOKEN and output is OUTPUT_TOKEN whichever
provider answered (that system swapped them for Cohere, Mistral, Replicate and
OpenAI embeddings), counts are integers (never `%f`), and the cost names it
defined but never sent are sent whenever the fleet's price table knows the cost.
"""

from __future__ import annotations

import math

from contracts.frames import Metrics, NamedMetric, Usage

__all__ = ["named_metrics"]


def named_metrics(
    *,
    status: str,
    usage: Usage | None,
    metrics: Metrics,
    request_id: str,
    answered_provider: str | None,
    input_cost_usd: float | None = None,
    output_cost_usd: float | None = None,
) -> list[NamedMetric]:
    """The named metrics of one job attempt.

    `status`: "ok" or the error code. `answered_provider`: the provider whose answer
    `usage` counts (None when none answered: no token counts are sent then).
    `metrics.cost_usd` is COST; `input_cost_usd` and `output_cost_usd`, when the
    caller has that split, are INPUT_COST and OUTPUT_COST. An unknown cost is left
    out, never sent as 0.
    """
    out = [
        NamedMetric(
            name="TIME_TAKEN",
            value=str(round(metrics.total_ms * 1_000_000)),
            description="Worker time for the job, in nanoseconds",
        ),
        NamedMetric(
            name="STATUS",
            value="SUCCESS" if status == "ok" else "FAILED",
            description="SUCCESS when a provider answered, FAILED otherwise",
        ),
        NamedMetric(name="LLM_REQUEST_ID", value=request_id, description="The job's request id"),
    ]
    if usage is not None and answered_provider is not None:
        out.extend(_tokens(usage))
    if metrics.ttft_ms is not None:
        out.append(
            NamedMetric(
                name="TIME_TO_FIRST_TOKEN",
                value=_decimal(metrics.ttft_ms / 1000, 6),
                description="Worker start to the first token of the answer, in seconds",
            )
        )
    for name, cost, what in (
        ("COST", metrics.cost_usd, "The answer's cost"),
        ("INPUT_COST", input_cost_usd, "The input tokens' cost"),
        ("OUTPUT_COST", output_cost_usd, "The output tokens' cost"),
    ):
        if cost is not None and math.isfinite(cost) and cost >= 0:
            out.append(
                NamedMetric(
                    name=name,
                    value=_decimal(cost, 9),
                    description=f"{what} by the fleet's price table, in US dollars",
                )
            )
    return out


def _tokens(usage: Usage) -> list[NamedMetric]:
    total = usage.total_tokens or usage.input_tokens + usage.output_tokens
    out = [
        NamedMetric(
            name="INPUT_TOKEN",
            value=str(usage.input_tokens),
            description="Input (prompt) tokens, cached ones included",
        ),
        NamedMetric(
            name="OUTPUT_TOKEN",
            value=str(usage.output_tokens),
            description="Output (completion) tokens, reasoning ones included",
        ),
        NamedMetric(name="TOTAL_TOKEN", value=str(total), description="Input plus output tokens"),
    ]
    if (usage.cached_input_tokens or 0) > 0:
        out.append(
            NamedMetric(
                name="CACHED_CONTENT_TOKEN",
                value=str(usage.cached_input_tokens),
                description="Input tokens read from the provider's prompt cache",
            )
        )
    if (usage.reasoning_tokens or 0) > 0:
        out.append(
            NamedMetric(
                name="THOUGHTS_TOKEN",
                value=str(usage.reasoning_tokens),
                description="Output tokens spent reasoning before the answer",
            )
        )
    return out


def _decimal(value: float, places: int) -> str:
    """Fixed-point text without trailing zeros (never an exponent: 1.2e-05 parses badly)."""
    text = f"{value:.{places}f}".rstrip("0").rstrip(".")
    return text or "0"
