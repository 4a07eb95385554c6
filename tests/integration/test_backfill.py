"""`llm-fleet backfill` end to end: real workers, the mock provider, the command as users run it.

Every test checks the output the same way: each input id exactly once, in input
order, with the vector the mock gives for its text. The kill tests interrupt the
backfill process, a worker, or the broker while jobs are in flight, then run the
same command again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from array import array
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock
from providers.mock.text import embedding_bytes
from tests.brokers import BrokerNode
from tests.integration.conftest import MOCK_KEY, ROOT, TENANT, SpawnWorker, sealed_target
from tests.integration.test_fleet import mock_admin
from workers.crypto import Keyring

pytestmark = [pytest.mark.integration, pytest.mark.timeout(240)]

DIMS = 64  # the session mock's embed_dims
MODEL = "text-embedding-3-small"


def write_corpus(path: Path, n: int, *, prefix: str = "doc") -> list[tuple[str, str]]:
    rows = [
        (f"{prefix}-{i:05d}", f"text number {i} about queues and {prefix} {i * 7}")
        for i in range(n)
    ]
    with path.open("w") as out:
        for row_id, text in rows:
            out.write(json.dumps({"id": row_id, "text": text}) + "\n")
    return rows


def read_output(path: Path) -> list[tuple[str, bytes]]:
    rows = []
    for line in path.read_text().splitlines():
        record = json.loads(line)
        rows.append((record["id"], array("f", record["embedding"]).tobytes()))
    return rows


def assert_exactly_once(path: Path, corpus: list[tuple[str, str]], *, dims: int = DIMS) -> None:
    rows = read_output(path)
    counts = Counter(row_id for row_id, _ in rows)
    repeated = {row_id: n for row_id, n in counts.items() if n > 1}
    assert not repeated, f"ids written more than once: {list(repeated)[:10]}"
    assert [row_id for row_id, _ in rows] == [row_id for row_id, _ in corpus]
    texts = dict(corpus)
    for row_id, vector in rows:
        assert vector == embedding_bytes(texts[row_id], dims), f"wrong vector for {row_id}"


def journal_records(checkpoint: Path) -> list[dict[str, Any]]:
    records = []
    for line in checkpoint.read_text().splitlines():
        with contextlib.suppress(ValueError):  # a torn last line
            records.append(json.loads(line))
    return records


@dataclass
class Backfill:
    """`llm-fleet backfill` in a subprocess of its own, which tests may kill."""

    proc: asyncio.subprocess.Process
    sealed: str  # the credential envelope it was given (must never be echoed)

    async def wait(self, within: float = 120.0) -> tuple[int, str]:
        stdout, _ = await asyncio.wait_for(self.proc.communicate(), within)
        assert self.proc.returncode is not None
        return self.proc.returncode, stdout.decode(errors="replace")


StartBackfill = Callable[..., Awaitable[Backfill]]


@pytest.fixture
async def start_backfill(
    amqp_url: str, vault_db: str, keyring: Keyring
) -> AsyncIterator[StartBackfill]:
    procs: list[Backfill] = []

    async def start(*args: str, broker_url: str | None = None, model: str = MODEL) -> Backfill:
        target = sealed_target(keyring, model=model, tenant=TENANT)
        assert target.credential.sealed is not None
        env = {
            **os.environ,
            "AMQP_URL": broker_url or amqp_url,
            "DATABASE_URL": vault_db,
            "FLEET_SEALED_CREDENTIAL": target.credential.sealed,
            "PYTHONPATH": str(ROOT),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "workers.cli",
            "backfill",
            "--provider",
            "mock",
            "--model",
            model,
            *args,
            env=env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        backfill = Backfill(proc, target.credential.sealed)
        procs.append(backfill)
        return backfill

    yield start
    for backfill in procs:
        if backfill.proc.returncode is None:
            backfill.proc.kill()
            await backfill.proc.wait()


async def rows_committed(checkpoint: Path, output: Path, at_least: int, within: float = 60) -> None:
    """Wait until the output holds `at_least` rows and the journal has a commit line."""
    give_up = time.monotonic() + within
    while not _committed_rows(checkpoint, output, at_least):
        assert time.monotonic() < give_up, "the backfill wrote nothing in time"
        await asyncio.sleep(0.05)


def _committed_rows(checkpoint: Path, output: Path, at_least: int) -> bool:
    if not (checkpoint.exists() and output.exists()):
        return False
    commits = [r for r in journal_records(checkpoint) if "c" in r]
    return bool(commits) and output.read_text().count("\n") >= at_least


def read_refused(output: Path) -> list[dict[str, str]]:
    path = Path(str(output) + ".checkpoint.refused.jsonl")
    return [json.loads(line) for line in path.read_text().splitlines()]


def committed_ids(checkpoint: Path, output: Path) -> set[str]:
    """Ids the journal's last commit line covers (the rows before its byte position)."""
    commits = [r for r in journal_records(checkpoint) if r.get("c")]
    if not commits:
        return set()
    end = commits[-1]["c"]["bytes"]
    data = output.read_bytes()[:end]
    return {json.loads(line)["id"] for line in data.splitlines()}


