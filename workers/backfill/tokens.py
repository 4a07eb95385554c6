"""How many tokens a text is, before any provider has counted it.

A backfill must size jobs to a provider's token caps and pace them to a
tokens/min budget before it knows the provider's tokenizer, and it must not pull
in a tokenizer (and its vocabulary files) per provider to do so. So the estimate
is a cheap heuristic, corrected by what providers report.

The heuristic is `max(bytes / 4, pieces)`, at least 1:

* `bytes / 4`: UTF-8 bytes over four, with every CJK, kana or Hangul character
  counted as four bytes rather than its three. BPE tokenizers give English about
  four characters a token, and a CJK character about one token (often more than
  one for rare ones), which three bytes over four would under-count.
* `pieces`: the runs a BPE pre-tokenizer splits text into before merging: a run
  of letters, up to three digits (numbers are split that way by the GPT-4
  tokenizers), a run of punctuation. Code, JSON and numbers have many short
  pieces and so more tokens than their length suggests; taking the larger of the
  two keeps them from being under-counted badly.

By the usual published ratios it is close for prose and over rather than under
for CJK (it was not checked against a real vocabulary here: none is installed);
random identifiers (base64, hashes) are under-counted, which is why limits keep
a margin (`batching`). Measured on one core: about 0.1 s per MB
of English or Japanese, 0.17 s per MB of JSON (one regular expression pass and
one UTF-8 encode), far more than any rate limit lets through.

`observe` learns the ratio of real counts to the heuristic from each answered
job (the mock providers count one token per word, OpenAI's tokenizers about
1.3 per English word). That
calibrated `estimate` is for pacing, where a wrong guess costs a little speed or
one 429. Provider caps are another matter: a text over a per-text cap is refused
by the provider, so `estimate_for_limits` never scales the heuristic *down*
(a ratio below 1 is ignored there) and only ever up.
"""

from __future__ import annotations

import math
import re

__all__ = ["TokenEstimator", "heuristic_tokens"]

# A letter run, up to three digits, a punctuation run, an underscore run.
_PIECE = re.compile(r"[^\W\d_]+|\d{1,3}|[^\w\s]+|_+")
# CJK ideographs (with extension A and compatibility), kana, Hangul syllables, full-width forms.
_WIDE = re.compile(
    r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]"
)

_MIN_RATIO = 0.2
_MAX_RATIO = 5.0
# Smoothing: a plain mean over the first answers, then an EMA that forgets old ones.
_EMA_WEIGHT = 0.1
# How far back from a cut to look for a space to cut at instead (characters).
_WORD_LOOKBACK = 64


def heuristic_tokens(text: str) -> int:
    """The uncalibrated estimate (see the module docstring); 1 for an empty text."""
    size = len(text.encode("utf-8", "surrogatepass"))
    if not text.isascii():
        size += len(_WIDE.findall(text))
    pieces = len(_PIECE.findall(text))
    return max(1, -(-size // 4), pieces)


class TokenEstimator:
    """A token count for any text, calibrated by what providers report."""

    __slots__ = ("_observations", "_ratio")

    def __init__(self) -> None:
        self._ratio = 1.0
        self._observations = 0

    @property
    def ratio(self) -> float:
        """Real tokens per heuristic token, as learned so far (1.0 at start)."""
        return self._ratio

    def estimate(self, text: str) -> int:
        """Calibrated tokens of `text` (>= 1): for pacing and cost estimates."""
        return self.calibrated(heuristic_tokens(text))

    def estimate_for_limits(self, text: str) -> int:
        """Tokens of `text` to hold against a provider's caps: never below the heuristic."""
        return self.for_limits(heuristic_tokens(text))

    def calibrated(self, heuristic: int) -> int:
        """`estimate` of a text whose `heuristic_tokens` is known (saves a second pass)."""
        return max(1, round(heuristic * self._ratio))

    def for_limits(self, heuristic: int) -> int:
        """`estimate_for_limits` of a text whose `heuristic_tokens` is known."""
        return max(1, math.ceil(heuristic * max(self._ratio, 1.0)))

    def observe(self, estimated: int, actual: int) -> None:
        """Learn from one answered job.

        `estimated` is the sum of `estimate()` over the job's texts, taken with the
        current calibration (so it converts back to heuristic tokens exactly);
        `actual` is the provider's `usage.input_tokens`. Either not positive (a
        provider that reports no usage): ignored.
        """
        if estimated <= 0 or actual <= 0:
            return
        # Clamped before blending, so one absurd usage report moves the ratio a little.
        sample = min(_MAX_RATIO, max(_MIN_RATIO, actual * self._ratio / estimated))
        self._observations += 1
        weight = max(_EMA_WEIGHT, 1.0 / self._observations)
        self._ratio += weight * (sample - self._ratio)

    def truncate(self, text: str, max_tokens: int) -> str:
        """The longest prefix of `text` whose limit estimate is at most `max_tokens`.

        It ends at a space when one is within a short distance before the cut, so a
        word is not left half; trailing whitespace is dropped. The estimate grows
        with the prefix (bytes and pieces both do), so a binary search finds it;
        since it is at least a token per four characters, only the first
        4 * max_tokens characters need searching. "" when not even one character fits.
        """
        if max_tokens < 1:
            raise ValueError("max_tokens must be at least 1")
        if self.estimate_for_limits(text) <= max_tokens:
            return text
        # A prefix of `low` characters fits; one of `high` characters does not.
        low, high = 0, min(len(text), 4 * max_tokens + 4)
        while high - low > 1:
            middle = (low + high) // 2
            if self.estimate_for_limits(text[:middle]) <= max_tokens:
                low = middle
            else:
                high = middle
        cut = text[:low]
        space = max(cut.rfind(" ", max(0, low - _WORD_LOOKBACK)), cut.rfind("\n"))
        if space > 0 and low - space <= _WORD_LOOKBACK and cut[:space].strip():
            cut = cut[:space]
        return cut.rstrip() or cut
