"""Reading Azure's answers: OpenAI's parsers, with Azure's content filter in words.

Azure adds filter verdicts to OpenAI's shapes: `prompt_filter_results` on the
body (and on a first stream chunk of its own, with `choices: []` and empty id
and model), `content_filter_results` on every choice, and in asynchronous
filter mode annotation chunks with `content_filter_offsets` and no delta.
OpenAI's parsers take all of these in stride; what is Azure's here is saying
which categories stopped an answer, and reading in-stream errors with Azure's
error table.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from providers.azure.errors import ERRORS, answer_filtered, filtered_categories
from providers.core.types import ChatResult, Secret, StreamEvent
from providers.openai.parse import StreamState, parse_chat_response

__all__ = ["AzureStreamState", "parse_azure_chat"]

_FILTERED: Final = "content_filter"


def parse_azure_chat(provider: str, payload: Mapping[str, Any]) -> ChatResult:
    """`ChatResult` from a chat completion body; a filtered answer is raised."""
    choices = payload.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if isinstance(choice, dict) and choice.get("index", 0) == 0:
            if choice.get("finish_reason") == _FILTERED:
                raise answer_filtered(provider, choice.get("content_filter_results"))
            break
    return parse_chat_response(provider, payload)


class AzureStreamState(StreamState):
    """OpenAI's stream state, remembering choice 0's latest filter verdict.

    The chunk that finishes with `content_filter` usually carries the verdict; in
    asynchronous filter mode it may have come in an annotation chunk before.
    """

    __slots__ = ("_name", "_scrub", "_verdict")

    def __init__(self, provider: str, secret: Secret) -> None:
        super().__init__(provider, secret)
        self._name = provider
        self._scrub = secret
        self._verdict: Any = None

    def _chunk(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        error = chunk.get("error")
        if error:
            raise ERRORS.from_payload(self._name, error, self._scrub)
        return super()._chunk(chunk)

    def _choice(self, choice: dict[str, Any]) -> list[StreamEvent]:
        verdict = choice.get("content_filter_results")
        if choice.get("finish_reason") == _FILTERED:
            named = verdict if filtered_categories(verdict) else self._verdict
            raise answer_filtered(self._name, named)
        if verdict:
            self._verdict = verdict
        return super()._choice(choice)