def sent_ids_after(checkpoint: Path, offset: int) -> list[str]:
    data = checkpoint.read_bytes()[offset:]
    ids: list[str] = []
    for line in data.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if "s" in record:
            ids.extend(record["ids"])
    return ids


async def embeddings_requests(mock: RunningMock) -> int:
    stats = await mock_admin(mock, "GET", "/_mock/stats")
    return sum(n for route, n in stats["requests"].items() if route.endswith("/embeddings"))


class TestEndToEnd:
    async def test_jsonl_in_input_order_then_rerun_is_a_no_op(
        self,
        spawn_worker: SpawnWorker,
        start_backfill: StartBackfill,
        tmp_path: Path,
        mock: RunningMock,
    ) -> None:
        await spawn_worker()
        corpus = write_corpus(tmp_path / "in.jsonl", 300)
        out = tmp_path / "out.jsonl"
        args = (
            "--input",
            str(tmp_path / "in.jsonl"),
            "--output",
            str(out),
            "--batch-size",
            "16",
            "--no-cache",
        )
        code, text = await (await start_backfill(*args)).wait()
        assert code == 0, text
        assert "backfill complete" in text
        assert_exactly_once(out, corpus)
        before = await embeddings_requests(mock)
        code, text = await (await start_backfill(*args)).wait()
        assert code == 0, text
        assert "300" in text and await embeddings_requests(mock) == before
        assert_exactly_once(out, corpus)

    async def test_content_cache_serves_a_second_backfill(
        self,
        spawn_worker: SpawnWorker,
        start_backfill: StartBackfill,
        tmp_path: Path,
        mock: RunningMock,
    ) -> None:
        await spawn_worker()
        corpus = write_corpus(tmp_path / "in.jsonl", 120, prefix=uuid.uuid4().hex[:8])
        first, second = tmp_path / "one.jsonl", tmp_path / "two.jsonl"
        code, text = await (
            await start_backfill("--input", str(tmp_path / "in.jsonl"), "--output", str(first))
        ).wait()
        assert code == 0, text
        before = await embeddings_requests(mock)
        code, text = await (
            await start_backfill("--input", str(tmp_path / "in.jsonl"), "--output", str(second))
        ).wait()
        assert code == 0, text
        assert await embeddings_requests(mock) == before, "cached texts were embedded again"
        assert "120 from the cache" in text
        assert_exactly_once(second, corpus)


class TestRefusals:
    async def test_one_failing_chunk_is_split_not_refused(
        self,
        spawn_worker: SpawnWorker,
        start_backfill: StartBackfill,
        tmp_path: Path,
        mock: RunningMock,
    ) -> None:
        await spawn_worker()
        model = f"mock-embed-{uuid.uuid4().hex[:6]}"
        await mock_admin(mock, "POST", "/_mock/faults", {"spec": "400", "times": 1, "model": model})
        corpus = write_corpus(tmp_path / "in.jsonl", 16)
        out = tmp_path / "out.jsonl"
        before = await embeddings_requests(mock)
        code, text = await (
            await start_backfill(
                "--input",
                str(tmp_path / "in.jsonl"),
                "--output",
                str(out),
                "--batch-size",
                "16",
                "--no-cache",
                model=model,
            )
        ).wait()
        assert code == 0, text
        assert_exactly_once(out, corpus)
        # The refused 16, then its two halves of 8.
        assert await embeddings_requests(mock) - before == 3

    async def test_a_text_the_provider_refuses_is_listed_and_not_retried(
        self,
        spawn_worker: SpawnWorker,
        start_backfill: StartBackfill,
        tmp_path: Path,
        mock: RunningMock,
    ) -> None:
        await spawn_worker()
        model = f"mock-embed-{uuid.uuid4().hex[:6]}"
        # The first text's own job (batch size 1) is refused; every other job succeeds.
        await mock_admin(mock, "POST", "/_mock/faults", {"spec": "400", "times": 1, "model": model})
        corpus = write_corpus(tmp_path / "in.jsonl", 5)
        out = tmp_path / "out.jsonl"
        args = (
            "--input",
            str(tmp_path / "in.jsonl"),
            "--output",
            str(out),
            "--batch-size",
            "1",
            "--max-in-flight",
            "1",
            "--no-cache",
        )
        code, text = await (await start_backfill(*args, model=model)).wait()
        assert code == 0, text
        refused = read_refused(out)
        assert [r["id"] for r in refused] == [corpus[0][0]]
        assert refused[0]["code"] == "bad_request"
        assert_exactly_once(out, corpus[1:])
        before = await embeddings_requests(mock)
        code, text = await (await start_backfill(*args, model=model)).wait()
        assert code == 0 and await embeddings_requests(mock) == before, text

    async def test_bad_rows_are_listed_with_their_line(
        self, spawn_worker: SpawnWorker, start_backfill: StartBackfill, tmp_path: Path
    ) -> None:
        await spawn_worker()
        source = tmp_path / "in.jsonl"
        source.write_bytes(
            b'{"id": "a", "text": "fine"}\n'
            b"\xff\xfe not utf-8\n"
            b'{"id": "b"}\n'
            b'{"id": "c", "text": "   "}\n'
            b'{"id": "d", "text": "also fine"}\n'
        )
        out = tmp_path / "out.jsonl"
        code, text = await (
            await start_backfill("--input", str(source), "--output", str(out), "--no-cache")
        ).wait()
        assert code == 0, text
        assert [row_id for row_id, _ in read_output(out)] == ["a", "d"]
        refused = {r["id"]: r for r in read_refused(out)}
        assert refused["b"]["code"] == "bad_row" and refused["c"]["code"] == "empty_text"
        assert any("line 2" in r["reason"] for r in refused.values())


