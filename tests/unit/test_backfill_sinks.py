"""Backfill file sinks (JSON lines, NumPy, Parquet): order, exact values, dims, and cutting
back to a checkpoint after a kill. The PostgreSQL sink is an integration test
(tests/integration/test_backfill_postgres_io.py)."""

from __future__ import annotations

import importlib
import json
import shutil
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from workers.backfill.items import BackfillError, Vectors
from workers.backfill.sinks import START_OVER, OutputSpec, Sink, open_sink

pq: Any = pytest.importorskip("pyarrow.parquet", reason="the parquet extra is not installed")

FORMATS = ["jsonl", "npy", "parquet"]
FP = {"provider": "mock", "model": "m", "dimensions": "default", "input_type": ""}


def batch(ids: list[str], dims: int = 4, seed: int = 0) -> Vectors:
    rng = np.random.default_rng(seed)
    data = rng.standard_normal((len(ids), dims)).astype("<f4")
    return Vectors(tuple(ids), dims, data.tobytes())


def matrix(*batches: Vectors) -> np.ndarray[Any, np.dtype[np.float32]]:
    return np.concatenate(
        [np.frombuffer(b.data, dtype="<f4").reshape(len(b.ids), b.dims) for b in batches]
    )


def output_path(tmp_path: Path, fmt: str) -> Path:
    return tmp_path / f"out.{fmt}"


def sink_for(path: Path) -> Sink:
    return open_sink(OutputSpec(path=str(path)), FP)


def read_output(path: Path) -> tuple[list[str], np.ndarray[Any, np.dtype[np.float32]]]:
    """The finished output as (ids, float32 matrix), read the way a user would."""
    if path.suffix == ".jsonl":
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        return [r["id"] for r in rows], np.array([r["embedding"] for r in rows], dtype="<f4")
    if path.suffix == ".npy":
        ids_file = path.with_name(path.stem + ".ids.jsonl")
        ids = [json.loads(line) for line in ids_file.read_text().splitlines()]
        return ids, np.load(path)
    table = pq.read_table(path)
    embeddings = table.column("embedding").to_pylist()
    return table.column("id").to_pylist(), np.array(embeddings, dtype="<f4")


async def finished(path: Path, *batches: Vectors, committed: dict[str, int] | None = None) -> None:
    sink = sink_for(path)
    await sink.open(committed)
    for b in batches:
        await sink.write(b)
    await sink.commit()
    await sink.finish()
    await sink.close()


@pytest.mark.parametrize("fmt", FORMATS)
async def test_rows_keep_write_order_and_exact_values(tmp_path: Path, fmt: str) -> None:
    path = output_path(tmp_path, fmt)
    a, b, c = batch(["z", "a"], seed=1), batch(["m"], seed=2), batch(["b", "y", "c"], seed=3)
    sink = sink_for(path)
    assert await sink.open(None) == set()
    await sink.write(a)
    await sink.commit()
    await sink.write(b)
    await sink.write(c)
    await sink.commit()
    await sink.finish()
    await sink.close()
    ids, values = read_output(path)
    assert ids == ["z", "a", "m", "b", "y", "c"]
    assert values.dtype == np.float32
    assert np.array_equal(values, matrix(a, b, c))  # bit for bit: no rounding on the way


