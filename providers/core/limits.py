"""How much one embeddings request to a provider may carry.

A producer that sizes its own jobs (`llm-fleet backfill`) reads these to group
texts so that one job is one provider request: then the provider's request and
token budgets count jobs, not fragments of them, and no job is refused for its
size. Adapters still split a job that is larger, so the numbers are advice for
producers, never a check the worker makes.

Each provider with embeddings declares them in its own folder, from its
documentation. Models that differ from the provider's rule are listed by exact
name: a prefix would be wrong as often as right (`voyage-3` and `voyage-3-large`
have different caps). A name with a path (`models/x`, a Bedrock ARN ending
`foundation-model/x`) is also looked up by its last part; a name not listed gets
the provider's rule, which is chosen so that it never asks too much.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

__all__ = ["EmbedLimits"]


@dataclass(frozen=True, slots=True)
class EmbedLimits:
    max_inputs: int  # texts in one provider request
    # Tokens of one text; None when the provider truncates it itself, or documents no limit.
    max_input_tokens: int | None = None
    max_request_tokens: int | None = None  # tokens of all texts of one request
    by_model: Mapping[str, EmbedLimits] = field(default_factory=dict)  # models that differ

    def __post_init__(self) -> None:
        numbers = (self.max_inputs, self.max_input_tokens, self.max_request_tokens)
        if any(n is not None and n < 1 for n in numbers):
            raise ValueError(f"embedding limits must be at least 1, got {numbers}")

    def for_model(self, model: str) -> EmbedLimits:
        """The limits that hold for `model`: its own entry, else the provider's."""
        name = model.strip()
        found = self.by_model.get(name) or self.by_model.get(name.rsplit("/", 1)[-1])
        return found if found is not None else self
