"""Reading `generateContent` answers, whole or streamed (Gemini and Vertex AI alike).

Conventions (the same for both paths, so a streamed answer and a whole one agree):

* Text is the candidate's `text` parts; `thought: true` parts are the model's
  thinking, not its answer, and are skipped.
* Function calls arrive whole (one part each, arguments as an object). Gemini may
  send no `id`: such a call gets `call_<n>`, n counting the answer's calls from 0,
  and its own `ToolCallDelta` index. `mapping` never sends those ids back.
* Finish reasons in the fleet's words: `STOP` is "stop", or "tool_calls" when the
  answer called functions; `MAX_TOKENS` is "length"; the safety, blocklist,
  recitation and PII reasons raise `ContentFiltered` naming the reason and the
  blocked (or high-probability) harm categories, as does a prompt blocked before
  any candidate (`promptFeedback.blockReason`); `MALFORMED_FUNCTION_CALL` raises
  `InternalError`; any other reason is passed on lower-cased.
* Usage, from the last `usageMetadata` (streamed chunks repeat cumulative counts):
  `input_tokens` = `promptTokenCount` (which includes `cachedContentTokenCount`)
  + `toolUsePromptTokenCount`; `output_tokens` = `candidatesTokenCount` +
  `thoughtsTokenCount` (thinking is billed as output); `total_tokens` their sum
  (what `totalTokenCount` says); `cached_input_tokens` = `cachedContentTokenCount`;
  `reasoning_tokens` = `thoughtsTokenCount`; the optional ones None when absent.
* A stream has no end marker: the body's end ends it. One that ends before any
  `finishReason` was cut, and `GenerateStream.end` raises `ProviderUnavailable`.
  An error object inside the stream raises its `FleetError` (see `errors`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

import msgspec

from contracts.errors import ContentFiltered, FleetError, InternalError, ProviderUnavailable
from contracts.frames import ToolCallDelta, Usage
from contracts.jobs import Message, ToolCall
from providers.core.sse import ServerSentEvent
from providers.core.types import (
    ChatResult,
    Secret,
    StreamEnd,
    StreamEvent,
    TextDelta,
    ToolDelta,
)
from providers.gemini.errors import ERRORS

__all__ = [
    "FILTERED_REASONS",
    "GenerateStream",
    "finish_reason",
    "parse_generate_response",
    "usage_of",
]

# Finish reasons that mean a filter withheld (the rest of) the answer.
FILTERED_REASONS: Final = frozenset(
    {
        "SAFETY",
        "RECITATION",
        "BLOCKLIST",
        "PROHIBITED_CONTENT",
        "SPII",
        "IMAGE_SAFETY",
        "IMAGE_PROHIBITED_CONTENT",
        "IMAGE_RECITATION",
        "MODEL_ARMOR",
    }
)
_FINISH: Final[Mapping[str, str]] = {"STOP": "stop", "MAX_TOKENS": "length"}
_MALFORMED: Final = "MALFORMED_FUNCTION_CALL"
_FLAGGED: Final = frozenset({"HIGH"})

# Once per streamed chunk: msgspec builds the same dicts in a third of json.loads' time.
_decode_chunk = msgspec.json.Decoder().decode


def _count(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def usage_of(raw: Any) -> Usage:
    """`Usage` from a `usageMetadata` object (see the module docstring)."""
    if not isinstance(raw, Mapping):
        return Usage()
    thoughts = _count(raw.get("thoughtsTokenCount"))
    prompt = (_count(raw.get("promptTokenCount")) or 0) + (
        _count(raw.get("toolUsePromptTokenCount")) or 0
    )
    output = (_count(raw.get("candidatesTokenCount")) or 0) + (thoughts or 0)
    return Usage(
        input_tokens=prompt,
        output_tokens=output,
        total_tokens=prompt + output,
        cached_input_tokens=_count(raw.get("cachedContentTokenCount")),
        reasoning_tokens=thoughts,
    )


def _flagged_categories(ratings: Any) -> list[str]:
    if not isinstance(ratings, list):
        return []
    return [
        str(r.get("category"))
        for r in ratings
        if isinstance(r, Mapping) and (r.get("blocked") is True or r.get("probability") in _FLAGGED)
    ]


def _filtered(provider: str, what: str, reason: str, ratings: Any, note: Any = None) -> FleetError:
    categories = _flagged_categories(ratings)
    detail = f"{reason}" + (f"; {', '.join(categories)}" if categories else "")
    extra = f": {note}" if isinstance(note, str) and note else ""
    return ContentFiltered(f"{provider}: {what} was blocked by the provider ({detail}){extra}")


def _blocked_prompt(provider: str, feedback: Any) -> FleetError | None:
    if not isinstance(feedback, Mapping) or not feedback.get("blockReason"):
        return None
    return _filtered(
        provider,
        "the prompt",
        str(feedback["blockReason"]),
        feedback.get("safetyRatings"),
        feedback.get("blockReasonMessage"),
    )


def finish_reason(provider: str, candidate: Mapping[str, Any], *, called: bool) -> str | None:
    """The fleet's finish reason for a candidate's `finishReason` (None if it has
    none yet); raises for the reasons that are failures."""
    reason = candidate.get("finishReason")
    if not isinstance(reason, str) or not reason:
        return None
    if reason in FILTERED_REASONS:
        raise _filtered(
            provider,
            "the answer",
            reason,
            candidate.get("safetyRatings"),
            candidate.get("finishMessage"),
        )
    if reason == _MALFORMED:
        note = candidate.get("finishMessage")
        raise InternalError(
            f"{provider}: the model produced a malformed function call "
            f"(finishReason {reason})" + (f": {note}" if isinstance(note, str) and note else "")
        )
    if reason == "STOP" and called:
        return "tool_calls"
    return _FINISH.get(reason, reason.lower())


def _first_candidate(candidates: Any) -> Mapping[str, Any] | None:
    """Candidate 0 by its `index` (absent means 0); others (`candidateCount` > 1)
    are not the fleet's answer."""
    if not isinstance(candidates, list):
        return None
    listed = [c for c in candidates if isinstance(c, Mapping)]
    return next((c for c in listed if c.get("index", 0) == 0), None)