def paced_run(tmp_path: Path, n: int) -> tuple[list[tuple[str, str]], Path, Path, tuple[str, ...]]:
    """A corpus of `n` texts and the arguments of a backfill slow enough to interrupt:
    1,200 requests/min of 5 texts (400 texts: about 4 s of work)."""
    corpus = write_corpus(tmp_path / "in.jsonl", n)
    out = tmp_path / "out.jsonl"
    args = ("--input", str(tmp_path / "in.jsonl"), "--output", str(out), "--batch-size", "5",
            "--rpm", "1200", "--no-cache")  # fmt: skip
    return corpus, out, tmp_path / "out.jsonl.checkpoint", args


class TestKills:
    """Kill something mid-run, run the same command again: every id exactly once."""

    async def test_backfill_process_killed(
        self, spawn_worker: SpawnWorker, start_backfill: StartBackfill, tmp_path: Path
    ) -> None:
        await spawn_worker()
        corpus, out, checkpoint, args = paced_run(tmp_path, 400)
        first = await start_backfill(*args)
        await rows_committed(checkpoint, out, 120)
        first.proc.kill()
        await first.proc.wait()
        done_before = committed_ids(checkpoint, out)
        offset = checkpoint.stat().st_size
        assert 0 < len(done_before) < 400
        code, text = await (await start_backfill(*args)).wait()
        assert code == 0, text
        assert_exactly_once(out, corpus)
        again = set(sent_ids_after(checkpoint, offset)) & done_before
        assert not again, f"ids already written were embedded again: {sorted(again)[:5]}"

    async def test_ctrl_c_stops_cleanly_and_says_how_to_resume(
        self, spawn_worker: SpawnWorker, start_backfill: StartBackfill, tmp_path: Path
    ) -> None:
        await spawn_worker()
        corpus, out, checkpoint, args = paced_run(tmp_path, 300)
        first = await start_backfill(*args)
        await rows_committed(checkpoint, out, 50)
        first.proc.send_signal(signal.SIGINT)
        code, text = await first.wait()
        assert code == 130, text
        assert "Resume with the same command" in text and "llm-fleet backfill" in text
        for where in (text, checkpoint.read_text(), out.read_text()):
            assert first.sealed not in where and first.sealed[-40:] not in where
        code, text = await (await start_backfill(*args)).wait()
        assert code == 0, text
        assert_exactly_once(out, corpus)

    async def test_worker_killed(
        self, spawn_worker: SpawnWorker, start_backfill: StartBackfill, tmp_path: Path
    ) -> None:
        victim = await spawn_worker()
        await spawn_worker()
        corpus, out, checkpoint, args = paced_run(tmp_path, 400)
        backfill = await start_backfill(*args)
        await rows_committed(checkpoint, out, 100)
        victim.signal(signal.SIGKILL)
        code, text = await backfill.wait()
        assert code == 0, text
        assert_exactly_once(out, corpus)

    @pytest.mark.timeout(400)
    async def test_broker_restarted(
        self,
        spawn_worker: SpawnWorker,
        start_backfill: StartBackfill,
        private_broker: BrokerNode,
        tmp_path: Path,
    ) -> None:
        url = private_broker.url
        await spawn_worker(broker_url=url)
        corpus, out, checkpoint, args = paced_run(tmp_path, 400)
        backfill = await start_backfill(*args, broker_url=url)
        await rows_committed(checkpoint, out, 100)
        await asyncio.to_thread(private_broker.stop)
        await asyncio.sleep(1.0)
        await asyncio.to_thread(private_broker.start)
        code, text = await backfill.wait(within=240)
        assert code == 0, text
        assert_exactly_once(out, corpus)


