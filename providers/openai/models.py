"""What OpenAI's model families differ in, shared by the adapter and the mock.

The reasoning families (o1, o3, o4-mini, gpt-5…) spend hidden reasoning tokens
and refuse the old `max_tokens` parameter: they take `max_completion_tokens`,
which older servers copying the API (vLLM, Ollama) may not know.
"""

from __future__ import annotations

import re
from typing import Final

__all__ = ["is_reasoning_model"]

# "o3-mini", "o1-2024-12-17", "gpt-5.1", "ft:o4-mini-2025-04-16:org::id"; not "gpt-4o".
_REASONING: Final = re.compile(r"(?:ft:)?(?:o\d+|gpt-5)(?:[-.:].*)?")


def is_reasoning_model(model: str) -> bool:
    """Whether `model` belongs to a family that wants `max_completion_tokens`."""
    return _REASONING.fullmatch(model.strip().lower()) is not None
