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
    """`count` word tokens; every token but the first carries its leading space."""
    words = rng.choices(WORDS, k=count)
    return [words[0].capitalize(), *(" " + w for w in words[1:])] if words else []


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
