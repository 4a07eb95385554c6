"""Parquet output: one part file per commit while running, merged into one file at the end.

A Parquet file cannot be appended to and is unreadable until its footer is written, so
each commit writes a small complete part (`out.parquet.parts/part-000001.parquet`: temp
name, fsync, rename, fsync of the directory) and `finish()` merges them in order into
`out.parquet`.

Parts are numbered across the whole life of the output, and the merged file records in
its metadata (`llm_fleet.parts`) the highest part it absorbed. So the position is simply
{"parts": k}, "parts 1..k, wherever they now live", and it stays true across a finish and
an incremental rerun: open({"parts": k}) keeps the merged file (parts <= N), keeps parts
N+1..k, and deletes parts above k (never recorded by the journal) and parts <= N (left by
a kill between the merge's rename and its cleanup).

pyarrow is imported by name at run time: it is an optional dependency (`[parquet]`), and
it ships no type information.
"""

from __future__ import annotations

import asyncio
import contextlib
import importlib
import os
import re
import shutil
from pathlib import Path
from types import ModuleType
from typing import Any, Final

import numpy as np

from workers.backfill.items import BackfillError, Vectors
from workers.backfill.sinks import (
    START_OVER,
    DimsCheck,
    Position,
    checkpoint_mismatch,
    fsync_dir,
    not_named_by_checkpoint,
    os_errors,
)

__all__ = ["ParquetSink"]

_PARTS_KEY: Final = b"llm_fleet.parts"
_PART: Final = re.compile(r"^part-(\d{6,})\.parquet$")
# Bytes of vectors gathered before the merge writes a row group: few, large row groups
# read fast, and 64 MiB keeps the merge's memory small.
_ROW_GROUP_BYTES: Final = 64 * 1024 * 1024


def _pyarrow() -> tuple[Any, Any]:
    try:
        pa: ModuleType = importlib.import_module("pyarrow")
        pq: ModuleType = importlib.import_module("pyarrow.parquet")
    except ImportError:
        raise BackfillError(
            "Parquet output needs pyarrow: pip install 'llm-fleet[parquet]'"
        ) from None
    return pa, pq


def _remove(path: Path) -> None:
    with contextlib.suppress(FileNotFoundError):
        path.unlink()