class TestOtherShapes:
    async def test_postgres_query_to_table_then_rerun_is_a_no_op(
        self,
        spawn_worker: SpawnWorker,
        start_backfill: StartBackfill,
        vault_db: str,
        mock: RunningMock,
    ) -> None:
        await spawn_worker()
        table = f"docs_{uuid.uuid4().hex[:8]}"
        conn = await asyncpg.connect(vault_db)
        try:
            await conn.execute(f"CREATE TABLE {table} (doc_id integer, body text)")
            # Inserted out of order: the backfill reads ordered by the id column.
            await conn.executemany(
                f"INSERT INTO {table} VALUES ($1, $2)",
                [(i, f"body of document {i}") for i in reversed(range(60))],
            )
            args = (
                "--query", f"SELECT doc_id, body FROM {table}",
                "--id-field", "doc_id", "--text-field", "body",
                "--output-table", f"{table}_emb", "--vector-type", "real[]",
                "--batch-size", "7", "--checkpoint", f"/tmp/{table}.checkpoint", "--no-cache",
            )  # fmt: skip
            code, text = await (await start_backfill(*args)).wait()
            assert code == 0, text
            rows = await conn.fetch(f"SELECT id, embedding FROM {table}_emb")
            assert sorted(int(r["id"]) for r in rows) == list(range(60))
            for r in rows:
                expected = embedding_bytes(f"body of document {r['id']}", DIMS)
                assert array("f", r["embedding"]).tobytes() == expected
            before = await embeddings_requests(mock)
            code, text = await (await start_backfill(*args)).wait()
            assert code == 0 and "nothing left to do" in text, text
            assert await embeddings_requests(mock) == before
        finally:
            await conn.execute(f"DROP TABLE IF EXISTS {table}, {table}_emb")
            await conn.close()

    async def test_parquet_keyed_by_id(
        self, spawn_worker: SpawnWorker, start_backfill: StartBackfill, tmp_path: Path
    ) -> None:
        import pyarrow.parquet as pq

        await spawn_worker()
        corpus = write_corpus(tmp_path / "in.jsonl", 90)
        out = tmp_path / "out.parquet"
        code, text = await (await start_backfill(
            "--input", str(tmp_path / "in.jsonl"), "--output", str(out), "--order", "arrival",
            "--batch-size", "8", "--no-cache",
        )).wait()  # fmt: skip
        assert code == 0, text
        table = pq.read_table(out).to_pydict()
        assert sorted(table["id"]) == sorted(row_id for row_id, _ in corpus)
        texts = dict(corpus)
        for row_id, vector in zip(table["id"], table["embedding"], strict=True):
            assert array("f", vector).tobytes() == embedding_bytes(texts[row_id], DIMS)


class TestRateLimits:
    async def test_a_provider_that_refuses_past_its_limit_is_waited_for(
        self, spawn_worker: SpawnWorker, start_backfill: StartBackfill, tmp_path: Path
    ) -> None:
        """Told a pace fifty times what the provider allows, the backfill meets 429s once the
        provider's minute of budget is spent: it pauses as told, slows down, and still writes
        every id once."""
        limited = await start_mock(
            MockConfig(api_keys=frozenset({MOCK_KEY}), embed_dims=DIMS, requests_per_minute=600)
        )
        try:
            await spawn_worker(env={"FLEET_PROVIDER_URLS": f"mock={limited.base_url}"})
            corpus = write_corpus(tmp_path / "in.jsonl", 700)
            out = tmp_path / "out.jsonl"
            code, text = await (await start_backfill(
                "--input", str(tmp_path / "in.jsonl"), "--output", str(out), "--batch-size", "1",
                "--rpm", "30000", "--no-cache",
            )).wait(within=200)  # fmt: skip
            assert code == 0, text
            assert_exactly_once(out, corpus)
            assert "rate limited by the provider" in text
            assert "(rate limited 0)" not in text
        finally:
            await limited.close()
