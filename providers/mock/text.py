"""Deterministic answer text and embeddings derived from request content.

Everything here is a pure function of its inputs (no process-wide state beyond a
cache), so two mock processes, or two runs, give byte-identical answers.
"""

from __future__ import annotations

import hashlib
import math
import random
import sys
from array import array
from collections.abc import Mapping, Sequence
from functools import lru_cache
from typing import Any, Final

_WORD_TEXT: Final = """
    the a an and or but so if then when while because about above across after
    again against along among around before behind below beside between beyond
    during inside near over past since through under until upon within without
    time year people way day man woman child world life hand part place case
    week company system program question work government number night point home
    water room mother area money story fact month lot right study book eye job
    word business issue side kind head house service friend father power hour
    game line end member law car city community name president team minute idea
    body information back parent face others level office door health person art
    war history party result change morning reason research girl guy moment air
    teacher force education garden river mountain window table chair paper light
    green blue red small large early late quick slow warm cold bright quiet
    happy simple clear strong gentle careful honest modern ancient open close
    find give tell ask seem feel try leave call keep begin help show hear play
    run move live believe bring happen write provide sit stand lose pay meet
    include continue set learn lead understand watch follow stop create speak
    read allow add spend grow offer remember love consider appear buy wait serve
    die send expect build stay fall cut reach kill remain suggest raise pass sell
"""
WORDS: Final[tuple[str, ...]] = tuple(_WORD_TEXT.split())

# Answers are built from whole sentences so a demo or a load test shows readable
# text; which sentences, and in what order, is fixed by the prompt.
_SENTENCES: Final[tuple[str, ...]] = (
    "A message queue lets producers hand work off without waiting for it to finish.",
    "Workers pull jobs at their own pace,"
    " so a burst of requests becomes a backlog instead of an outage.",
    "If a worker dies halfway through, the broker gives the job to another one.",
    "Acknowledging a job only after its answer is safely published means nothing is lost.",
    "Retries with backoff absorb the rate limits and brief failures every provider has.",
    "Keeping provider keys encrypted until the moment of the call limits what a leak can expose.",
    "Streaming tokens back as they arrive keeps the first words quick even for long answers.",
    "Adding capacity is as simple as starting more workers against the same queues.",
    "Dead-letter queues keep the jobs that can never succeed where an operator can inspect them.",
    "Batching small replies together keeps the broker's message rate low under load.",
    "Deadlines let the fleet skip work nobody is waiting for any more.",
    "Fallback providers turn one vendor's bad afternoon into a slightly slower answer.",
    "Metrics on time to first token and tokens per second show where latency comes from.",
    "Because the queue is durable, a restart of any single component loses no work.",
    "Producers stay simple: publish a job, then read the frames that come back.",
    "Backfills can run at full speed on their own queue without slowing interactive chat.",
)

_LITTLE_ENDIAN: Final = sys.byteorder == "little"


def content_text(content: object) -> str:
    """Text of a message `content`: a string, or a list of `{type:"text", text}` parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        parts = [p.get("text") for p in content if isinstance(p, dict)]
        return " ".join(p for p in parts if isinstance(p, str))
    return ""


def last_user_text(messages: Sequence[Any]) -> str:
    for message in reversed(messages):
        if isinstance(message, Mapping) and message.get("role") == "user":
            return content_text(message.get("content"))
    return ""


def prompt_token_count(messages: Sequence[Any]) -> int:
    """Words across all messages: a stable stand-in for a tokenizer's count."""
    words = sum(
        len(content_text(m.get("content")).split()) for m in messages if isinstance(m, Mapping)
    )
    return max(words, 1)


def answer_rng(messages: Sequence[Any], seed: int | None) -> random.Random:
    """An RNG fixed by the last user message (and the request seed), nothing else."""
    key = f"{seed}\x00{last_user_text(messages)}".encode()
    return random.Random(int.from_bytes(hashlib.blake2b(key, digest_size=8).digest(), "big"))


def answer_tokens(rng: random.Random, count: int) -> list[str]:
    """`count` word tokens from whole sentences; every token but the first has its space."""
    order = list(_SENTENCES)
    rng.shuffle(order)
    words: list[str] = []
    while len(words) < count:
        for sentence in order:
            words.extend(sentence.split())
            if len(words) >= count:
                break
    words = words[:count]
    return [words[0], *(" " + w for w in words[1:])] if words else []


@lru_cache(maxsize=1024)
def embedding_bytes(text: str, dims: int) -> bytes:
    """Unit-norm little-endian float32 vector of `dims` values, derived from `text`.

    SHAKE output for a shorter length is a prefix of the longer one, so a smaller
    `dimensions` is the truncated-then-renormalised full vector, as with OpenAI's
    text-embedding-3 models.
    """
    raw = array("h")
    raw.frombytes(hashlib.shake_256(text.encode()).digest(2 * dims))
    if not _LITTLE_ENDIAN:
        raw.byteswap()
    norm = math.sqrt(math.fsum(v * v for v in raw)) or 1.0
    vector = array("f", [v / norm for v in raw])
    if not _LITTLE_ENDIAN:
        vector.byteswap()
    return vector.tobytes()


def embedding_floats(text: str, dims: int) -> list[float]:
    """The same vector as `embedding_bytes`, as Python floats holding exact float32 values."""
    vector = array("f")
    vector.frombytes(embedding_bytes(text, dims))
    if not _LITTLE_ENDIAN:
        vector.byteswap()
    return vector.tolist()
