"""What the Gemini mock answers a checked request with: text or function calls.

Mirrors the OpenAI and Anthropic mocks, so one conversation drives every dialect
alike: the same text for the same last user text (`providers.mock.text`); function
calls when tools are declared and the last turn is user text saying "use tools",
or the calling mode is `ANY` (the allowed functions, two at most). Arguments are
instances of the declared schema, drawn from the same seeded RNG as the text.
`responseMimeType: application/json` answers JSON text (an instance of the schema
when one is given). `stopSequences` cut the text where the first one appears and
the answer still finishes `STOP`, as Gemini does; `maxOutputTokens` shorter than
the answer finishes `MAX_TOKENS`. Function calls carry no `id`, as Gemini's do not.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any, Final

from providers.gemini.mock_request import Declaration, GenerateRequest, last_user_text
from providers.mock.config import MockConfig
from providers.mock.pieces import split_pieces
from providers.mock.schema_json import tool_input
from providers.mock.text import answer_rng
from providers.mock.written import written_answer

__all__ = ["Answer", "FunctionCall", "compose", "dumps"]

_SEPARATORS: Final = (",", ":")


def dumps(value: object) -> str:
    return json.dumps(value, separators=_SEPARATORS, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class FunctionCall:
    name: str
    args: dict[str, Any]

    @property
    def tokens(self) -> int:
        # The name counts as one, as a model emits it, plus the arguments' pieces.
        return len(split_pieces(dumps(self.args))) + 1


@dataclass(frozen=True, slots=True)
class Answer:
    pieces: list[str]
    calls: list[FunctionCall]
    finish_reason: str  # Gemini's words: STOP or MAX_TOKENS
    prompt_tokens: int

    @property
    def output_tokens(self) -> int:
        if self.calls:
            return sum(c.tokens for c in self.calls)
        return len(self.pieces)


def _to_call(req: GenerateRequest) -> list[Declaration]:
    declared = list(req.declarations)
    if not declared or req.mode == "NONE":
        return []
    if req.mode in ("ANY", "VALIDATED"):
        allowed = [d for d in declared if req.allowed is None or d.name in req.allowed]
        return allowed[:2]
    # A prompt saying "use tools" stands in for a model deciding to; once the last
    # turn only carries function responses, it answers with text, as a model would.
    last = req.contents[-1]
    asks = last["role"] == "user" and any(isinstance(p.get("text"), str) for p in last["parts"])
    if asks and "use tools" in last_user_text(req.contents).lower():
        return declared[:2]
    return []


def compose(req: GenerateRequest, config: MockConfig, prompt_tokens: int) -> Answer:
    rng = answer_rng([{"role": "user", "content": last_user_text(req.contents)}], req.seed)
    wanted = _to_call(req)
    if wanted:
        calls = [FunctionCall(d.name, tool_input(dict(d.schema), rng)) for d in wanted]
        return Answer([], calls, "STOP", prompt_tokens)
    written = written_answer(
        rng,
        cap=config.max_tokens_default,
        max_tokens=req.max_output_tokens,
        stop=req.stop_sequences,
        schema=req.schema if req.json_mode else None,
        json_object=req.json_mode,
    )
    finish = "MAX_TOKENS" if written.ending == "length" else "STOP"
    return Answer(written.pieces, [], finish, prompt_tokens)
