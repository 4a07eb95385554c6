"""File sinks that grow by appending: JSON lines, and a NumPy `.npy` with an ids file beside it.

Both are append-only between commits, so cutting back to a position is a truncate. Rows are
written to the files as they come (the page cache holds them); `commit()` flushes and
fsyncs in a thread, so the event loop never waits on the disk.

The `.npy` keeps a fixed 128-byte header whose shape is rewritten in place (one `pwrite`
inside one page) after the rows it counts are durable. Rows beyond the header's shape are
ignored by `numpy.load` (with or without `mmap_mode`), so the file is a valid array after
every commit and after a kill at any moment.
"""

from __future__ import annotations

import asyncio
import os
import struct
from pathlib import Path
from typing import BinaryIO, Final

import msgspec
import numpy as np
from numpy.lib import format as npy_format

from workers.backfill.items import Vectors
from workers.backfill.sinks import (
    DimsCheck,
    Position,
    checkpoint_mismatch,
    fsync_dir,
    not_named_by_checkpoint,
    os_errors,
)

__all__ = ["JsonlSink", "NpySink"]

_NPY_HEADER: Final = 128  # bytes; a multiple of 64, as numpy aligns its own headers
_NPY_PREAMBLE: Final = 10  # magic (6) + version (2) + header length (2)


class _Line(msgspec.Struct):
    id: str
    embedding: list[float]


class _IdOnly(msgspec.Struct):
    id: str


def _rows(vectors: Vectors) -> list[list[float]]:
    # float32 -> Python float is exact, and msgspec prints the shortest text that reads
    # back as the same double: the file holds each float32 value exactly.
    matrix = np.frombuffer(vectors.data, dtype="<f4").reshape(len(vectors.ids), vectors.dims)
    rows: list[list[float]] = matrix.tolist()
    return rows


def _open_rw(path: Path) -> BinaryIO:
    created = not path.exists()
    f = path.open("r+b" if not created else "w+b")
    if created:
        fsync_dir(path.parent.resolve())
    return f


def _cut(f: BinaryIO, size: int) -> None:
    f.truncate(size)
    f.flush()
    os.fsync(f.fileno())
    f.seek(size)


def _size(path: Path) -> int:
    return path.stat().st_size if path.exists() else 0


