"""Output sinks: where the vectors go, and how each output is cut back to a checkpoint.

A sink writes rows in the order of `write()` calls and makes them durable at `commit()`,
which returns a `Position`: a small JSON-able description of the committed output
(bytes and rows of a JSON-lines file, rows of an `.npy`, parts of a Parquet output). The
runner records that position in its journal *after* the commit, so a kill at any moment
leaves an output that is at or beyond the journal's last position; `open(position)` cuts
it back to exactly that position and names the ids it holds. That is how a rerun writes
every id exactly once.

`open(committed)`:
- `None`: the journal is new; an existing non-empty output is refused, since nothing says
  what in it is trustworthy (the PostgreSQL table, which carries its own fingerprint and
  whose ids are keys, is the exception).
- `START_OVER`: the caller starts the backfill over: the output is emptied (files; the
  table keeps its rows, see `sink_postgres`).
- a position: cut back to it.

The file sinks live in `sink_files` (JSON lines, NumPy), `sink_parquet` and
`sink_postgres`; they are imported when chosen, so pyarrow stays optional.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Final, Literal, Protocol

from workers.backfill.inputs import dsn_without_password
from workers.backfill.items import BackfillError, Vectors, format_from_suffix

__all__ = ["START_OVER", "OutputSpec", "Position", "Sink", "open_sink"]

Position = dict[str, int]
# Passed to `Sink.open` to empty the output (a restarted backfill). Not `{}`, which a
# damaged journal could produce by accident; it holds none of the sinks' own keys, so
# every count read from it is zero.
START_OVER: Final[Position] = {"start_over": 1}

_SUFFIXES: Final[dict[str, Literal["jsonl", "npy", "parquet"]]] = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".npy": "npy",
    ".parquet": "parquet",
}


@dataclass(frozen=True, slots=True)
class OutputSpec:
    path: str | None = None  # .jsonl / .npy / .parquet
    format: Literal["jsonl", "npy", "parquet"] | None = None
    table: str | None = None  # a PostgreSQL table (schema-qualified allowed), with dsn
    dsn: str | None = None
    vector_type: Literal["auto", "vector", "real[]"] = "auto"

    def resolved_format(self) -> Literal["jsonl", "npy", "parquet", "table"]:
        """Which sink this spec needs; BackfillError when the spec is incomplete or mixed."""
        if (self.path is None) == (self.table is None):
            raise BackfillError("give exactly one output: a file or a PostgreSQL table")
        if self.table is not None:
            if not self.dsn:
                raise BackfillError("an output table needs a PostgreSQL DSN")
            return "table"
        assert self.path is not None
        if self.format is not None:
            return self.format
        return format_from_suffix(self.path, _SUFFIXES)

    def describe(self) -> dict[str, str]:
        """What the checkpoint records about the output (no password)."""
        fmt = self.resolved_format()
        if fmt == "table":
            assert self.table is not None and self.dsn is not None
            return {
                "table": self.table,
                "dsn": dsn_without_password(self.dsn),
                "vector_type": self.vector_type,
            }
        assert self.path is not None
        return {"path": str(Path(self.path).resolve()), "format": fmt}


class Sink(Protocol):
    description: str  # "out.jsonl (JSON lines)", "table public.emb (vector(1536))"

    async def open(self, committed: Position | None) -> set[str]:
        """Cut the output back to `committed` (see the module docstring); the ids it holds."""
        ...

    async def write(self, vectors: Vectors) -> None:
        """Buffered, not durable yet; rows keep the order of the calls."""
        ...

    async def commit(self) -> Position:
        """Make everything written durable; the new position."""
        ...

    async def finish(self) -> None:
        """The backfill is complete: give the output its final form."""
        ...

    async def close(self) -> None:
        """Release files and connections (no commit)."""
        ...


def open_sink(spec: OutputSpec, fingerprint: Mapping[str, str]) -> Sink:
    """The sink for `spec` (not opened yet). `fingerprint` ties a table to one model."""
    fmt = spec.resolved_format()
    if fmt == "table":
        from workers.backfill.sink_postgres import PostgresSink

        assert spec.table is not None and spec.dsn is not None
        return PostgresSink(spec.table, spec.dsn, spec.vector_type, fingerprint)
    assert spec.path is not None
    path = Path(spec.path)
    if fmt == "parquet":
        from workers.backfill.sink_parquet import ParquetSink

        return ParquetSink(path)
    from workers.backfill.sink_files import JsonlSink, NpySink

    return JsonlSink(path) if fmt == "jsonl" else NpySink(path)


# -- shared by the sinks -------------------------------------------------------------------


class DimsCheck:
    """Learns the dimension count from the first rows and holds every later write to it."""

    def __init__(self, dims: int | None = None) -> None:
        self.dims = dims

    def check(self, vectors: Vectors, where: str) -> None:
        if vectors.dims <= 0 or len(vectors.data) != len(vectors.ids) * vectors.dims * 4:
            raise BackfillError(
                f"{where}: {len(vectors.ids)} vectors of {vectors.dims} dimensions "
                f"cannot be {len(vectors.data)} bytes"
            )
        if self.dims is None:
            self.dims = vectors.dims
        elif vectors.dims != self.dims:
            raise BackfillError(
                f"{where} holds vectors of {self.dims} dimensions; "
                f"new vectors have {vectors.dims}: use another output"
            )


def not_named_by_checkpoint(what: str) -> BackfillError:
    return BackfillError(
        f"{what} exists and no checkpoint names it: remove it or pass --restart to overwrite "
        "it, or choose another output"
    )


def checkpoint_mismatch(what: str, detail: str) -> BackfillError:
    return BackfillError(
        f"{what} does not match its checkpoint ({detail}): was it changed by hand? "
        "Pass --restart to start the backfill over, or choose another output"
    )


@contextlib.contextmanager
def os_errors(path: Path) -> Iterator[None]:
    """An OS error (no space left, no permission) as a BackfillError naming the output."""
    try:
        yield
    except OSError as exc:
        raise BackfillError(f"{path}: {exc.strerror or exc}") from exc


def fsync_dir(directory: Path) -> None:
    """Make a created, renamed or removed directory entry durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
