"""The written part of a mock answer, for every dialect alike.

Text from the text engine, or JSON (an instance of the request's schema, or an
object wrapping a dozen words for a schema-less JSON mode), cut at the request's
token limit and at its first stop sequence. Each dialect names the outcome its
own way (`length` / `MAX_TOKENS` / `max_tokens`, `stop_sequence` / `STOP_SEQUENCE`).
"""

from __future__ import annotations

import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final, Literal

from providers.mock.pieces import cut_at_stop, split_pieces
from providers.mock.schema_json import instance_of, json_object_answer, tool_input
from providers.mock.text import answer_tokens

__all__ = ["Written", "compact_json", "tool_arguments", "written_answer"]

# Words in the text a schema-less JSON answer wraps.
_JSON_WORDS: Final = 12
_SEPARATORS: Final = (",", ":")

Ending = Literal["complete", "length", "stop_sequence"]


@dataclass(frozen=True, slots=True)
class Written:
    pieces: list[str]  # each one streamed delta and one counted token
    ending: Ending
    stop_sequence: str | None = None  # the one that cut it, for dialects that say


def compact_json(value: Any) -> str:
    return json.dumps(value, separators=_SEPARATORS, ensure_ascii=False)


def tool_arguments(parameters: Mapping[str, Any], rng: random.Random) -> str:
    """Arguments for a call of a tool with these JSON-schema `parameters`, as JSON text."""
    return compact_json(tool_input(parameters, rng))


def written_answer(
    rng: random.Random,
    *,
    cap: int,
    max_tokens: int | None,
    stop: Sequence[str] | None,
    schema: Mapping[str, Any] | None = None,
    json_object: bool = False,
) -> Written:
    """Text (or JSON, with `schema` or `json_object`) of at most `max_tokens` pieces.

    Text is `cap` tokens long (`MockConfig.max_tokens_default`): a smaller limit
    cuts it (`length`). JSON is as long as the value; a limit below that cuts it.
    """
    if schema is None and not json_object:
        count = cap if max_tokens is None else min(max_tokens, cap)
        pieces = answer_tokens(rng, count)
        ending: Ending = "length" if count < cap else "complete"
    else:
        value = (
            instance_of(schema, rng)
            if schema is not None
            else json_object_answer(rng, "".join(answer_tokens(rng, _JSON_WORDS)))
        )
        pieces = split_pieces(compact_json(value))
        ending = "complete"
        if max_tokens is not None and max_tokens < len(pieces):
            pieces, ending = pieces[:max_tokens], "length"
    cut = cut_at_stop(pieces, stop or ())
    if cut is not None:
        return Written(cut.pieces, "stop_sequence", cut.sequence)
    return Written(pieces, ending)