class JsonlSink:
    """`{"id": "...", "embedding": [...]}` per line. Position {"bytes": n, "rows": k}."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.description = f"{path} (JSON lines)"
        self._file: BinaryIO | None = None
        self._dims = DimsCheck()
        self._bytes = 0
        self._rows = 0
        self._encoder = msgspec.json.Encoder()

    async def open(self, committed: Position | None) -> set[str]:
        with os_errors(self.path):
            return await asyncio.to_thread(self._open, committed)

    def _open(self, committed: Position | None) -> set[str]:
        if committed is None and _size(self.path) > 0:
            raise not_named_by_checkpoint(str(self.path))
        size = (committed or {}).get("bytes", 0)
        rows = (committed or {}).get("rows", 0)
        if _size(self.path) < size:
            raise checkpoint_mismatch(str(self.path), f"shorter than the {size} bytes written")
        f = self._file = _open_rw(self.path)
        _cut(f, size)
        f.seek(0)
        ids: set[str] = set()
        id_decoder = msgspec.json.Decoder(_IdOnly)
        n = 0
        for n, line in enumerate(f, start=1):
            try:
                if n == 1:
                    first = msgspec.json.decode(line, type=_Line)
                    self._dims.dims = len(first.embedding)
                ids.add(id_decoder.decode(line).id)
            except msgspec.DecodeError:
                raise checkpoint_mismatch(str(self.path), f"line {n} is unreadable") from None
        if n != rows:
            raise checkpoint_mismatch(str(self.path), f"{n} rows where {rows} were written")
        f.seek(size)
        self._bytes, self._rows = size, rows
        return ids

    async def write(self, vectors: Vectors) -> None:
        self._dims.check(vectors, str(self.path))
        assert self._file is not None, "open() first"
        # Printing floats is the slow part (about 0.1 ms per 1536-dim row): in a thread, the
        # loop gets the GIL back every switch interval instead of waiting for the batch.
        chunk = await asyncio.to_thread(self._encode, vectors)
        with os_errors(self.path):
            self._file.write(chunk)
        self._bytes += len(chunk)
        self._rows += len(vectors.ids)

    def _encode(self, vectors: Vectors) -> bytes:
        encode = self._encoder.encode
        return b"".join(
            encode(_Line(row_id, row)) + b"\n"
            for row_id, row in zip(vectors.ids, _rows(vectors), strict=True)
        )

    async def commit(self) -> Position:
        assert self._file is not None, "open() first"
        with os_errors(self.path):
            self._file.flush()
            await asyncio.to_thread(os.fsync, self._file.fileno())
        return {"bytes": self._bytes, "rows": self._rows}

    async def finish(self) -> None:
        """Nothing to do: every commit leaves the file in its final form."""

    async def close(self) -> None:
        if self._file is not None:
            self._file.close()
            self._file = None


def _npy_header(rows: int, dims: int) -> bytes:
    text = f"{{'descr': '<f4', 'fortran_order': False, 'shape': ({rows}, {dims}), }}"
    room = _NPY_HEADER - _NPY_PREAMBLE
    return b"\x93NUMPY\x01\x00" + struct.pack("<H", room) + text.ljust(room - 1).encode() + b"\n"


def _ids_path(path: Path) -> Path:
    stem = path.name[: -len(".npy")] if path.name.lower().endswith(".npy") else path.name
    return path.with_name(stem + ".ids.jsonl")


class NpySink:
    """float32 (rows, dims) in `out.npy`, ids in `out.ids.jsonl`. Position {"rows", "id_bytes"}."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.ids_path = _ids_path(path)
        self.description = f"{path} (NumPy float32, ids in {self.ids_path.name})"
        self._data: BinaryIO | None = None
        self._ids: BinaryIO | None = None
        self._dims = DimsCheck()
        self._rows = 0
        self._id_bytes = 0

    async def open(self, committed: Position | None) -> set[str]:
        with os_errors(self.path):
            return await asyncio.to_thread(self._open, committed)

    def _open(self, committed: Position | None) -> set[str]:
        if committed is None:
            for p in (self.path, self.ids_path):
                if _size(p) > 0:
                    raise not_named_by_checkpoint(str(p))
        rows = (committed or {}).get("rows", 0)
        id_bytes = (committed or {}).get("id_bytes", 0)
        if _size(self.ids_path) < id_bytes:
            raise checkpoint_mismatch(str(self.ids_path), f"shorter than {id_bytes} bytes")
        data = self._data = _open_rw(self.path)
        ids_file = self._ids = _open_rw(self.ids_path)
        if rows == 0:
            # Nothing committed: the dimensions are free again.
            _cut(data, 0)
        else:
            dims = self._read_header(data)
            if _size(self.path) < _NPY_HEADER + rows * dims * 4:
                raise checkpoint_mismatch(str(self.path), f"fewer than {rows} rows")
            self._dims.dims = dims
            _cut(data, _NPY_HEADER + rows * dims * 4)
            os.pwrite(data.fileno(), _npy_header(rows, dims), 0)
            os.fsync(data.fileno())
        _cut(ids_file, id_bytes)
        ids_file.seek(0)
        ids = [msgspec.json.decode(line, type=str) for line in ids_file]
        if len(ids) != rows:
            raise checkpoint_mismatch(str(self.ids_path), f"{len(ids)} ids for {rows} rows")
        self._rows, self._id_bytes = rows, id_bytes
        return set(ids)

    def _read_header(self, data: BinaryIO) -> int:
        data.seek(0)
        try:
            if npy_format.read_magic(data) != (1, 0):
                raise ValueError("not format version 1.0")
            shape, fortran, dtype = npy_format.read_array_header_1_0(data)
        except ValueError as exc:
            raise checkpoint_mismatch(str(self.path), f"bad header: {exc}") from None
        if data.tell() != _NPY_HEADER or fortran or dtype != np.dtype("<f4") or len(shape) != 2:
            raise checkpoint_mismatch(str(self.path), "not an array this backfill wrote")
        return int(shape[1])

    async def write(self, vectors: Vectors) -> None:
        assert self._data is not None and self._ids is not None, "open() first"
        fresh = self._dims.dims is None
        self._dims.check(vectors, str(self.path))
        ids = b"".join(msgspec.json.encode(i) + b"\n" for i in vectors.ids)
        with os_errors(self.path):
            if fresh:
                self._data.write(_npy_header(0, vectors.dims))
            self._data.write(vectors.data)
            self._ids.write(ids)
        self._rows += len(vectors.ids)
        self._id_bytes += len(ids)

    async def commit(self) -> Position:
        assert self._data is not None and self._ids is not None, "open() first"
        with os_errors(self.path):
            self._data.flush()
            self._ids.flush()
            await asyncio.to_thread(self._sync)
        return {"rows": self._rows, "id_bytes": self._id_bytes}

    def _sync(self) -> None:
        assert self._data is not None and self._ids is not None
        os.fsync(self._ids.fileno())
        os.fsync(self._data.fileno())
        if self._dims.dims is not None:
            # Only once the rows it counts are durable does the header count them.
            os.pwrite(self._data.fileno(), _npy_header(self._rows, self._dims.dims), 0)
            os.fsync(self._data.fileno())

    async def finish(self) -> None:
        """A backfill that wrote nothing still leaves a loadable (0, 0) array."""
        if self._data is not None and self._dims.dims is None:
            with os_errors(self.path):
                await asyncio.to_thread(self._write_empty)

    def _write_empty(self) -> None:
        assert self._data is not None
        _cut(self._data, 0)
        self._data.write(_npy_header(0, 0))
        self._data.flush()
        os.fsync(self._data.fileno())

    async def close(self) -> None:
        for f in (self._data, self._ids):
            if f is not None:
                f.close()
        self._data = self._ids = None
