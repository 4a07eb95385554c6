"""The backfill's checkpoint: an append-only JSON-lines journal, replayed on open.

One record per line, each written with a single `write` and flushed:

- header `{"backfill": 1, "run": "<12 hex>", "fingerprint": {...}}` (first line)
- sent `{"s": rid, "ids": [...]}`: a job was published and confirmed
- settled `{"x": [rid, ...]}`: answers that produced no output (resent or given up)
- commit `{"c": position, "r": [rid, ...], "rej": [{"id", "code", "reason"}, ...]}`:
  the sink committed up to `position`; the rids are settled; the rejections are final
- finished `{"f": true}`

Only commit and finished lines are fsynced: they are the ones a rerun trusts for exactly
once (the sink is cut back to the last commit's position). A lost sent or settled line
costs at most an answer waited for in vain or a text embedded again, never a duplicate
in the output. An append-only log (rather than a state file rewritten in place) means a
kill can only ever tear the last line, which open() recognises (no newline) and drops.

An exclusive `flock` on the file keeps two backfills from sharing one checkpoint: their
interleaved commits would break exactly once.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import os
import secrets
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO, Final

import msgspec

from workers.backfill.items import BackfillError, Rejection
from workers.backfill.sinks import Position, fsync_dir, os_errors

__all__ = ["Journal", "JournalState"]

FORMAT_VERSION: Final = 1
_SHOWN_VALUE: Final = 120  # characters of a differing fingerprint value in an error


@dataclass(slots=True)
class JournalState:
    run: str  # names the request ids and reply queue; kept across reruns
    position: Position | None = None  # sink position of the last commit line
    in_flight: dict[str, tuple[str, ...]] = field(default_factory=dict)  # rid -> ids
    rejected: dict[str, Rejection] = field(default_factory=dict)  # id -> why
    serial: int = 0  # 1 + the highest request serial seen in sent lines
    finished: bool = False

    def apply(self, record: Mapping[str, Any]) -> None:
        """Replay one (non-header) record; KeyError/TypeError/ValueError when malformed."""
        if "s" in record:
            rid = str(record["s"])
            self.in_flight[rid] = tuple(str(i) for i in record["ids"])
            self.serial = max(self.serial, self._serial_of(rid) + 1)
            self.finished = False
        elif "x" in record:
            for rid in record["x"]:
                self.in_flight.pop(str(rid), None)
        elif "c" in record:
            position = record["c"]
            if position is not None:
                self.position = {str(k): int(v) for k, v in position.items()}
            for rid in record["r"]:
                self.in_flight.pop(str(rid), None)
            for r in record["rej"]:
                self.rejected[str(r["id"])] = Rejection(
                    str(r["id"]), str(r["code"]), str(r["reason"])
                )
        elif record.get("f") is True:
            self.finished = True
        else:
            raise ValueError("unknown record")

    def _serial_of(self, rid: str) -> int:
        prefix, _, serial = rid.rpartition("-")
        return int(serial) if prefix == self.run and serial.isdigit() else -1


class Journal:
    def __init__(self, path: Path, file: BinaryIO) -> None:
        self.path = path
        self._file = file

    @classmethod
    def open(
        cls, path: Path, fingerprint: Mapping[str, str], *, restart: bool = False
    ) -> tuple[Journal, JournalState]:
        """The journal at `path` and the state its records replay to (new file: empty state).

        BackfillError: another backfill holds it, its fingerprint differs from
        `fingerprint`, or a line other than a torn last one is unreadable.
        """
        path = Path(path)
        if restart and path.exists():
            # Locked first, so a restart never pulls the file from under a running backfill.
            with _locked(path):
                path.replace(path.with_name(path.name + ".old"))
        file = _locked_open(path)
        try:
            state = _replay(path, file, dict(fingerprint))
        except BaseException:
            file.close()
            raise
        return cls(path, file), state

    def sent(self, rid: str, ids: Sequence[str]) -> None:
        self._append({"s": rid, "ids": list(ids)})

    def settled(self, rids: Sequence[str]) -> None:
        if rids:
            self._append({"x": list(rids)})

    async def commit(
        self, position: Position | None, rids: Sequence[str], rejected: Sequence[Rejection]
    ) -> None:
        rej = [{"id": r.id, "code": r.code, "reason": r.reason} for r in rejected]
        self._append({"c": position, "r": list(rids), "rej": rej})
        with os_errors(self.path):
            await asyncio.to_thread(os.fsync, self._file.fileno())

    async def finish(self) -> None:
        self._append({"f": True})
        with os_errors(self.path):
            await asyncio.to_thread(os.fsync, self._file.fileno())

    def close(self) -> None:
        self._file.close()  # closing also releases the lock

    def _append(self, record: Mapping[str, Any]) -> None:
        # One write per record: a kill can tear only the line being written.
        with os_errors(self.path):
            self._file.write(msgspec.json.encode(record) + b"\n")
            self._file.flush()


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    with path.open("rb") as f:
        _lock(path, f.fileno())
        yield


def _lock(path: Path, fd: int) -> None:
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        raise BackfillError(
            f"another backfill is using the checkpoint {path}: wait for it to end"
        ) from None


def _locked_open(path: Path) -> BinaryIO:
    try:
        file = path.open("a+b")
    except OSError as exc:
        raise BackfillError(f"cannot open the checkpoint {path}: {exc.strerror}") from exc
    try:
        _lock(path, file.fileno())
    except BaseException:
        file.close()
        raise
    return file


def _replay(path: Path, file: BinaryIO, fingerprint: dict[str, str]) -> JournalState:
    """Replay line by line (a long backfill's journal can be large)."""
    file.seek(0)
    state: JournalState | None = None
    whole = 0  # bytes of complete lines
    for number, line in enumerate(file, start=1):
        if not line.endswith(b"\n"):
            # A torn last line: its write never finished, so nothing relied on it.
            file.truncate(whole)
            break
        whole += len(line)
        if state is None:
            state = JournalState(run=_check_header(path, line, fingerprint))
            continue
        try:
            record = msgspec.json.decode(line)
            if not isinstance(record, dict):
                raise ValueError("not an object")
            state.apply(record)
        except (msgspec.DecodeError, UnicodeDecodeError, KeyError, TypeError, ValueError):
            raise BackfillError(
                f"the checkpoint {path} is damaged at line {number}: "
                "remove it (or pass --restart) to start the backfill over"
            ) from None
    return _new(path, file, fingerprint) if state is None else state


def _new(path: Path, file: BinaryIO, fingerprint: dict[str, str]) -> JournalState:
    run = secrets.token_hex(6)
    file.write(
        msgspec.json.encode({"backfill": FORMAT_VERSION, "run": run, "fingerprint": fingerprint})
        + b"\n"
    )
    file.flush()
    os.fsync(file.fileno())
    fsync_dir(path.parent.resolve())
    return JournalState(run=run)


def _check_header(path: Path, line: bytes, fingerprint: dict[str, str]) -> str:
    """The run token of a header line for `fingerprint`; BackfillError otherwise."""
    try:
        header = msgspec.json.decode(line)
    except (msgspec.DecodeError, UnicodeDecodeError):
        header = None
    if (
        not isinstance(header, dict)
        or header.get("backfill") != FORMAT_VERSION
        or not isinstance(header.get("run"), str)
        or not isinstance(header.get("fingerprint"), dict)
    ):
        raise BackfillError(f"{path} is not a backfill checkpoint (line 1)")
    recorded: dict[str, Any] = header["fingerprint"]
    differ = sorted(
        k for k in recorded.keys() | fingerprint.keys() if recorded.get(k) != fingerprint.get(k)
    )
    if differ:
        changes = "; ".join(
            f"{k}: {_shown(recorded.get(k))} -> {_shown(fingerprint.get(k))}" for k in differ
        )
        raise BackfillError(
            f"the checkpoint {path} belongs to another backfill ({changes}). "
            "Run the same command as before to resume it, pass --restart to start over, "
            "or choose another output and checkpoint"
        )
    run: str = header["run"]
    return run


def _shown(value: object) -> str:
    if value is None:
        return "(none)"
    text = str(value)
    return repr(text if len(text) <= _SHOWN_VALUE else text[: _SHOWN_VALUE - 1] + "…")
