"""Reading Mistral's answers: OpenAI's parsers, with Mistral's differences first.

What Mistral sends that OpenAI does not, and what is made of it:

* finish reasons `model_length` (the model's context ran out while answering:
  `length`, as `max_tokens` would be) and `error` (generation failed on Mistral's
  side: `ProviderUnavailable`, retryable, never a finished answer);
* usage on the last chunk, the one with the finish reason, without being asked;
* tool calls mostly whole, one chunk holding every call. Parallel calls may all
  say `index: 0` (the SDK's default), so a call bringing an id not seen before
  gets the next free index rather than being glued onto another call; the
  placeholder id `"null"` (the SDK's default too) on a continuation is no id;
* `content` as a list of chunks for reasoning models: `thinking` chunks are the
  model's scratch work and left out, `text` chunks are the answer;
* errors inside a 200 stream as Mistral's error object (`{"object":"error", …}`).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from contracts.errors import ProviderUnavailable
from providers.core.types import ChatResult, Secret, StreamEvent
from providers.mistral.errors import ERRORS
from providers.openai.parse import StreamState, parse_chat_response

__all__ = ["MistralStreamState", "parse_mistral_chat"]

_FINISH: Final[Mapping[str, str]] = {"model_length": "length"}
_FAILED: Final = "error"
_NO_ID: Final = ("", "null", None)


def _generation_failed(provider: str) -> ProviderUnavailable:
    return ProviderUnavailable(
        f"{provider}: the model failed while answering (finish_reason error)"
    )


def _answer_text(content: Any) -> Any:
    """A reasoning model's chunk list as its answer text (thinking left out)."""
    if not isinstance(content, list):
        return content
    return "".join(
        c.get("text") or "" for c in content if isinstance(c, dict) and c.get("type") == "text"
    )


def parse_mistral_chat(provider: str, payload: dict[str, Any]) -> ChatResult:
    """`ChatResult` from a chat completion body."""
    choices = payload.get("choices")
    for choice in choices if isinstance(choices, list) else ():
        if not isinstance(choice, dict):
            continue
        reason = choice.get("finish_reason")
        if reason == _FAILED and choice.get("index", 0) == 0:
            raise _generation_failed(provider)
        if isinstance(reason, str) and reason in _FINISH:
            choice["finish_reason"] = _FINISH[reason]
        message = choice.get("message")
        if isinstance(message, dict):
            for call in message.get("tool_calls") or ():
                if isinstance(call, dict) and call.get("id") in _NO_ID:
                    call.pop("id", None)  # OpenAI's parser mints `call_<n>` instead
    return parse_chat_response(provider, payload)


class MistralStreamState(StreamState):
    """OpenAI's stream state, told Mistral's finish reasons, errors and call layout."""

    __slots__ = ("_call_index", "_errors_secret", "_name", "_taken")

    def __init__(self, provider: str, secret: Secret) -> None:
        super().__init__(provider, secret)
        self._name = provider
        self._errors_secret = secret
        self._call_index: dict[str, int] = {}  # tool-call id → the index it was given
        self._taken: set[int] = set()

    def _chunk(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        if chunk.get("object") == "error" or ("message" in chunk and "choices" not in chunk):
            raise ERRORS.from_stream_payload(self._name, chunk, self._errors_secret)
        error = chunk.get("error")
        if error:
            raise ERRORS.from_stream_payload(self._name, error, self._errors_secret)
        return super()._chunk(chunk)

    def _choice(self, choice: dict[str, Any]) -> list[StreamEvent]:
        reason = choice.get("finish_reason")
        if reason == _FAILED:
            raise _generation_failed(self._name)
        if isinstance(reason, str) and reason in _FINISH:
            choice["finish_reason"] = _FINISH[reason]
        delta = choice.get("delta")
        if delta:
            content = delta.get("content")
            if isinstance(content, list):
                delta["content"] = _answer_text(content)
            calls = delta.get("tool_calls")
            if calls:
                for call in calls:
                    self._place(call)
        return super()._choice(choice)

    def _place(self, call: dict[str, Any]) -> None:
        """Give `call` the index its id has, or a free one for a new id."""
        call_id = call.get("id")
        if call_id in _NO_ID:
            call.pop("id", None)
            return  # a continuation: its own index says which call it continues
        index = self._call_index.get(call_id)
        if index is None:
            asked = call.get("index")
            index = asked if isinstance(asked, int) and asked not in self._taken else None
            if index is None:
                index = max(self._taken, default=-1) + 1
            self._call_index[call_id] = index
            self._taken.add(index)
        call["index"] = index
