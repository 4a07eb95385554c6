"""The backfill's progress display: plain lines for logs, a tqdm bar on a terminal."""

from __future__ import annotations

import io

import pytest

from workers.backfill.progress import Progress, format_cost, format_duration


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def plain(total: int | None = 1000, done: int = 0) -> tuple[Progress, io.StringIO, Clock]:
    out, clock = io.StringIO(), Clock()
    progress = Progress(total=total, done=done, file=out, tty=False, clock=clock, interval=5.0)
    return progress, out, clock


def test_plain_lines_come_at_most_every_interval_and_once_at_the_end() -> None:
    progress, out, clock = plain(total=1000, done=100)
    progress.advance(96, 1200, 0.000120)
    assert out.getvalue() == ""  # nothing until the interval has passed
    clock.now += 5.0
    progress.advance(96, 1200, 0.000120)
    clock.now += 1.0
    progress.advance(96, 1200, 0.000120)
    lines = out.getvalue().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("backfill: 292/1,000 texts (29.2%)")
    assert "38.4 texts/s" in lines[0] and "480 tokens/s" in lines[0]
    assert "ETA 18s" in lines[0]  # 708 left at 38.4/s
    assert "$0.000240" in lines[0]
    progress.close()
    progress.close()  # once only
    lines = out.getvalue().splitlines()
    assert len(lines) == 2 and lines[1].startswith("backfill: 388/1,000 texts")
    assert "ETA" not in lines[1]


def test_summary_counts_this_run_only() -> None:
    progress, _, clock = plain(total=500, done=200)
    progress.advance(10, 100, 0.01)
    progress.cached(5)
    progress.refused(2)
    progress.retried()
    progress.retried(2)
    clock.now += 10.0
    progress.close()
    clock.now += 100.0  # after close, time no longer counts
    summary = progress.summary()
    assert (summary.texts, summary.cached, summary.refused, summary.retries) == (15, 5, 2, 3)
    assert summary.tokens == 100 and summary.cost_usd == pytest.approx(0.01)
    assert summary.cost_complete
    assert summary.seconds == pytest.approx(10.0)
    assert summary.texts_per_second == pytest.approx(1.5)
    assert summary.tokens_per_second == pytest.approx(10.0)


def test_an_unknown_cost_makes_the_total_a_lower_bound() -> None:
    progress, out, clock = plain()
    progress.advance(1, 10, None)
    assert not progress.summary().cost_complete
    clock.now += 6
    progress.advance(1, 10, 0.5)
    assert "≥$0.5000" in out.getvalue()
    assert progress.summary().cost_usd == pytest.approx(0.5)


def test_notes_are_printed_at_once() -> None:
    progress, out, _ = plain()
    progress.note("rate limited: waiting 2.0 s")
    assert out.getvalue() == "rate limited: waiting 2.0 s\n"


def test_unknown_total_shows_a_count_without_percent() -> None:
    progress, out, _ = plain(total=None)
    progress.advance(3, 30, 0.0)
    progress.close()
    assert out.getvalue().startswith("backfill: 3 texts, ")


def test_terminal_bar_shows_rate_tokens_retries_refused_and_cost() -> None:
    out, clock = io.StringIO(), Clock()
    progress = Progress(total=1000, done=0, file=out, tty=True, clock=clock)
    clock.now += 2.0
    progress.advance(100, 5000, 0.0123)
    progress.retried()
    progress.refused(3)
    progress.note("a note above the bar")
    progress.close()
    text = out.getvalue()
    assert "backfill" in text and "103/1" in text and "text" in text
    assert "2,500 tok/s" in text
    assert "retries 1" in text and "refused 3" in text
    assert "$0.0123" in text
    assert "a note above the bar" in text


def test_tty_is_detected_from_the_file() -> None:
    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    terminal = Terminal()
    progress = Progress(total=10, file=terminal)
    progress.advance(10, 10, 0.0)
    progress.close()
    assert "\r" in terminal.getvalue()  # a bar redraws in place
    log = io.StringIO()
    Progress(total=10, file=log).close()
    assert "\r" not in log.getvalue()


@pytest.mark.parametrize(
    ("usd", "complete", "shown"),
    [
        (0.0, True, "$0"),
        (0.0123, True, "$0.0123"),
        (0.0000456, True, "$0.0000456"),
        (12.345, True, "$12.35"),
        (1234.5, True, "$1,234.50"),
        (0.0, False, "cost ?"),
        (0.25, False, "≥$0.2500"),
    ],
)
def test_format_cost(usd: float, complete: bool, shown: str) -> None:
    assert format_cost(usd, complete=complete) == shown


def test_format_duration() -> None:
    assert format_duration(45.2) == "45s"
    assert format_duration(185) == "3m 05s"
    assert format_duration(7620) == "2h 07m"
