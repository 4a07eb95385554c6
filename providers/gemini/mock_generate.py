"""`generateContent` and `streamGenerateContent` for the mock, wherever they are mounted.

Gemini's mock mounts them under `/v1beta/models/{model}:…`; Vertex AI's mock under
its own project paths, with its own auth: nothing here knows either. A request is
read and checked (`mock_request`), its model looked up (`MockShared.knows_model`),
its prompt checked against `MockConfig.context_window`, charged to the presented
credential's budget (a 429 with `RetryInfo` when it does not fit), given its fault,
and answered (`mock_answer`) whole or as a stream.

The stream is what Google sends with `alt=sse`: `data: {GenerateContentResponse}`
events separated by CRLF CRLF, no end marker (the body's end is the stream's end),
one chunk per text piece or function call, each with cumulative `usageMetadata`,
the last one with the `finishReason` and the totals. Faults: an in-stream error is
`data: {"error":{…}}` and the end of the body; `filtered` answers 200 with
`promptFeedback.blockReason: SAFETY` and no candidates; `filtered-after:N` sends N
pieces, then a candidate with `finishReason: SAFETY` and its `safetyRatings`;
stalls and drops happen after N pieces. A non-streamed request given a stream-error
fault gets that error as its answer.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Callable, Mapping
from typing import Any, Final

import msgspec
from aiohttp import web

from providers.gemini.mock_answer import Answer, compose
from providers.gemini.mock_errors import (
    budget_wait,
    context_error,
    error_body,
    fault_error,
    model_not_found,
    rate_limit_error,
)
from providers.gemini.mock_request import json_object, parse_generate, prompt_words
from providers.mock.app import (
    Dropped,
    MockShared,
    Pacer,
    StreamCounter,
    delay_whole_response,
    interrupt,
    shared_state,
    stamp,
)
from providers.mock.faults import (
    ErrorFault,
    Fault,
    FilterFault,
    MockError,
    StreamErrorFault,
)

__all__ = ["charge", "generate_content", "presented_key", "safety_ratings"]

# Compact JSON as bytes; it runs once per streamed piece.
_encode: Final = msgspec.json.Encoder().encode
_SSE_HEADERS: Final = {"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
_CATEGORIES: Final = (
    "HARM_CATEGORY_SEXUALLY_EXPLICIT",
    "HARM_CATEGORY_HATE_SPEECH",
    "HARM_CATEGORY_HARASSMENT",
    "HARM_CATEGORY_DANGEROUS_CONTENT",
)
# The category the mock's filter blocks on.
_BLOCKED: Final = "HARM_CATEGORY_HARASSMENT"

NotFound = Callable[[str], MockError]


def presented_key(request: web.Request) -> str:
    """The credential a request presents: Gemini's API key, or a bearer token (Vertex)."""
    key = request.headers.get("x-goog-api-key", "").strip() or request.query.get("key", "")
    if key:
        return key.strip()
    scheme, _, token = request.headers.get("Authorization", "").partition(" ")
    return token.strip() if scheme.lower() == "bearer" else ""


def safety_ratings(blocked: bool) -> list[dict[str, Any]]:
    """Ratings for every category; with `blocked`, harassment is HIGH and blocked."""
    ratings: list[dict[str, Any]] = []
    for category in _CATEGORIES:
        rating: dict[str, Any] = {"category": category, "probability": "NEGLIGIBLE"}
        if blocked and category == _BLOCKED:
            rating = {"category": category, "probability": "HIGH", "blocked": True}
        ratings.append(rating)
    return ratings


def _usage(prompt: int, output: int) -> dict[str, Any]:
    usage: dict[str, Any] = {"promptTokenCount": prompt}
    if output:
        usage["candidatesTokenCount"] = output
    usage["totalTokenCount"] = prompt + output
    usage["promptTokensDetails"] = [{"modality": "TEXT", "tokenCount": prompt}]
    return usage


class _Writer:
    """`GenerateContentResponse` objects of one answer: whole or chunk by chunk."""

    __slots__ = ("_answer", "_model", "_response_id", "_stamp")

    def __init__(self, model: str, answer: Answer, stamp_tokens: bool) -> None:
        self._model = model
        self._answer = answer
        self._response_id = os.urandom(12).hex()
        self._stamp = stamp_tokens

    def response(
        self,
        parts: list[dict[str, Any]] | None,
        output: int,
        finish: str | None = None,
        *,
        ratings: bool = False,
    ) -> dict[str, Any]:
        candidate: dict[str, Any] = {}
        if parts is not None:
            candidate["content"] = {"parts": parts, "role": "model"}
        if finish is not None:
            candidate["finishReason"] = finish
        if ratings:
            candidate["safetyRatings"] = safety_ratings(blocked=True)
        candidate["index"] = 0
        return {
            "candidates": [candidate],
            "usageMetadata": _usage(self._answer.prompt_tokens, output),
            "modelVersion": self._model,
            "responseId": self._response_id,
        }

    def blocked_prompt(self) -> dict[str, Any]:
        return {
            "promptFeedback": {"blockReason": "SAFETY", "safetyRatings": safety_ratings(True)},
            "usageMetadata": _usage(self._answer.prompt_tokens, 0),
            "modelVersion": self._model,
            "responseId": self._response_id,
        }

    def text(self, piece: str) -> dict[str, Any]:
        return {"text": stamp() if self._stamp else piece}

    def steps(self) -> list[tuple[dict[str, Any], int]]:
        """Each chunk's part and the output tokens counted once it is sent."""
        answer = self._answer
        if answer.calls:
            steps, used = [], 0
            for call in answer.calls:
                used += call.tokens
                steps.append(({"functionCall": {"name": call.name, "args": call.args}}, used))
            return steps
        return [(self.text(p), i + 1) for i, p in enumerate(answer.pieces)]

    def whole(self, fault: Fault | None) -> dict[str, Any]:
        answer = self._answer
        if isinstance(fault, FilterFault):
            if fault.after is None:
                return self.blocked_prompt()
            kept = answer.pieces[: fault.after]
            parts = [self.joined(kept)] if kept else None
            return self.response(parts, len(kept), "SAFETY", ratings=True)
        # A whole answer's text is one part; each function call is one.
        calls = [part for part, _ in self.steps()] if answer.calls else None
        parts = calls or [self.joined(answer.pieces)]
        return self.response(parts, answer.output_tokens, answer.finish_reason)

    def joined(self, pieces: list[str]) -> dict[str, Any]:
        return {"text": "".join(stamp() for _ in pieces) if self._stamp else "".join(pieces)}


