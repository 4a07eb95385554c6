"""The mock's predictions: what a create asks for, and each prediction's life in time.

A prediction's answer is fixed when it is created (the shared text engine, cut by
`max_tokens`/`max_new_tokens` and `stop_sequences`); when each piece of it exists
follows `MockConfig`: `ttft_ms` after the create the model starts (`starting` →
`processing`) and writes its first token, then one token every
`1/tokens_per_sec`. Status, partial `output`, `metrics` and timestamps are read
off that timeline whenever the prediction is looked at, so a poll, a stream and a
`Prefer: wait` create all see the same prediction. A cancel freezes it where it
is; a failure fault ends it `failed` after its token count.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter, OrderedDict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final

from providers.mock.config import MockConfig
from providers.mock.faults import Fault, MockError
from providers.mock.text import answer_rng, prompt_token_count
from providers.mock.written import written_answer
from providers.replicate.mock_errors import invalid_input

__all__ = [
    "MockPrediction",
    "ModelInput",
    "PredictionStore",
    "answer_pieces",
    "clock",
    "parse_input",
]

# Predictions kept for later reads; the oldest go first (a load test makes millions).
_KEPT: Final = 10_000
_NUMBERS: Final = ("temperature", "top_p", "presence_penalty", "frequency_penalty")
_INTEGERS: Final = ("max_tokens", "max_new_tokens", "seed", "top_k", "min_tokens")
_STRINGS: Final = ("system_prompt", "stop_sequences", "prompt_template")


@dataclass(frozen=True, slots=True)
class ModelInput:
    """The inputs the mock's language model reads (others are ignored, as cog does)."""

    raw: dict[str, Any]
    prompt: str
    system_prompt: str
    max_tokens: int | None
    stops: tuple[str, ...]
    seed: int | None

    @property
    def prompt_tokens(self) -> int:
        texts = [{"content": self.system_prompt}, {"content": self.prompt}]
        return prompt_token_count(texts)


def parse_input(value: Any) -> ModelInput:
    """`input` checked as a language model's schema would, or a 422 naming the field."""
    if not isinstance(value, dict):
        raise invalid_input("input", "Input is required and must be an object")
    prompt = value.get("prompt")
    if not isinstance(prompt, str):
        raise invalid_input("prompt", "prompt is required and must be a string")
    for name in _NUMBERS:
        item = value.get(name)
        if item is not None and (isinstance(item, bool) or not isinstance(item, int | float)):
            raise invalid_input(name, "Invalid type. Expected: number")
    for name in _INTEGERS:
        item = value.get(name)
        if item is not None and (isinstance(item, bool) or not isinstance(item, int)):
            raise invalid_input(name, "Invalid type. Expected: integer")
    for name in _STRINGS:
        item = value.get(name)
        if item is not None and not isinstance(item, str):
            raise invalid_input(name, "Invalid type. Expected: string")
    limit = value.get("max_tokens", value.get("max_new_tokens"))
    if limit is not None and limit < 1:
        raise invalid_input("max_tokens", "Must be greater than or equal to 1")
    stops = tuple(s for s in (value.get("stop_sequences") or "").split(",") if s)
    return ModelInput(
        raw=value,
        prompt=prompt,
        system_prompt=value.get("system_prompt") or "",
        max_tokens=limit,
        stops=stops,
        seed=value.get("seed"),
    )


def answer_pieces(model_input: ModelInput, config: MockConfig) -> list[str]:
    """The answer, one piece per token: the text engine's, cut short by the limit
    and at the first stop sequence."""
    rng = answer_rng([{"role": "user", "content": model_input.prompt}], model_input.seed)
    return written_answer(
        rng,
        cap=config.max_tokens_default,
        max_tokens=model_input.max_tokens,
        stop=model_input.stops,
    ).pieces