@pytest.mark.parametrize("fmt", FORMATS)
async def test_other_dims_are_refused(tmp_path: Path, fmt: str) -> None:
    path = output_path(tmp_path, fmt)
    sink = sink_for(path)
    await sink.open(None)
    await sink.write(batch(["a"], dims=4))
    with pytest.raises(BackfillError, match="holds vectors of 4 dimensions; new vectors have 5"):
        await sink.write(batch(["b"], dims=5))
    with pytest.raises(BackfillError, match="cannot be 12 bytes"):
        await sink.write(Vectors(("c",), 4, b"\0" * 12))
    position = await sink.commit()
    await sink.close()
    # The dimensions of committed rows bind the next run too.
    again = sink_for(path)
    await again.open(position)
    with pytest.raises(BackfillError, match="holds vectors of 4 dimensions"):
        await again.write(batch(["d"], dims=3))
    await again.close()


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_kill_after_commit_is_cut_back_to_the_checkpoint(tmp_path: Path, fmt: str) -> None:
    path = output_path(tmp_path, fmt)
    a, b, c, d = (batch([f"{k}{i}" for i in range(3)], seed=s) for s, k in enumerate("abcd"))
    sink = sink_for(path)
    await sink.open(None)
    await sink.write(a)
    recorded = await sink.commit()  # the journal recorded this position...
    await sink.write(b)
    await sink.commit()  # ...but not this one: the run died before its journal line
    await sink.write(c)  # nor this write, never committed
    await sink.close()

    rerun = sink_for(path)
    assert await rerun.open(recorded) == {"a0", "a1", "a2"}
    await rerun.write(d)
    await rerun.commit()
    await rerun.finish()
    await rerun.close()
    ids, values = read_output(path)
    assert ids == ["a0", "a1", "a2", "d0", "d1", "d2"]
    assert np.array_equal(values, matrix(a, d))


@pytest.mark.parametrize("fmt", FORMATS)
async def test_reopen_after_commit_names_exactly_the_committed_ids(
    tmp_path: Path, fmt: str
) -> None:
    path = output_path(tmp_path, fmt)
    sink = sink_for(path)
    await sink.open(None)
    positions = []
    for n in range(3):
        await sink.write(batch([f"id-{n}-{i}" for i in range(n + 1)], seed=n))
        positions.append(await sink.commit())
    await sink.close()
    # Newest first: opening at a position cuts off everything after it.
    for n, position in reversed(list(enumerate(positions))):
        again = sink_for(path)
        expected = {f"id-{k}-{i}" for k in range(n + 1) for i in range(k + 1)}
        assert await again.open(position) == expected
        await again.close()


@pytest.mark.parametrize("fmt", FORMATS)
async def test_an_output_no_checkpoint_names_is_refused(tmp_path: Path, fmt: str) -> None:
    path = output_path(tmp_path, fmt)
    await finished(path, batch(["a"]))
    with pytest.raises(BackfillError, match="exists and no checkpoint names it"):
        await sink_for(path).open(None)
    assert read_output(path)[0] == ["a"]  # untouched


@pytest.mark.parametrize("fmt", FORMATS)
async def test_start_over_empties_the_output(tmp_path: Path, fmt: str) -> None:
    path = output_path(tmp_path, fmt)
    await finished(path, batch(["a", "b"], dims=8))
    fresh = batch(["c"], dims=3)  # starting over frees the dimensions too
    await finished(path, fresh, committed=START_OVER)
    ids, values = read_output(path)
    assert ids == ["c"]
    assert np.array_equal(values, matrix(fresh))


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_checkpoint_beyond_the_output_is_refused(tmp_path: Path, fmt: str) -> None:
    path = output_path(tmp_path, fmt)
    sink = sink_for(path)
    await sink.open(None)
    await sink.write(batch(["a"]))
    position = await sink.commit()
    await sink.close()
    ahead = {k: v + 1 for k, v in position.items()}
    with pytest.raises(BackfillError, match="does not match its checkpoint"):
        await sink_for(path).open(ahead)


@pytest.mark.parametrize("fmt", FORMATS)
async def test_a_checkpoint_naming_a_missing_output_is_refused(tmp_path: Path, fmt: str) -> None:
    path = output_path(tmp_path, fmt)
    position = {"jsonl": {"bytes": 10, "rows": 1}, "npy": {"rows": 1, "id_bytes": 4}}
    sink = sink_for(path)
    with pytest.raises(BackfillError, match="does not match its checkpoint"):
        await sink.open(position.get(fmt, {"parts": 2}))
    await sink.close()


@pytest.mark.parametrize("fmt", FORMATS)
async def test_os_errors_are_backfill_errors(tmp_path: Path, fmt: str) -> None:
    path = tmp_path / "no-such-dir" / f"out.{fmt}"
    sink = sink_for(path)
    with pytest.raises(BackfillError, match="No such file or directory"):
        await sink.open(None)  # the file sinks create their files here...
        await sink.write(batch(["a"]))
        await sink.commit()  # ...Parquet its first part here
    await sink.close()


