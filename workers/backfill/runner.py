"""One backfill run: read, batch, pace, send, collect, write, checkpoint.

Four tasks share one event loop:

- the reader takes rows from the input, skips ids already done, serves texts the
  content cache knows, and groups the rest into provider-sized chunks;
- the sender publishes chunks to `llm.batch` as fast as the pacer allows
  (answers to failed chunks, sent again, go before new ones);
- the receiver takes answers from the backfill's durable reply queue and hands
  their vectors to the output in the order asked for;
- the committer makes the output durable about once a second, then records that
  in the journal, and only then acknowledges the reply messages it wrote.

So at any moment the output, the journal and the reply queue agree: a kill at
any point leaves answers either committed (and skipped on the rerun) or still in
the reply queue, or jobs still on their way (named in the journal, so the rerun
waits for their answers instead of paying for them twice).

Jobs say `wait_on_rate_limit=False`: a worker answers a 429 at once instead of
sleeping on one of its slots, and the pacer here waits instead, for every chunk.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
import signal
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import asyncpg
import msgspec

from contracts.client import FleetClient, Receipt
from contracts.codes import ErrorCode
from contracts.errors import FleetError
from contracts.frames import Error, Final
from contracts.jobs import EmbedJob, Target
from workers.backfill.batching import Batcher, BatchLimits, Chunk
from workers.backfill.cache import EmbeddingCache, NoCache, cache_key, open_cache
from workers.backfill.inputs import InputSource, InputSpec, open_input
from workers.backfill.items import BackfillError, BadRow, Item, Rejection, Vectors
from workers.backfill.journal import Journal, JournalState
from workers.backfill.ordering import Outcome, OutputOrder, make_order
from workers.backfill.pacing import Pacer
from workers.backfill.progress import Progress
from workers.backfill.sinks import START_OVER, OutputSpec, Sink, open_sink
from workers.backfill.tokens import TokenEstimator

__all__ = ["BackfillReport", "BackfillSettings", "fingerprint_of", "run_backfill"]

log = logging.getLogger(__name__)

# Errors that say the whole run cannot succeed as configured: stop and tell the user.
_FATAL: frozenset[str] = frozenset(
    {ErrorCode.UNAUTHORIZED, ErrorCode.FORBIDDEN, ErrorCode.NOT_FOUND, ErrorCode.QUOTA_EXCEEDED}
)
# Errors about what was sent: split the chunk until the one text to blame is alone.
_BLAME_THE_TEXT: frozenset[str] = frozenset(
    {ErrorCode.BAD_REQUEST, ErrorCode.CONTENT_FILTERED, ErrorCode.INTERNAL}
)
_CACHE_LOOKUP_BATCH = 256
_NOTED_PAUSES = 20  # rate-limit pauses told on the console (all are counted)
_OLD_ANSWER_GRACE = 30.0  # seconds past a job's deadline before its answer is given up


@dataclass(frozen=True, slots=True)
class BackfillSettings:
    amqp_url: str
    target: Target
    input: InputSpec
    output: OutputSpec
    checkpoint: Path
    dimensions: int | None = None
    input_type: str | None = None
    order: Literal["input", "arrival"] = "input"
    limits: BatchLimits = field(default_factory=lambda: BatchLimits(max_inputs=96))
    long_texts: Literal["truncate", "refuse"] = "refuse"
    requests_per_minute: float | None = None
    tokens_per_minute: float | None = None
    max_in_flight: int = 64
    # Items read but not yet written, at most: bounds memory (and what input order holds back).
    window: int = 20_000
    cache_dsn: str | None = None
    # False: a cache that cannot be opened (no database, not migrated) is skipped with a note.
    cache_required: bool = False
    job_timeout: float = 600.0
    max_attempts: int = 6  # per chunk, for failures other than rate limits
    commit_interval: float = 1.0
    restart: bool = False
    worker_users: tuple[str, ...] = ("llm-fleet-worker",)


@dataclass(slots=True)
class BackfillReport:
    total: int | None = None  # rows in the input
    already_done: int = 0  # ids committed by earlier runs
    written: int = 0  # rows written by this run (cache hits included)
    cached: int = 0
    refused: int = 0  # rejections recorded by this run
    refused_total: int = 0  # all rejections in the journal
    failed: int = 0  # gave up after max_attempts: not written, retried by the next run
    duplicates: int = 0
    truncated: int = 0  # texts embedded from their beginning (--long-texts truncate)
    retries: int = 0
    rate_limited: int = 0
    tokens: int = 0
    cost_usd: float | None = 0.0
    seconds: float = 0.0
    complete: bool = False
    stopped: bool = False
    rejected_file: Path | None = None
    output: str = ""


@dataclass(slots=True)
class _Sent:
    chunk: Chunk
    attempt: int
    deadline: float  # loop time after which the answer is given up and the chunk sent again


def fingerprint_of(settings: BackfillSettings) -> dict[str, str]:
    """What must not change between runs of one backfill (never a secret)."""
    credential = settings.target.credential
    return {
        "provider": settings.target.provider,
        "model": settings.target.model,
        "dimensions": str(settings.dimensions) if settings.dimensions else "default",
        "input_type": settings.input_type or "",
        "credential": credential.id if credential.id is not None else "sealed",
        "order": settings.order,
        "output": repr(sorted(settings.output.describe().items())),
        "input": repr(sorted(settings.input.describe().items())),
    }


async def run_backfill(
    settings: BackfillSettings, progress: Progress | None = None
) -> BackfillReport:
    """Run (or resume) a backfill to the end, or until interrupted (then
    `report.stopped`, after a clean checkpoint). Raises BackfillError for what the
    user must fix."""
    run = _Run(settings, progress)
    return await run.main()


class _Run:
    def __init__(self, settings: BackfillSettings, progress: Progress | None) -> None:
        self.s = settings
        self.report = BackfillReport()
        self.progress_override = progress
        self.estimator = TokenEstimator()
        self.batcher = Batcher(settings.limits, self.estimator, long_texts=settings.long_texts)
        self.pacer = Pacer(
            requests_per_minute=settings.requests_per_minute,
            tokens_per_minute=settings.tokens_per_minute,
            max_in_flight=settings.max_in_flight,
        )
        self.order: OutputOrder = make_order(settings.order)
        self.lock = asyncio.Lock()  # the sink, the journal and what waits for a commit
        self.window = asyncio.Semaphore(settings.window)
        self.queue: asyncio.PriorityQueue[tuple[int, int, Chunk, int]] = asyncio.PriorityQueue()
        self.seq = itertools.count()
        self.inflight: dict[str, _Sent] = {}
        self.tickets: dict[str, int] = {}  # id -> open ticket
        self.done: set[str] = set()
        self.seen: set[str] = set()
        # Jobs a previous run sent whose answers are still to come (rid -> ids), the ids'
        # rids, items of theirs read meanwhile, and answers that came before their rows.
        self.old: dict[str, tuple[str, ...]] = {}
        self.old_rid_of: dict[str, str] = {}
        self.parked: dict[str, Item] = {}
        self.early: dict[str, Outcome] = {}
        self.old_deadline = 0.0
        # Since the last commit.
        self.settled_rids: list[str] = []
        self.rejections: list[Rejection] = []
        self.receipts: list[Receipt] = []
        self.cache_entries: list[tuple[bytes, int, bytes]] = []
        self.written_since_commit = 0
        self.reading_done = False
        self.all_done = asyncio.Event()
        self.stop = asyncio.Event()
        self.fatal: BaseException | None = None
        self.cost_unknown = False
        self.refused_now: list[Rejection] = []
        self.cache_note = ""
        # Set in main().
        self.journal: Journal
        self.state: JournalState
        self.sink: Sink
        self.source: InputSource
        self.cache: EmbeddingCache = NoCache()
        self.client: FleetClient
        self.progress: Progress
        self.serial = 0

    # ---- setup and teardown -------------------------------------------------------

    async def main(self) -> BackfillReport:
        started = time.monotonic()
        s = self.s
        fingerprint = fingerprint_of(s)
        self.source = await open_input(s.input)
        try:
            self.journal, self.state = Journal.open(s.checkpoint, fingerprint, restart=s.restart)
            try:
                return await self._with_journal(fingerprint, started)
            finally:
                self.journal.close()
        finally:
            await self.source.close()

    async def _with_journal(self, fingerprint: Mapping[str, str], started: float) -> BackfillReport:
        s, state = self.s, self.state
        self.serial = state.serial
        self.sink = open_sink(s.output, fingerprint)
        try:
            committed = await self.sink.open(START_OVER if s.restart else state.position)
            self.done = committed | set(state.rejected)
            self.report.already_done = len(committed)
            self.report.refused_total = len(state.rejected)
            for rid, ids in state.in_flight.items():
                self.old[rid] = ids
                for item_id in ids:
                    if item_id not in self.done:
                        self.old_rid_of[item_id] = rid
            self.cache = await self._open_cache()
            try:
                return await self._with_sink(started)
            finally:
                await self.cache.close()
        finally:
            await self.sink.close()

    async def _open_cache(self) -> EmbeddingCache:
        dsn = self.s.cache_dsn
        if not dsn:
            return NoCache()
        try:
            return await open_cache(dsn)
        except (BackfillError, OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            if self.s.cache_required:
                raise BackfillError(f"the content cache cannot be used: {exc}") from None
            self.cache_note = f"content cache off ({exc}); --no-cache silences this"
            return NoCache()

    async def _with_sink(self, started: float) -> BackfillReport:
        s = self.s
        self.report.total = await self.source.count()
        self.report.output = self.sink.description
        self.progress = self.progress_override or Progress(
            total=self.report.total, done=min(len(self.done), self.report.total or 0)
        )
        if self.cache_note:
            self.progress.note(self.cache_note)
        self.client = FleetClient(
            s.amqp_url,
            reply_queue=f"backfill-{self.state.run}",
            name="llm-fleet backfill",
            worker_users=s.worker_users,
        )
        loop = asyncio.get_running_loop()
        self.old_deadline = loop.time() + s.job_timeout + _OLD_ANSWER_GRACE
        await self.client.connect()
        stop_signals = _install_stop_signals(self.stop)
        tasks: list[asyncio.Task[None]] = []
        try:
            tasks = [
                asyncio.create_task(self._read(), name="backfill-read"),
                asyncio.create_task(self._send_loop(), name="backfill-send"),
                asyncio.create_task(self._receive_loop(), name="backfill-receive"),
                asyncio.create_task(self._commit_loop(), name="backfill-commit"),
                asyncio.create_task(self._watch_loop(), name="backfill-watch"),
            ]
            for task in tasks:
                task.add_done_callback(self._task_ended)
            await _first_of(self.all_done, self.stop)
            for task in tasks:
                task.cancel()
            try:
                await self._commit()
            except Exception:
                if self.fatal is None:
                    raise
            if self.fatal is not None:
                raise self.fatal
            if self.stop.is_set():
                self.report.stopped = True
            else:
                await self._finish()
        finally:
            for task in tasks:
                task.cancel()
            for task in tasks:
                with contextlib.suppress(BaseException):
                    await task
            stop_signals()
            self.progress.close()
            self.report.seconds = time.monotonic() - started
            self._summarise()
            self._list_refusals()
            if not self.report.complete:
                await self.client.close()
        return self.report

    def _task_ended(self, task: asyncio.Task[None]) -> None:
        """A task that fails stops the run (after a last commit of what is sound)."""
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            if self.fatal is None:
                self.fatal = exc
            self.stop.set()

    async def _finish(self) -> None:
        await self.sink.finish()
        await self.journal.finish()
        self.report.complete = True
        # The reply queue served this run only; a later (incremental) run declares it again.
        await self.client.delete_reply_queue()

    def _list_refusals(self) -> None:
        """Every refused id of the backfill and why, beside the checkpoint (rewritten)."""
        refused = {**self.state.rejected, **{r.id: r for r in self.refused_now}}
        if not refused:
            return
        path = self.s.checkpoint.with_name(self.s.checkpoint.name + ".refused.jsonl")
        lines = (
            msgspec.json.encode({"id": r.id, "code": r.code, "reason": r.reason})
            for r in refused.values()
        )
        path.write_bytes(b"\n".join(lines) + b"\n")
        self.report.rejected_file = path

    def _summarise(self) -> None:
        summary = self.progress.summary()
        self.report.tokens = summary.tokens
        self.report.cost_usd = None if self.cost_unknown else summary.cost_usd
        self.report.retries = summary.retries

    # ---- reading ------------------------------------------------------------------

    async def _read(self) -> None:
        lookups: list[Item] = []
        async for row in self.source.rows():
            if self.stop.is_set():
                return
            if isinstance(row, BadRow):
                await self._bad_row(row)
                continue
            if row.id in self.done:
                continue
            if row.id in self.seen:
                self.report.duplicates += 1
                if self.report.duplicates <= 10:
                    self.progress.note(
                        f"id {row.id!r} appears again at row {row.position + 1}: the first "
                        "occurrence is kept"
                    )
                continue
            self.seen.add(row.id)
            await self.window.acquire()
            self.tickets[row.id] = self.order.take()
            early = self.early.pop(row.id, None)
            if early is not None:
                async with self.lock:
                    await self._resolve(row.id, early)
                continue
            if row.id in self.old_rid_of:
                self.parked[row.id] = row
                continue
            lookups.append(row)
            if len(lookups) >= _CACHE_LOOKUP_BATCH:
                await self._look_up_and_batch(lookups)
                lookups = []
        await self._look_up_and_batch(lookups)
        async with self.lock:
            last = self.batcher.flush()
            if last is not None:
                self._queue(last, fresh=True)
            self.reading_done = True
            # Old jobs whose ids are no longer in the input cannot hold the run up.
            self.early.clear()
            self._check_done()

    async def _bad_row(self, row: BadRow) -> None:
        row_id = row.id if row.id is not None else f"<row {row.position + 1}>"
        if row_id in self.done or row_id in self.seen:
            return
        self.seen.add(row_id)
        await self.window.acquire()
        self.tickets[row_id] = self.order.take()
        async with self.lock:
            await self._refuse(Rejection(row_id, "bad_row", row.reason))

    async def _look_up_and_batch(self, items: list[Item]) -> None:
        if not items:
            return
        keys = [self._key(item.text) for item in items]
        hits = await self.cache.lookup(keys)
        async with self.lock:
            await self._batch(items, keys, hits)

    async def _batch(
        self, items: list[Item], keys: list[bytes], hits: Mapping[bytes, tuple[int, bytes]]
    ) -> None:
        """Serve cache hits, group the rest into chunks (call with the lock held)."""
        served = 0
        for item, key in zip(items, keys, strict=True):
            hit = hits.get(key)
            if hit is not None:
                dims, vector = hit
                if self.s.dimensions is None or dims == self.s.dimensions:
                    await self._resolve(item.id, Outcome(item.id, dims, vector))
                    served += 1
                    continue
            chunks, rejection = self.batcher.add(item)
            if rejection is not None:
                await self._refuse(rejection)
            for chunk in chunks:
                self._queue(chunk, fresh=True)
        if served:
            self.report.cached += served
            self.progress.cached(served)

    def _key(self, text: str) -> bytes:
        return cache_key(
            tenant=self.client.user,
            provider=self.s.target.provider,
            model=self.s.target.model,
            dimensions=self.s.dimensions,
            input_type=self.s.input_type,
            text=text,
        )

    # ---- sending ------------------------------------------------------------------

    def _queue(self, chunk: Chunk, *, fresh: bool, attempt: int = 1, delay: float = 0.0) -> None:
        # Resends go first: they hold the oldest tickets, which input order waits for.
        entry = (1 if fresh else 0, next(self.seq), chunk, attempt)
        if delay > 0:
            asyncio.get_running_loop().call_later(delay, self.queue.put_nowait, entry)
        else:
            self.queue.put_nowait(entry)

    async def _send_loop(self) -> None:
        while not self.stop.is_set():
            _, _, chunk, attempt = await self.queue.get()
            # Calibrated now, not when it was batched: chunks read before the first
            # answers came would otherwise be paced with the uncalibrated guess.
            await self.pacer.acquire(self.estimator.calibrated(chunk.heuristic))
            if self.stop.is_set():
                self.pacer.release()
                return
            await self._send(chunk, attempt)

    async def _send(self, chunk: Chunk, attempt: int) -> None:
        rid = f"{self.state.run}-{self.serial}"
        self.serial += 1
        s = self.s
        job = EmbedJob(
            v=1,
            request_id=rid,
            target=s.target,
            inputs=[item.text for item in chunk.items],
            input_type=s.input_type,
            dimensions=s.dimensions,
            deadline=int((time.time() + s.job_timeout) * 1000),
            metadata={"backfill": self.state.run},
            wait_on_rate_limit=False,
        )
        loop = asyncio.get_running_loop()
        self.inflight[rid] = _Sent(chunk, attempt, loop.time() + s.job_timeout + _OLD_ANSWER_GRACE)
        try:
            await self.client.submit(job)
        except FleetError as exc:
            # Refused before it left (too big for the broker): split it like a provider's 400.
            self.inflight.pop(rid, None)
            self.pacer.release()
            async with self.lock:
                await self._failed(rid, chunk, attempt, exc.code, exc.message, exc.retryable, None)
            return
        self.journal.sent(rid, [item.id for item in chunk.items])

    # ---- receiving ----------------------------------------------------------------

    async def _receive_loop(self) -> None:
        async for receipt in self.client.receipts():
            async with self.lock:
                for answer in receipt.answers:
                    await self._answer(answer)
                self.receipts.append(receipt)
            if self.written_since_commit >= 10_000:
                await self._commit()

    async def _answer(self, answer: Final | Error) -> None:
        rid = answer.request_id
        sent = self.inflight.pop(rid, None)
        if sent is None:
            await self._old_answer(rid, answer)
            return
        self.pacer.release()
        if isinstance(answer, Error):
            if answer.code == ErrorCode.RATE_LIMITED and answer.retryable:
                pauses = self.pacer.stats.pauses
                self.pacer.rate_limited(answer.retry_after, answer.rate_limit)
                self.report.rate_limited += 1
                stats = self.pacer.stats
                if stats.pauses > pauses and stats.pauses <= _NOTED_PAUSES:
                    self.progress.note(
                        f"rate limited by the provider: pausing {stats.pause_left:.1f} s, then "
                        "a slower pace that recovers in seconds"
                    )
                self.progress.retried()
                self.journal.settled([rid])
                self._queue(sent.chunk, fresh=False, attempt=sent.attempt)
                return
            await self._failed(
                rid,
                sent.chunk,
                sent.attempt,
                answer.code,
                answer.message,
                answer.retryable,
                answer.retry_after,
            )
            return
        vectors = _vectors_of(answer, len(sent.chunk.items))
        if vectors is None:
            await self._failed(
                rid,
                sent.chunk,
                sent.attempt,
                ErrorCode.INTERNAL,
                "the answer did not hold one vector per text",
                True,
                None,
            )
            return
        self.pacer.answered(answer.rate_limit)
        actual = answer.usage.input_tokens
        if actual > 0:
            self.estimator.observe(self.estimator.calibrated(sent.chunk.heuristic), actual)
        cost = answer.metrics.cost_usd
        if cost is None:
            self.cost_unknown = True
        self.progress.advance(len(sent.chunk.items), actual, cost)
        self.report.truncated += sent.chunk.truncated
        dims, data = vectors
        width = dims * 4
        for n, item in enumerate(sent.chunk.items):
            vector = data[n * width : (n + 1) * width]
            self.cache_entries.append((self._key(item.text), dims, vector))
            await self._resolve(item.id, Outcome(item.id, dims, vector))
        self.settled_rids.append(rid)

    async def _old_answer(self, rid: str, answer: Final | Error) -> None:
        """An answer to a job a previous run sent (or a late one to a job resent since)."""
        ids = self.old.pop(rid, None)
        if ids is None:
            return  # late: its chunk was sent again, or it is another run's
        self.settled_rids.append(rid)
        live = [i for i in ids if self.old_rid_of.get(i) == rid]
        for item_id in live:
            del self.old_rid_of[item_id]
        vectors = _vectors_of(answer, len(ids)) if isinstance(answer, Final) else None
        if vectors is not None:
            dims, data = vectors
            width = dims * 4
            index = {item_id: n for n, item_id in enumerate(ids)}
            for item_id in live:
                n = index[item_id]
                outcome = Outcome(item_id, dims, data[n * width : (n + 1) * width])
                self.parked.pop(item_id, None)
                if item_id in self.tickets:
                    await self._resolve(item_id, outcome)
                elif not self.reading_done:
                    self.early[item_id] = outcome
            if isinstance(answer, Final):
                self.progress.advance(len(live), answer.usage.input_tokens, answer.metrics.cost_usd)
            return
        # Failed (or unusable): its texts go the normal way, read or still to be read.
        retry = [item for item in map(self.parked.pop, live, [None] * len(live)) if item]
        if retry:
            await self._batch(retry, [self._key(item.text) for item in retry], {})
        flushed = self.batcher.flush()
        if flushed is not None:
            self._queue(flushed, fresh=False)
        self._check_done()

    async def _failed(
        self,
        rid: str,
        chunk: Chunk,
        attempt: int,
        code: str,
        message: str,
        retryable: bool,
        retry_after: float | None,
    ) -> None:
        self.journal.settled([rid])
        if code in _FATAL and not retryable:
            self.fatal = BackfillError(
                f"the provider refused the backfill ({code}): {message}. Nothing more is sent; "
                "fix it and run the same command again to continue."
            )
            self.stop.set()
            return
        if not retryable and code in _BLAME_THE_TEXT:
            if len(chunk.items) > 1:
                # One bad text must not sink its neighbours: halve until it is alone.
                first, second = self.batcher.split(chunk)
                self._queue(first, fresh=False, attempt=attempt)
                self._queue(second, fresh=False, attempt=attempt)
                return
            await self._refuse(Rejection(chunk.items[0].id, code, message))
            return
        if attempt >= self.s.max_attempts or not retryable:
            self.report.failed += len(chunk.items)
            self.progress.note(
                f"{len(chunk.items)} texts not embedded after {attempt} attempts ({code}: "
                f"{message}); the next run tries them again"
            )
            for item in chunk.items:
                await self._resolve(item.id, None, done=False)
            return
        self.progress.retried()
        delay = retry_after if retry_after is not None else min(30.0, 2.0 ** (attempt - 1))
        self._queue(chunk, fresh=False, attempt=attempt + 1, delay=delay)

    async def _refuse(self, rejection: Rejection) -> None:
        self.rejections.append(rejection)
        self.refused_now.append(rejection)
        self.report.refused += 1
        self.progress.refused()
        await self._resolve(rejection.id, None)

    async def _resolve(self, item_id: str, outcome: Outcome | None, *, done: bool = True) -> None:
        """An item's ticket is settled: write what input order now lets through."""
        ticket = self.tickets.pop(item_id, None)
        if ticket is None:
            return
        if done:
            self.done.add(item_id)
        released = self.order.resolve(ticket, outcome)
        self.window.release()
        if released:
            await self._write(released)
        self._check_done()

    async def _write(self, outcomes: list[Outcome]) -> None:
        for dims, group in itertools.groupby(outcomes, key=lambda o: o.dims):
            rows = list(group)
            await self.sink.write(
                Vectors(
                    ids=tuple(o.id for o in rows), dims=dims, data=b"".join(o.vector for o in rows)
                )
            )
            self.report.written += len(rows)
            self.written_since_commit += len(rows)

    def _check_done(self) -> None:
        if self.reading_done and not self.tickets and not self.inflight and self.queue.empty():
            self.all_done.set()

    # ---- committing ---------------------------------------------------------------

    async def _commit_loop(self) -> None:
        while True:
            await asyncio.sleep(self.s.commit_interval)
            await self._commit()

    async def _commit(self) -> None:
        async with self.lock:
            if not (self.written_since_commit or self.settled_rids or self.rejections):
                receipts, self.receipts = self.receipts, []
            else:
                position = await self.sink.commit()
                await self.journal.commit(position, self.settled_rids, self.rejections)
                self.settled_rids, self.rejections = [], []
                self.written_since_commit = 0
                receipts, self.receipts = self.receipts, []
            entries, self.cache_entries = self.cache_entries, []
        for receipt in receipts:
            await receipt.ack()
        if entries:
            try:
                await self.cache.store(entries)
            except Exception as exc:  # the cache saves money; it must never stop a backfill
                log.warning("content cache store failed: %r", exc)

    # ---- watching -----------------------------------------------------------------

    async def _watch_loop(self) -> None:
        """Give up on answers that cannot come any more, and send their texts again."""
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(5.0)
            now = loop.time()
            async with self.lock:
                for rid, sent in list(self.inflight.items()):
                    if now > sent.deadline:
                        del self.inflight[rid]
                        self.pacer.release()
                        await self._failed(
                            rid,
                            sent.chunk,
                            sent.attempt,
                            ErrorCode.TIMEOUT,
                            "no answer within the job timeout",
                            True,
                            0.0,
                        )
                if now > self.old_deadline and self.old:
                    for rid in list(self.old):
                        await self._old_answer(
                            rid,
                            Error(
                                request_id=rid,
                                attempt=0,
                                seq=0,
                                code=ErrorCode.TIMEOUT,
                                message="no answer",
                            ),
                        )
                self._check_done()


def _vectors_of(answer: Final | Error, count: int) -> tuple[int, bytes] | None:
    if not isinstance(answer, Final) or answer.embeddings is None:
        return None
    emb = answer.embeddings
    if emb.count != count or emb.dims < 1 or len(emb.data) != count * emb.dims * 4:
        return None
    if not all(
        math.isfinite(x) for x in memoryview(emb.data).cast("f")[: min(8, count * emb.dims)]
    ):
        return None
    return emb.dims, emb.data


def _install_stop_signals(stop: asyncio.Event) -> Callable[[], None]:
    """First Ctrl-C (or SIGTERM): stop sending and checkpoint. A second: stop at once."""
    loop = asyncio.get_running_loop()
    installed: list[int] = []

    def first() -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()

    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, first)
            installed.append(sig)
        except (NotImplementedError, RuntimeError, ValueError):  # not the main thread
            pass

    def remove() -> None:
        for sig in installed:
            loop.remove_signal_handler(sig)

    return remove


async def _first_of(*events: asyncio.Event) -> None:
    waiters = [asyncio.ensure_future(event.wait()) for event in events]
    try:
        await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for waiter in waiters:
            waiter.cancel()