def _parts(candidate: Mapping[str, Any]) -> list[Any]:
    content = candidate.get("content")
    parts = content.get("parts") if isinstance(content, Mapping) else None
    return parts if isinstance(parts, list) else []


def _call_id(raw: Mapping[str, Any], index: int) -> str:
    given = raw.get("id")
    return given if isinstance(given, str) and given else f"call_{index}"


def _arguments(args: Any) -> str:
    return json.dumps(args if args is not None else {}, ensure_ascii=False, separators=(",", ":"))


def parse_generate_response(
    provider: str, payload: Mapping[str, Any], secret: Secret
) -> ChatResult:
    """`ChatResult` from a whole `generateContent` answer."""
    if payload.get("error"):  # an error behind a 200, as some proxies send
        raise ERRORS.from_payload(provider, payload, secret, context="error body")
    candidate = _first_candidate(payload.get("candidates"))
    if candidate is None:
        blocked = _blocked_prompt(provider, payload.get("promptFeedback"))
        raise blocked or InternalError(f"{provider}: response has no candidates")
    texts: list[str] = []
    calls: list[ToolCall] = []
    try:
        for part in _parts(candidate):
            if not isinstance(part, Mapping) or part.get("thought") is True:
                continue
            text = part.get("text")
            if isinstance(text, str):
                texts.append(text)
            call = part.get("functionCall")
            if isinstance(call, Mapping):
                calls.append(
                    ToolCall(
                        id=_call_id(call, len(calls)),
                        name=str(call.get("name") or ""),
                        arguments=_arguments(call.get("args")),
                    )
                )
    except (TypeError, ValueError):
        raise InternalError(f"{provider}: malformed generateContent answer") from None
    reason = finish_reason(provider, candidate, called=bool(calls))
    text = "".join(texts)
    message = Message(
        role="assistant",
        content=text if text or not calls else None,
        tool_calls=calls or None,
    )
    return ChatResult(
        message=message, finish_reason=reason, usage=usage_of(payload.get("usageMetadata"))
    )


class GenerateStream:
    """One `streamGenerateContent?alt=sse` stream's reading (a `StreamParser`)."""

    __slots__ = ("_calls", "_provider", "_secret", "_usage", "done", "finish_reason")

    def __init__(self, provider: str, secret: Secret) -> None:
        self._provider = provider
        self._secret = secret
        self._calls = 0
        self._usage: Any = None
        # Google sends no end marker: the body's end is the stream's end.
        self.done = False
        self.finish_reason: str | None = None

    def feed(self, sse: ServerSentEvent) -> list[StreamEvent]:
        try:
            chunk = _decode_chunk(sse.data)
        except msgspec.DecodeError:
            raise ProviderUnavailable(f"{self._provider}: malformed stream event") from None
        if isinstance(chunk, list):  # the array form a proxy may send; its items are chunks
            return [event for item in chunk for event in self._chunk(item)]
        return self._chunk(chunk)

    def _chunk(self, chunk: Any) -> list[StreamEvent]:
        if not isinstance(chunk, dict):
            raise ProviderUnavailable(f"{self._provider}: malformed stream event")
        if chunk.get("error"):
            raise ERRORS.from_payload(self._provider, chunk, self._secret)
        usage = chunk.get("usageMetadata")
        if usage:
            self._usage = usage
        candidate = _first_candidate(chunk.get("candidates"))
        if candidate is None:
            blocked = _blocked_prompt(self._provider, chunk.get("promptFeedback"))
            if blocked is not None:
                raise blocked
            return []  # a usage-only chunk, or another candidate's
        try:
            events = self._parts(_parts(candidate))
        except (AttributeError, TypeError, ValueError):
            raise ProviderUnavailable(f"{self._provider}: malformed stream event") from None
        reason = finish_reason(self._provider, candidate, called=self._calls > 0)
        if reason is not None:
            self.finish_reason = reason
        return events

    def _parts(self, parts: list[Any]) -> list[StreamEvent]:
        events: list[StreamEvent] = []
        for part in parts:
            if part.get("thought") is True:
                continue
            text = part.get("text")
            if text:
                events.append(TextDelta(text))
            call = part.get("functionCall")
            if call is not None:
                index = self._calls
                self._calls += 1
                delta = ToolCallDelta(
                    index=index,
                    id=_call_id(call, index),
                    name=str(call.get("name") or ""),
                    arguments=_arguments(call.get("args")),
                )
                events.append(ToolDelta(delta))
        return events

    def end(self) -> StreamEnd:
        if self.finish_reason is None:
            raise ProviderUnavailable(f"{self._provider}: stream ended without a finish reason")
        return StreamEnd(finish_reason=self.finish_reason, usage=usage_of(self._usage))