def test_spec_format_and_errors(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    assert OutputSpec(path="o.NPY").describe() == {"path": str(tmp_path / "o.NPY"), "format": "npy"}
    assert OutputSpec(path="o.vec", format="jsonl").resolved_format() == "jsonl"
    assert OutputSpec(table="s.t", dsn="postgresql://u:pw@h/d").describe() == {
        "table": "s.t",
        "dsn": "postgresql://u@h/d",
        "vector_type": "auto",
    }
    with pytest.raises(BackfillError, match="cannot tell the format"):
        OutputSpec(path="o.txt").resolved_format()
    with pytest.raises(BackfillError, match="exactly one output"):
        OutputSpec(path="o.jsonl", table="t").resolved_format()
    with pytest.raises(BackfillError, match="needs a PostgreSQL DSN"):
        OutputSpec(table="t").resolved_format()


# -- JSON lines ----------------------------------------------------------------------------


async def test_jsonl_lines_and_positions(tmp_path: Path) -> None:
    path = tmp_path / "out.jsonl"
    sink = sink_for(path)
    await sink.open(None)
    await sink.write(Vectors(("a",), 2, np.array([0.1, -2.5], dtype="<f4").tobytes()))
    position = await sink.commit()
    await sink.close()
    text = path.read_text()
    assert position == {"bytes": len(text.encode()), "rows": 1}
    row = json.loads(text)
    assert row["id"] == "a"
    # Each number reads back as exactly the float32 that was sent.
    assert np.float32(row["embedding"][0]) == np.float32(0.1)
    assert row["embedding"][0] == float(np.float32(0.1))


# -- NumPy ---------------------------------------------------------------------------------


async def test_npy_loads_after_every_commit_and_after_a_kill(tmp_path: Path) -> None:
    path = tmp_path / "out.npy"
    a, b, c = batch(["a"], seed=1), batch(["b", "b2"], seed=2), batch(["c"], seed=3)
    sink = sink_for(path)
    await sink.open(None)
    await sink.write(a)
    first = await sink.commit()
    assert first == {"rows": 1, "id_bytes": 4}
    assert np.array_equal(np.load(path), matrix(a))
    await sink.write(b)  # written, not committed: readers still see the committed rows
    assert np.array_equal(np.load(path), matrix(a))
    assert np.array_equal(np.load(path, mmap_mode="r"), matrix(a))
    await sink.commit()
    assert np.array_equal(np.load(path, mmap_mode="r"), matrix(a, b))
    await sink.write(c)
    await sink.close()  # killed with rows past the header's shape

    assert np.load(path).shape == (3, 4)
    rerun = sink_for(path)
    assert await rerun.open(first) == {"a"}
    assert np.array_equal(np.load(path), matrix(a))
    assert (tmp_path / "out.ids.jsonl").read_text() == '"a"\n'
    await rerun.close()


async def test_npy_without_rows_is_still_an_array(tmp_path: Path) -> None:
    path = tmp_path / "out.npy"
    sink = sink_for(path)
    await sink.open(None)
    await sink.commit()
    await sink.finish()
    await sink.close()
    assert np.load(path).shape == (0, 0)


async def test_npy_not_written_by_a_backfill_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "out.npy"
    np.save(path, np.zeros((2, 4), dtype="<f8"))
    (tmp_path / "out.ids.jsonl").write_text('"a"\n"b"\n')
    with pytest.raises(BackfillError, match="not an array this backfill wrote"):
        await sink_for(path).open({"rows": 2, "id_bytes": 8})


# -- Parquet -------------------------------------------------------------------------------


async def test_parquet_parts_while_running_one_file_at_the_end(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    parts = tmp_path / "out.parquet.parts"
    sink = sink_for(path)
    await sink.open(None)
    await sink.write(batch(["a"]))
    assert await sink.commit() == {"parts": 1}
    assert await sink.commit() == {"parts": 1}  # nothing new: no empty part
    await sink.write(batch(["b"]))
    assert await sink.commit() == {"parts": 2}
    assert sorted(p.name for p in parts.iterdir()) == ["part-000001.parquet", "part-000002.parquet"]
    assert pq.read_table(parts / "part-000002.parquet").column("id").to_pylist() == ["b"]
    assert not path.exists()
    await sink.finish()
    await sink.close()
    assert not parts.exists()
    schema = pq.read_schema(path)
    assert str(schema.field("id").type) == "string"
    assert schema.field("embedding").type.list_size == 4
    assert str(schema.field("embedding").type.value_type) == "float"
    assert read_output(path)[0] == ["a", "b"]


async def test_parquet_incremental_rerun_after_finish(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    a, b, c = batch(["a"], seed=1), batch(["b"], seed=2), batch(["c"], seed=3)
    sink = sink_for(path)
    await sink.open(None)
    await sink.write(a)
    await sink.commit()
    await sink.write(b)
    position = await sink.commit()
    await sink.finish()
    await sink.close()

    rerun = sink_for(path)
    assert await rerun.open(position) == {"a", "b"}
    await rerun.write(c)
    assert await rerun.commit() == {"parts": 3}
    await rerun.finish()
    await rerun.close()
    ids, values = read_output(path)
    assert ids == ["a", "b", "c"]
    assert np.array_equal(values, matrix(a, b, c))


async def test_parquet_kill_inside_finish(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    parts = tmp_path / "out.parquet.parts"
    a, b = batch(["a"], seed=1), batch(["b"], seed=2)
    sink = sink_for(path)
    await sink.open(None)
    await sink.write(a)
    await sink.commit()
    await sink.write(b)
    position = await sink.commit()
    shutil.copytree(parts, tmp_path / "saved")
    await sink.finish()
    await sink.close()
    # Killed after the merged file's rename, before the parts were removed, and with the
    # temp file of a later merge lying about.
    shutil.copytree(tmp_path / "saved", parts)
    (tmp_path / ".out.parquet.merging").write_bytes(b"half a file")

    rerun = sink_for(path)
    assert await rerun.open(position) == {"a", "b"}
    assert not parts.exists() or not any(parts.iterdir())
    assert not (tmp_path / ".out.parquet.merging").exists()
    await rerun.finish()
    await rerun.close()
    ids, values = read_output(path)
    assert ids == ["a", "b"]
    assert np.array_equal(values, matrix(a, b))


async def test_parquet_kill_before_the_merge(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    a, b = batch(["a"], seed=1), batch(["b"], seed=2)
    sink = sink_for(path)
    await sink.open(None)
    await sink.write(a)
    position = await sink.commit()
    await sink.write(b)
    await sink.commit()
    await sink.close()
    (tmp_path / "out.parquet.parts" / ".part-000003.tmp").write_bytes(b"torn")

    rerun = sink_for(path)
    assert await rerun.open(position) == {"a"}
    parts = sorted(p.name for p in (tmp_path / "out.parquet.parts").iterdir())
    assert parts == ["part-000001.parquet"]
    await rerun.finish()
    await rerun.close()
    assert read_output(path)[0] == ["a"]


async def test_parquet_merged_beyond_its_checkpoint_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    await finished(path, batch(["a"]))
    with pytest.raises(BackfillError, match="beyond part 0"):
        await sink_for(path).open({"parts": 0})


async def test_parquet_without_rows_is_still_a_table(tmp_path: Path) -> None:
    path = tmp_path / "out.parquet"
    await finished(path)
    table = pq.read_table(path)
    assert table.num_rows == 0
    assert table.column_names == ["id", "embedding"]


def test_parquet_without_pyarrow_says_what_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importlib.import_module

    def without_pyarrow(name: str, package: str | None = None) -> Any:
        if name.startswith("pyarrow"):
            raise ImportError(name)
        return real(name, package)

    monkeypatch.setattr(importlib, "import_module", without_pyarrow)
    with pytest.raises(BackfillError, match=r"pip install 'llm-fleet\[parquet\]'"):
        sink_for(tmp_path / "out.parquet")