def _frame(payload: Mapping[str, Any]) -> bytes:
    return b"data: " + _encode(payload) + b"\r\n\r\n"


def charge(request: web.Request, state: MockShared, model: str, tokens: int) -> None:
    """Take one request of `tokens` from the credential's budget, or refuse it (429)."""
    if not state.limiter.enabled:
        return
    budget = state.limiter.take(presented_key(request), tokens)
    if not budget.allowed:
        limit = budget.limit_requests or budget.limit_tokens
        raise rate_limit_error(model, limit, budget_wait(budget.retry_after))


def _pick_fault(request: web.Request, state: MockShared, model: str, stream: bool) -> Fault | None:
    fault = state.pick_fault(request, model)
    if isinstance(fault, ErrorFault):
        raise fault_error(fault, model)
    if isinstance(fault, StreamErrorFault) and not stream:
        raise fault_error(fault.error, model)
    return fault


async def generate_content(
    request: web.Request,
    model: str,
    *,
    stream: bool,
    not_found: NotFound | None = None,
) -> web.StreamResponse:
    """Answer one `generateContent` (or, with `stream`, `streamGenerateContent`) call
    for `model`; `not_found` words the 404 for an unknown model (Gemini's by default)."""
    state = shared_state(request)
    req = parse_generate(await json_object(request))
    if not state.knows_model(model):
        raise (not_found or model_not_found)(model)
    prompt = prompt_words(req)
    window = state.config.context_window
    if prompt > window:
        raise context_error(prompt, window)
    answer = compose(req, state.config, prompt)
    charge(request, state, model, prompt + answer.output_tokens)
    fault = _pick_fault(request, state, model, stream)
    writer = _Writer(model, answer, state.config.stamp_tokens)
    if stream:
        return await _stream(request, state, writer, answer, fault)
    body = writer.whole(fault)
    try:
        await delay_whole_response(request, state.config, fault, answer.output_tokens)
    except Dropped:
        return web.Response()  # never sent: the transport is gone
    return web.Response(body=_encode(body), content_type="application/json", charset="UTF-8")


async def _stream(
    request: web.Request,
    state: MockShared,
    writer: _Writer,
    answer: Answer,
    fault: Fault | None,
) -> web.StreamResponse:
    resp = web.StreamResponse(headers=_SSE_HEADERS)
    await resp.prepare(request)
    with StreamCounter(state.stats):
        if isinstance(fault, FilterFault) and fault.after is None:
            await resp.write(_frame(writer.blocked_prompt()))
            return resp
        steps = writer.steps()
        if not steps:
            steps = [({"text": ""}, 0)]  # an answer cut to nothing still says why it ended
        total = len(steps)
        config = state.config
        pacer = Pacer(config.tokens_per_sec)
        if config.ttft_ms:
            await asyncio.sleep(config.ttft_ms / 1000)
        for index, (part, used) in enumerate(steps):
            if await _interrupted(request, resp, writer, fault, index, total):
                return resp
            await pacer.wait()
            last = index == total - 1
            finish = answer.finish_reason if last else None
            await resp.write(_frame(writer.response([part], used, finish)))
        # A fault due after the last piece (an error, stall or drop past the end) still applies.
        await _interrupted(request, resp, writer, fault, total, total)
    return resp


async def _interrupted(
    request: web.Request,
    resp: web.StreamResponse,
    writer: _Writer,
    fault: Fault | None,
    index: int,
    total: int,
) -> bool:
    """Apply the fault due once `index` pieces are out; True when it ended the stream."""
    if fault is None:
        return False
    if isinstance(fault, StreamErrorFault) and index == min(fault.after, total):
        await resp.write(_frame(error_body(fault_error(fault.error, None))))
        return True
    if isinstance(fault, FilterFault) and index == fault.after:
        await resp.write(_frame(writer.response(None, index, "SAFETY", ratings=True)))
        return True
    await interrupt(request, fault, index, total)
    return False