class ParquetSink:
    """Columns `id: string`, `embedding: fixed_size_list<float32>[dims]`."""

    def __init__(self, path: Path) -> None:
        self.pa, self.pq = _pyarrow()
        self.path = path
        self.parts_dir = path.with_name(path.name + ".parts")
        self.description = f"{path} (Parquet)"
        self._dims = DimsCheck()
        self._parts = 0  # highest committed part
        self._merged = 0  # highest part inside the merged file
        self._ids: list[str] = []
        self._data: list[bytes] = []

    def _part(self, n: int) -> Path:
        return self.parts_dir / f"part-{n:06d}.parquet"

    def _merging(self) -> Path:
        return self.path.with_name(f".{self.path.name}.merging")

    def _part_numbers(self) -> list[int]:
        if not self.parts_dir.is_dir():
            return []
        return sorted(int(m[1]) for p in self.parts_dir.iterdir() if (m := _PART.match(p.name)))

    async def open(self, committed: Position | None) -> set[str]:
        return await asyncio.to_thread(self._open, committed)

    def _open(self, committed: Position | None) -> set[str]:
        try:
            return self._cut_back(committed)
        except (OSError, self.pa.ArrowException) as exc:
            raise checkpoint_mismatch(str(self.path), f"unreadable: {exc}") from exc

    def _cut_back(self, committed: Position | None) -> set[str]:
        if committed is None and (self.path.exists() or self._part_numbers()):
            raise not_named_by_checkpoint(str(self.path))
        if committed == START_OVER:
            _remove(self.path)
            shutil.rmtree(self.parts_dir, ignore_errors=True)
        _remove(self._merging())  # a merge a kill interrupted; its sources are all still here
        parts = (committed or {}).get("parts", 0)
        merged = self._merged_parts()
        if merged > parts:
            raise checkpoint_mismatch(str(self.path), f"holds part {merged}, beyond part {parts}")
        self._clean_parts(merged, parts)
        self._parts, self._merged = parts, merged
        ids: set[str] = set()
        sources = ([self.path] if self.path.exists() else []) + [
            self._part(n) for n in range(merged + 1, parts + 1)
        ]
        for source in sources:
            self._learn_dims(source)
            ids.update(self.pq.read_table(source, columns=["id"]).column("id").to_pylist())
        return ids

    def _merged_parts(self) -> int:
        if not self.path.exists():
            return 0
        metadata = self.pq.read_schema(self.path).metadata or {}
        if _PARTS_KEY not in metadata:
            raise checkpoint_mismatch(str(self.path), "not a file this backfill merged")
        return int(metadata[_PARTS_KEY])

    def _clean_parts(self, merged: int, parts: int) -> None:
        if self.parts_dir.is_dir():
            for p in self.parts_dir.iterdir():
                m = _PART.match(p.name)
                # Temp files, parts never recorded, and parts already inside the merged file.
                if m is None or not merged < int(m[1]) <= parts:
                    _remove(p)
            fsync_dir(self.parts_dir)
        missing = [n for n in range(merged + 1, parts + 1) if not self._part(n).exists()]
        if missing:
            raise checkpoint_mismatch(str(self.path), f"part {missing[0]} is missing")

    def _learn_dims(self, source: Path) -> None:
        dims = self.pq.read_schema(source).field("embedding").type.list_size
        if dims and self._dims.dims is None:
            self._dims.dims = int(dims)

    async def write(self, vectors: Vectors) -> None:
        self._dims.check(vectors, str(self.path))
        self._ids.extend(vectors.ids)
        self._data.append(vectors.data)

    async def commit(self) -> Position:
        if self._ids:
            ids, data = self._ids, b"".join(self._data)
            self._ids, self._data = [], []
            with os_errors(self.path):
                await asyncio.to_thread(self._write_part, self._parts + 1, ids, data)
            self._parts += 1
        return {"parts": self._parts}

    def _table(self, ids: list[str], data: bytes) -> Any:
        pa = self.pa
        dims = self._dims.dims or 0
        floats = pa.array(np.frombuffer(data, dtype="<f4"), type=pa.float32())
        embedding = pa.FixedSizeListArray.from_arrays(floats, dims)
        return pa.table({"id": pa.array(ids, type=pa.string()), "embedding": embedding})

    def _write_part(self, n: int, ids: list[str], data: bytes) -> None:
        self.parts_dir.mkdir(exist_ok=True)
        tmp = self.parts_dir / f".part-{n:06d}.tmp"
        self.pq.write_table(self._table(ids, data), tmp)
        _fsync_file(tmp)
        tmp.replace(self._part(n))
        fsync_dir(self.parts_dir)

    async def finish(self) -> None:
        if self._parts > self._merged or not self.path.exists():
            with os_errors(self.path):
                await asyncio.to_thread(self._merge)

    def _merge(self) -> None:
        sources = ([self.path] if self.path.exists() else []) + [
            self._part(n) for n in range(self._merged + 1, self._parts + 1)
        ]
        metadata = {_PARTS_KEY: str(self._parts).encode()}
        if sources:
            schema = self.pq.read_schema(sources[-1]).with_metadata(metadata)
        else:  # nothing was ever written: an empty file of the right columns
            pa = self.pa
            columns = [("id", pa.string()), ("embedding", pa.list_(pa.float32(), 0))]
            schema = pa.schema(columns, metadata=metadata)
        tmp = self._merging()
        with self.pq.ParquetWriter(tmp, schema) as writer:
            pending: list[Any] = []
            size = 0
            for source in sources:
                file = self.pq.ParquetFile(source)
                for group in range(file.num_row_groups):
                    table = file.read_row_group(group).replace_schema_metadata(metadata)
                    pending.append(table)
                    size += table.nbytes
                    if size >= _ROW_GROUP_BYTES:
                        writer.write_table(self.pa.concat_tables(pending))
                        pending, size = [], 0
            if pending:
                writer.write_table(self.pa.concat_tables(pending))
        _fsync_file(tmp)
        tmp.replace(self.path)
        fsync_dir(self.path.parent.resolve())
        self._merged = self._parts
        # A kill from here on leaves parts <= the merged file's mark: open() removes them.
        shutil.rmtree(self.parts_dir, ignore_errors=True)
        fsync_dir(self.path.parent.resolve())

    async def close(self) -> None:
        self._ids, self._data = [], []


def _fsync_file(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
