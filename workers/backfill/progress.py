"""What a running backfill shows: a bar on a terminal, a plain line now and then in logs.

On a terminal, a tqdm bar counts texts settled (embedded, served from the cache,
or refused) against the input's total, with tqdm's own rate and ETA, and a
postfix for what tqdm does not know: tokens/s, retries, refusals and the cost so
far. Elsewhere (CI, `2> log`), a bar's carriage returns make an unreadable log,
so a plain line is written at most every `interval` seconds, when something
happens, and once at the end; nothing runs in the background to do it.

A cost of None from a worker means "unknown", which is not free: the total shown
is then a lower bound ("≥$0.0123"), or "cost ?" while nothing is known.
"""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import NoReturn, TextIO

from tqdm import tqdm

__all__ = ["Progress", "ProgressSummary", "format_cost", "format_duration"]

_PLAIN_INTERVAL = 10.0


@dataclass(frozen=True, slots=True)
class ProgressSummary:
    texts: int  # embedded or served from the cache by this run (refusals not included)
    tokens: int  # input tokens the provider reported
    cached: int
    refused: int
    retries: int
    cost_usd: float  # of the answers whose cost was known
    cost_complete: bool  # False: some answers' cost was unknown, so cost_usd is a lower bound
    seconds: float
    texts_per_second: float
    tokens_per_second: float


def format_cost(usd: float, *, complete: bool = True) -> str:
    """`$0.0123`, `$12.34`; with unknown parts `≥$0.0123`, or `cost ?` if nothing is known."""
    if not complete:
        return "cost ?" if usd <= 0 else "≥" + format_cost(usd)
    if usd <= 0:
        return "$0"
    if usd >= 1:
        return f"${usd:,.2f}"
    # Three significant digits at least, four decimals at least: $0.0123, $0.0000456.
    decimals = min(9, max(4, 2 - math.floor(math.log10(usd))))
    return f"${usd:.{decimals}f}"


def format_duration(seconds: float) -> str:
    """`45s`, `3m 05s`, `2h 07m`."""
    whole = max(0, round(seconds))
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m {secs:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h {minutes:02d}m"


def _rate(count: float, seconds: float) -> float:
    return count / seconds if seconds > 0 else 0.0


class Progress:
    def __init__(
        self,
        *,
        total: int | None,
        done: int = 0,
        file: TextIO = sys.stderr,
        tty: bool | None = None,
        clock: Callable[[], float] = time.monotonic,
        interval: float = _PLAIN_INTERVAL,
    ) -> None:
        self.total = total
        self.done_before = done  # settled by earlier runs
        self._file = file
        self._clock = clock
        self._interval = interval
        self._started = clock()
        self._ended: float | None = None
        self._last_line = self._started
        self._texts = 0
        self._tokens = 0
        self._cached = 0
        self._refused = 0
        self._retries = 0
        self._cost = 0.0
        self._cost_complete = True
        if tty is None:
            isatty = getattr(file, "isatty", None)
            tty = bool(isatty()) if callable(isatty) else False
        self._bar: tqdm[NoReturn] | None = None  # a bar without an iterable
        if tty:
            self._bar = tqdm(
                total=total,
                initial=done,
                unit="text",
                unit_scale=True,
                file=file,
                dynamic_ncols=True,
                smoothing=0.1,
                desc="backfill",
            )

    # ---- events ----------------------------------------------------------------------

    def advance(self, texts: int, tokens: int, cost_usd: float | None) -> None:
        """`texts` embedded; the provider counted `tokens`, billed `cost_usd` (None: unknown)."""
        self._texts += texts
        self._tokens += max(0, tokens)
        if cost_usd is None:
            self._cost_complete = False
        else:
            self._cost += cost_usd
        self._moved(texts)

    def cached(self, n: int) -> None:
        """`n` texts served from the cache: done, with no tokens and no cost."""
        self._texts += n
        self._cached += n
        self._moved(n)

    def refused(self, n: int = 1) -> None:
        """`n` texts settled without a vector (they count towards the total)."""
        self._refused += n
        self._moved(n)

    def retried(self, n: int = 1) -> None:
        self._retries += n
        self._moved(0)

    def note(self, line: str) -> None:
        """A message above the bar, or a line of its own."""
        if self._bar is not None:
            self._bar.write(line, file=self._file)
        else:
            print(line, file=self._file, flush=True)

    def close(self) -> None:
        if self._ended is not None:
            return
        self._ended = self._clock()
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.close()
        else:
            print(self._plain_line(), file=self._file, flush=True)

    def summary(self) -> ProgressSummary:
        seconds = (self._ended if self._ended is not None else self._clock()) - self._started
        return ProgressSummary(
            texts=self._texts,
            tokens=self._tokens,
            cached=self._cached,
            refused=self._refused,
            retries=self._retries,
            cost_usd=round(self._cost, 9),
            cost_complete=self._cost_complete,
            seconds=seconds,
            texts_per_second=_rate(self._texts, seconds),
            tokens_per_second=_rate(self._tokens, seconds),
        )

    # ---- drawing ---------------------------------------------------------------------

    def _moved(self, settled: int) -> None:
        if self._ended is not None:
            return
        if self._bar is not None:
            self._bar.set_postfix_str(self._postfix(), refresh=False)
            self._bar.update(settled)  # redraws at most every tqdm.mininterval
            return
        now = self._clock()
        if now - self._last_line >= self._interval:
            self._last_line = now
            print(self._plain_line(), file=self._file, flush=True)

    def _postfix(self) -> str:
        seconds = self._clock() - self._started
        parts = [f"{_rate(self._tokens, seconds):,.0f} tok/s"]
        if self._retries:
            parts.append(f"retries {self._retries:,}")
        if self._refused:
            parts.append(f"refused {self._refused:,}")
        parts.append(format_cost(self._cost, complete=self._cost_complete))
        return ", ".join(parts)

    def _plain_line(self) -> str:
        seconds = (self._ended if self._ended is not None else self._clock()) - self._started
        settled = self.done_before + self._texts + self._refused
        texts_rate = _rate(self._texts, seconds)
        if self.total:
            count = f"{settled:,}/{self.total:,} texts ({100 * settled / self.total:.1f}%)"
        else:
            count = f"{settled:,} texts"
        parts = [
            f"backfill: {count}",
            f"{texts_rate:,.1f} texts/s",
            f"{_rate(self._tokens, seconds):,.0f} tokens/s",
        ]
        left = None if self.total is None else max(0, self.total - settled)
        if left and texts_rate > 0 and self._ended is None:
            parts.append(f"ETA {format_duration(left / texts_rate)}")
        parts.append(f"retries {self._retries:,}")
        parts.append(f"refused {self._refused:,}")
        if self._cached:
            parts.append(f"cached {self._cached:,}")
        parts.append(format_cost(self._cost, complete=self._cost_complete))
        return ", ".join(parts)