def _iso(wall: float) -> str:
    return datetime.fromtimestamp(wall, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


@dataclass(slots=True)
class MockPrediction:
    """One prediction and its timeline (loop-clock seconds; see the module docstring)."""

    id: str
    model: str
    version: str
    key: str  # the API token that created it: nobody else sees it
    model_input: ModelInput
    pieces: list[str]
    stream: bool
    base_url: str
    created: float
    created_wall: float
    ttft: float
    interval: float  # seconds between two tokens
    fail_after: int | None = None  # a failure fault: tokens written before it
    error: str | None = None
    error_event: dict[str, Any] = field(default_factory=dict)
    canceled_at: float | None = None
    interruption: Fault | None = None  # a stall or drop fault for its stream

    def ready_at(self, index: int) -> float:
        """When token `index` exists (the first at `ttft`)."""
        return self.created + self.ttft + index * self.interval

    @property
    def ends_at(self) -> float:
        """When the prediction finishes: its last token, or the failure."""
        last = self.fail_after if self.fail_after is not None else len(self.pieces)
        return self.ready_at(max(last - 1, 0))

    def written(self, now: float) -> int:
        """Tokens written by `now`."""
        now = min(now, self.canceled_at) if self.canceled_at is not None else now
        limit = self.fail_after if self.fail_after is not None else len(self.pieces)
        if now < self.created + self.ttft:
            return 0
        if not self.interval:
            return limit
        return min(limit, int((now - self.created - self.ttft) / self.interval) + 1)

    def status(self, now: float) -> str:
        if self.canceled_at is not None:
            return "canceled"
        if now >= self.ends_at:
            return "failed" if self.fail_after is not None else "succeeded"
        return "processing" if now >= self.created + self.ttft else "starting"

    def cancel(self, now: float) -> None:
        if self.status(now) in ("starting", "processing"):
            self.canceled_at = now

    def urls(self) -> dict[str, str]:
        get = f"{self.base_url}/predictions/{self.id}"
        return {
            "get": get,
            "cancel": f"{get}/cancel",
            "stream": f"{get}/stream",
            "web": f"https://replicate.com/p/{self.id}",
        }

    def as_json(self, now: float, *, status: str | None = None) -> dict[str, Any]:
        """The prediction object as the API shows it at `now` (`status` forces one,
        with no output yet: a `Prefer: wait` that ran out answers `starting`)."""
        actual = self.status(now)
        shown = status or actual
        written = self.written(now) if status is None else 0
        ended = shown in ("succeeded", "failed", "canceled")
        started = now >= self.created + self.ttft and shown != "starting"
        finished_at = self.canceled_at if self.canceled_at is not None else self.ends_at
        return {
            "id": self.id,
            "model": self.model,
            "version": self.version,
            "input": self.model_input.raw,
            "logs": "",
            "output": self.pieces[:written] if started else None,
            "data_removed": False,
            "error": self.error if shown == "failed" else None,
            "status": shown,
            "source": "api",
            "created_at": _iso(self.created_wall),
            "started_at": _iso(self.created_wall + self.ttft) if started else None,
            "completed_at": (
                _iso(self.created_wall + finished_at - self.created) if ended else None
            ),
            "urls": self.urls(),
            "metrics": self._metrics(written, finished_at) if ended else {},
        }

    def _metrics(self, written: int, finished_at: float) -> dict[str, Any]:
        predict = max(finished_at - self.created - self.ttft, 0.0)
        metrics: dict[str, Any] = {
            "predict_time": round(predict, 6),
            "total_time": round(max(finished_at - self.created, 0.0), 6),
            "input_token_count": self.model_input.prompt_tokens,
            "output_token_count": written,
        }
        if written:
            metrics["time_to_first_token"] = round(self.ttft, 6)
            if predict:
                metrics["tokens_per_second"] = round(written / predict, 3)
        return metrics


class PredictionStore:
    """Predictions by id (the newest `_KEPT`), and how many cancels stopped one."""

    def __init__(self) -> None:
        self._predictions: OrderedDict[str, MockPrediction] = OrderedDict()
        self.cancels = 0

    def add(self, prediction: MockPrediction) -> None:
        self._predictions[prediction.id] = prediction
        while len(self._predictions) > _KEPT:
            self._predictions.popitem(last=False)

    def statuses(self, now: float) -> dict[str, int]:
        """How many kept predictions are in each status at `now`."""
        return dict(Counter(p.status(now) for p in self._predictions.values()))

    def find(self, prediction_id: str, key: str) -> MockPrediction:
        prediction = self._predictions.get(prediction_id)
        if prediction is None or prediction.key != key:
            raise MockError(404, "The requested resource could not be found.", "Not found")
        return prediction


def clock() -> tuple[float, float]:
    """The loop clock (timelines) and the wall clock (timestamps), read together."""
    return asyncio.get_running_loop().time(), time.time()
