"""The fleet's chat request as a Replicate prediction, and a finished prediction as a result.

Replicate has no chat schema: each model takes its own `input`. Language models
there agree on a handful of fields, which is what is sent:

* `prompt`: a single user message as it is; a longer conversation as a transcript,
  one turn per paragraph, each led by its speaker (`User: …`, `Assistant: …`),
  turns separated by a blank line. The model's own prompt template wraps it.
* `system_prompt`: the system and developer messages, joined by blank lines.
* `max_tokens` (some older models call it `max_new_tokens`; which one a model
  takes is only in its version's OpenAPI schema, one more request per job, so
  `max_tokens` is sent, the name the current language models use), `temperature`,
  `top_p`, `presence_penalty`, `frequency_penalty`, `seed`, `reasoning_effort`
  (taken by the reasoning models Replicate hosts), and `stop` as `stop_sequences`,
  one comma-separated string (a stop sequence holding a comma cannot be said).

Refused with `BadRequest`, since they would change the answer and cannot be said:
tools and tool turns, images, `response_format` JSON modes, `top_logprobs`. Not
sent, as they do not change the answer: `user`, `metadata`, `service_tier`.

Answers: `output` is a list of strings (joined) or a string. Replicate reports no
finish reason; an answer whose `output_token_count` reaches the `max_tokens` asked
for is taken as cut (`length`), any other as `stop`. Usage comes from
`metrics.input_token_count` / `output_token_count`; a model that does not count
tokens reports none, and the usage says 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from contracts.errors import BadRequest
from contracts.frames import Usage
from contracts.jobs import Message
from providers.core.types import ChatRequest, ChatResult

__all__ = [
    "Target",
    "finish_reason",
    "output_text",
    "prediction_input",
    "render_prompt",
    "result_of",
    "target_of",
    "usage_of",
]

# Owner, model and version names: letters, digits, `.`, `_`, `-` (never `.`/`..`
# alone), so a model name cannot reach another path of the API.
_SEGMENT: Final = re.compile(r"[A-Za-z0-9._-]+")
_SPEAKER: Final[Mapping[str, str]] = {"user": "User", "assistant": "Assistant"}
_SAME_NAME: Final = (
    "temperature",
    "top_p",
    "presence_penalty",
    "frequency_penalty",
    "seed",
    "reasoning_effort",
)


@dataclass(frozen=True, slots=True)
class Target:
    """Where a model's predictions are created: an official model's own route, or
    `/predictions` with the version id in the body."""

    path: str
    version: str | None = None


def target_of(provider: str, model: str) -> Target:
    """`owner/name` → the model's route; `owner/name:version` or a bare version id →
    `/predictions` with that version."""
    name, colon, version = model.partition(":")
    if colon and not _is_segment(version):
        raise BadRequest(f"{provider}: {model!r} is not a valid model version")
    if "/" not in name:
        if colon or not _is_segment(name):
            raise _bad_model(provider, model)
        return Target("/predictions", name)
    owner, _, model_name = name.partition("/")
    if not (_is_segment(owner) and _is_segment(model_name)):
        raise _bad_model(provider, model)
    if colon:
        return Target("/predictions", version)
    return Target(f"/models/{owner}/{model_name}/predictions")


def _bad_model(provider: str, model: str) -> BadRequest:
    return BadRequest(
        f"{provider}: {model!r} is not owner/name, owner/name:version or a version id"
    )


def _is_segment(text: str) -> bool:
    return bool(_SEGMENT.fullmatch(text)) and text not in (".", "..")


def prediction_input(provider: str, req: ChatRequest) -> dict[str, Any]:
    """The prediction's `input` for a chat request (see the module docstring)."""
    if req.tools:
        raise BadRequest(f"{provider}: Replicate models take no tools")
    system = [m.text() for m in req.messages if m.role in ("system", "developer")]
    out: dict[str, Any] = {"prompt": render_prompt(provider, req.messages)}
    system = [s for s in system if s]
    if system:
        out["system_prompt"] = "\n\n".join(system)
    options = req.options
    fmt = options.response_format
    if fmt is not None and fmt.get("type", "text") != "text":
        raise BadRequest(f"{provider}: Replicate models have no JSON output mode")
    if options.top_logprobs:
        raise BadRequest(f"{provider}: Replicate models do not return log probabilities")
    if options.max_tokens is not None:
        out["max_tokens"] = options.max_tokens
    for name in _SAME_NAME:
        value = getattr(options, name)
        if value is not None:
            out[name] = value
    stops = [s for s in options.stop or () if s]
    if stops:
        if any("," in s for s in stops):
            raise BadRequest(
                f"{provider}: stop sequences travel as one comma-separated string;"
                " one holding a comma cannot be sent"
            )
        out["stop_sequences"] = ",".join(stops)
    return out


def render_prompt(provider: str, messages: list[Message]) -> str:
    """A lone user message as it is; a conversation as a `User:`/`Assistant:` transcript."""
    turns: list[tuple[str, str]] = []
    for i, msg in enumerate(messages):
        if msg.role in ("system", "developer"):
            continue
        if msg.role == "tool" or msg.tool_calls:
            raise BadRequest(f"{provider}: messages[{i}]: Replicate models take no tool turns")
        if isinstance(msg.content, list) and any(p.type != "text" for p in msg.content):
            raise BadRequest(f"{provider}: messages[{i}]: only text is sent to Replicate models")
        turns.append((msg.role, msg.text()))
    if len(turns) == 1 and turns[0][0] == "user":
        return turns[0][1]
    return "\n\n".join(f"{_SPEAKER[role]}: {text}" for role, text in turns)


def output_text(provider: str, output: Any) -> str:
    """A language model's `output`: a list of string pieces, or one string."""
    if output is None:
        return ""
    if isinstance(output, str):
        return output
    if isinstance(output, list) and all(isinstance(piece, str) for piece in output):
        return "".join(output)
    raise BadRequest(f"{provider}: the model's output is not text ({type(output).__name__})")


def usage_of(metrics: Any) -> Usage:
    """Token counts from `metrics`; absent ones are 0 (the model did not count them)."""
    metrics = metrics if isinstance(metrics, dict) else {}
    input_tokens = _count(metrics.get("input_token_count"))
    output_tokens = _count(metrics.get("output_token_count"))
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
    )


def _count(value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return 0
    return max(int(value), 0)


def finish_reason(max_tokens: int | None, usage: Usage) -> str:
    """`length` when the answer used every token allowed, else `stop`."""
    if max_tokens is not None and usage.output_tokens >= max_tokens:
        return "length"
    return "stop"


def result_of(provider: str, prediction: Mapping[str, Any], max_tokens: int | None) -> ChatResult:
    """A `succeeded` prediction as the fleet's chat result."""
    usage = usage_of(prediction.get("metrics"))
    text = output_text(provider, prediction.get("output"))
    return ChatResult(
        message=Message(role="assistant", content=text),
        finish_reason=finish_reason(max_tokens, usage),
        usage=usage,
    )
