"""The backfill checkpoint journal: replay, torn lines, mismatches, restart, locking."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from workers.backfill.items import BackfillError, Rejection
from workers.backfill.journal import Journal

FP = {"provider": "openai", "model": "text-embedding-3-small", "dimensions": "default"}


def lines(path: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in path.read_bytes().splitlines()]


def test_new_journal_writes_its_header(tmp_path: Path) -> None:
    path = tmp_path / "ck.jsonl"
    journal, state = Journal.open(path, FP)
    journal.close()
    assert re.fullmatch(r"[0-9a-f]{12}", state.run)
    assert (state.position, state.in_flight, state.rejected) == (None, {}, {})
    assert (state.serial, state.finished) == (0, False)
    assert lines(path) == [{"backfill": 1, "run": state.run, "fingerprint": FP}]


async def test_replay_of_sent_settled_and_commit_lines(tmp_path: Path) -> None:
    path = tmp_path / "ck.jsonl"
    journal, state = Journal.open(path, FP)
    run = state.run
    journal.sent(f"{run}-0", ["a", "b"])
    journal.sent(f"{run}-1", ["c"])
    journal.sent(f"{run}-2", ["d", "e"])
    journal.settled([f"{run}-1"])  # c failed: to be sent again
    journal.sent(f"{run}-3", ["c"])
    rejection = Rejection("e", "too_long", "9000 tokens, the limit is 8191")
    await journal.commit({"bytes": 120, "rows": 2}, [f"{run}-0"], [])
    await journal.commit({"bytes": 180, "rows": 3}, [f"{run}-2"], [rejection])
    journal.close()

    journal, state = Journal.open(path, FP)
    journal.close()
    assert state.run == run
    assert state.position == {"bytes": 180, "rows": 3}
    assert state.in_flight == {f"{run}-3": ("c",)}
    assert state.rejected == {"e": rejection}
    assert state.serial == 4
    assert not state.finished


async def test_commit_without_a_position_keeps_the_last_one(tmp_path: Path) -> None:
    path = tmp_path / "ck.jsonl"
    journal, state = Journal.open(path, FP)
    journal.sent(f"{state.run}-0", ["a"])
    await journal.commit({"rows": 1}, [], [])
    await journal.commit(None, [f"{state.run}-0"], [Rejection("a", "bad_request", "no")])
    journal.close()
    _, state = Journal.open(path, FP)
    assert state.position == {"rows": 1}
    assert state.in_flight == {}
    assert set(state.rejected) == {"a"}


def test_serial_continues_after_the_highest_seen(tmp_path: Path) -> None:
    path = tmp_path / "ck.jsonl"
    journal, state = Journal.open(path, FP)
    journal.sent(f"{state.run}-41", ["a"])
    journal.sent(f"{state.run}-7", ["b"])
    journal.sent("someone-else-99", ["c"])  # not this run's: no serial of ours
    journal.close()
    journal, again = Journal.open(path, FP)
    journal.close()
    assert again.serial == 42


async def test_torn_last_line_is_dropped_and_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "ck.jsonl"
    journal, state = Journal.open(path, FP)
    await journal.commit({"rows": 5}, [], [])
    journal.close()
    whole = path.read_bytes()
    with path.open("ab") as f:
        f.write(b'{"c": {"rows": 9}, "r": [], "rej"')  # killed mid-write
    journal, state = Journal.open(path, FP)
    assert state.position == {"rows": 5}
    assert path.read_bytes() == whole
    await journal.commit({"rows": 6}, [], [])
    journal.close()
    _, state = Journal.open(path, FP)
    assert state.position == {"rows": 6}


def test_torn_header_starts_a_new_journal(tmp_path: Path) -> None:
    path = tmp_path / "ck.jsonl"
    path.write_bytes(b'{"backfill": 1, "ru')
    journal, state = Journal.open(path, FP)
    journal.close()
    assert lines(path) == [{"backfill": 1, "run": state.run, "fingerprint": FP}]


async def test_a_damaged_line_before_the_last_is_an_error(tmp_path: Path) -> None:
    path = tmp_path / "ck.jsonl"
    journal, _ = Journal.open(path, FP)
    await journal.commit({"rows": 1}, [], [])
    journal.close()
    with path.open("ab") as f:
        f.write(b"garbage\n")
        f.write(b'{"f": true}\n')
    with pytest.raises(BackfillError, match="damaged at line 3"):
        Journal.open(path, FP)
    path.write_bytes(path.read_bytes().replace(b"garbage", b'{"what": 1}'))
    with pytest.raises(BackfillError, match="damaged at line 3"):
        Journal.open(path, FP)


def test_not_a_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    path.write_bytes(b'{"id": "a", "embedding": [1.0]}\n')
    with pytest.raises(BackfillError, match="is not a backfill checkpoint"):
        Journal.open(path, FP)


def test_fingerprint_mismatch_names_the_fields(tmp_path: Path) -> None:
    path = tmp_path / "ck.jsonl"
    Journal.open(path, FP)[0].close()
    other = {**FP, "model": "text-embedding-3-large", "input_type": "query"}
    with pytest.raises(BackfillError) as caught:
        Journal.open(path, other)
    message = str(caught.value)
    assert "input_type: (none) -> 'query'" in message
    assert "model: 'text-embedding-3-small' -> 'text-embedding-3-large'" in message
    assert "dimensions" not in message
    assert "--restart" in message and "same command" in message


async def test_restart_keeps_the_old_journal_aside(tmp_path: Path) -> None:
    path = tmp_path / "ck.jsonl"
    journal, old = Journal.open(path, FP)
    await journal.commit({"rows": 3}, [], [Rejection("x", "empty_text", "empty")])
    journal.close()
    before = path.read_bytes()
    other = {**FP, "model": "other"}
    journal, state = Journal.open(path, other, restart=True)
    journal.close()
    assert (tmp_path / "ck.jsonl.old").read_bytes() == before
    assert state.run != old.run
    assert (state.position, state.rejected) == (None, {})
    assert lines(path)[0]["fingerprint"] == other


async def test_finished_and_then_extended(tmp_path: Path) -> None:
    path = tmp_path / "ck.jsonl"
    journal, state = Journal.open(path, FP)
    await journal.commit({"rows": 1}, [], [])
    await journal.finish()
    journal.close()
    journal, state = Journal.open(path, FP)
    assert state.finished
    journal.sent(f"{state.run}-0", ["new"])  # an incremental rerun found new rows
    journal.close()
    journal, state = Journal.open(path, FP)
    journal.close()
    assert not state.finished
    assert state.in_flight == {f"{state.run}-0": ("new",)}


async def test_records_reach_the_file_when_written(tmp_path: Path) -> None:
    path = tmp_path / "ck.jsonl"
    journal, _ = Journal.open(path, FP)
    journal.sent("r-1", ["a", "b"])
    assert lines(path)[-1] == {"s": "r-1", "ids": ["a", "b"]}
    journal.settled([])  # nothing to say: no line
    journal.settled(["r-1"])
    assert lines(path)[-1] == {"x": ["r-1"]}
    await journal.commit({"rows": 2}, ["r-1"], [Rejection("z", "duplicate_id", "seen")])
    assert lines(path)[-1] == {
        "c": {"rows": 2},
        "r": ["r-1"],
        "rej": [{"id": "z", "code": "duplicate_id", "reason": "seen"}],
    }
    await journal.finish()
    assert lines(path)[-1] == {"f": True}
    journal.close()


def test_one_backfill_per_checkpoint(tmp_path: Path) -> None:
    path = tmp_path / "ck.jsonl"
    first, _ = Journal.open(path, FP)
    with pytest.raises(BackfillError, match="another backfill is using"):
        Journal.open(path, FP)
    with pytest.raises(BackfillError, match="another backfill is using"):
        Journal.open(path, FP, restart=True)
    assert not (tmp_path / "ck.jsonl.old").exists()
    first.close()
    Journal.open(path, FP)[0].close()


def test_unwritable_place_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(BackfillError, match="cannot open the checkpoint"):
        Journal.open(tmp_path / "missing-dir" / "ck.jsonl", FP)
