"""The audit trail's writer: one row per settled attempt, committed before the job's ack.

`AuditWriter.record(record)` returns once the record's row is committed (the
runtime awaits it before acking). Rows of many jobs share one statement: a batch
leaves when `batch_rows` rows wait or `batch_wait` after its first row arrived,
one batch at a time, and the next collects meanwhile, so under load batches grow
instead of statements multiplying.

Failure handling, by what a failure means:
- PostgreSQL unreachable (connection refused or lost, shutting down, disk full,
  a standby after failover, a statement timeout) or the audit tables gone: the
  batch is retried with backoff until it is written. Its jobs wait unacked and
  nothing is dropped; the outage is logged once, when it begins and when it
  ends, and reported to the observer (a gauge). How many records can wait is
  bounded by the fleet itself: each is a job holding one of its worker's
  prefetch slots.
- A statement refused for what is in it (a value PostgreSQL will never take):
  the batch is split in halves until the refused row is alone; the others are
  written, the refused row is logged (key and error, no secrets: rows hold
  none) and its `record()` returns, so one bad row never holds the rest.
- A retried batch whose first commit did succeed (the answer was lost) changes
  nothing: both inserts skip rows whose key is there (`ON CONFLICT DO NOTHING`).
"""

from __future__ import annotations

import asyncio
import contextlib
import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Final, Protocol

import asyncpg
import structlog

from contracts.errors import InternalError, ProviderUnavailable
from workers.audit_rows import (
    ATTEMPT_COLUMNS,
    BODY_COLUMNS,
    INSERT_ATTEMPTS,
    INSERT_ATTEMPTS_AND_BODIES,
    AttemptRow,
    BodyRow,
    RecordBodies,
    attempt_row,
    body_row,
    columns,
)
from workers.config import AuditSettings, ConfigError
from workers.outcome import AttemptRecord

log = structlog.get_logger("llm_fleet.audit")

_STARTED_AT: Final = [name for name, _ in ATTEMPT_COLUMNS].index("started_at")
# Errors after which the same statement can succeed later: the server or the
# connection is not there (asyncpg's InterfaceError, except its DataError, which
# is also a ValueError: a value it cannot encode), or refuses writes for now.
_TRANSIENT: Final[tuple[type[BaseException], ...]] = (
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,  # shutting down, starting up, statement timeout
    asyncpg.InsufficientResourcesError,  # disk full, out of memory, too many connections
    asyncpg.ReadOnlySQLTransactionError,  # a standby, during a failover
    asyncpg.TransactionRollbackError,  # deadlock, serialization failure
    asyncpg.LockNotAvailableError,
    asyncpg.InterfaceError,
    OSError,
    TimeoutError,
)
# The schema is not (or no longer) what this code writes: an operator can fix it.
_SCHEMA: Final[tuple[type[BaseException], ...]] = (
    asyncpg.UndefinedTableError,
    asyncpg.UndefinedColumnError,
    asyncpg.UndefinedFunctionError,
    asyncpg.InvalidCatalogNameError,
)
_MIGRATE_HINT: Final = "run `llm-fleet migrate`, or set FLEET_AUDIT=off"
PARTITION_LOCK_TIMEOUT: Final = "2s"
AHEAD_RETRY_SECONDS: Final = 60.0


class AuditObserver(Protocol):
    """What the writer reports (`workers.metrics.WorkerMetrics` implements it)."""

    def audit_written(self, rows: int, seconds: float) -> None:
        """One statement committed `rows` rows in `seconds`."""

    def audit_pending(self, rows: int) -> None:
        """Rows waiting to be written now, the one being written included."""

    def audit_database(self, *, down: bool) -> None:
        """An outage began (`down=True`) or ended."""


class _NoObserver:
    def audit_written(self, rows: int, seconds: float) -> None:
        return None

    def audit_pending(self, rows: int) -> None:
        return None

    def audit_database(self, *, down: bool) -> None:
        return None


# The bodies of a record, when the deployment stores them (FLEET_AUDIT_BODIES).
BodySource = Callable[[AttemptRecord], RecordBodies | None]


@dataclass(slots=True)
class _Waiting:
    row: AttemptRow
    body: BodyRow | None
    arrived: float  # loop time
    done: asyncio.Future[None] = field(repr=False)

    def resolve(self, error: BaseException | None = None) -> None:
        # The awaiting job may have been cancelled; its row is written all the same.
        if not self.done.done():
            if error is None:
                self.done.set_result(None)
            else:
                self.done.set_exception(error)


class _Refused(Exception):
    """The statement was refused for its content; the same rows would be refused again."""


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, _TRANSIENT) and not isinstance(exc, ValueError)


def _month(moment: datetime) -> datetime:
    return datetime(moment.year, moment.month, 1, tzinfo=UTC)


def _next_month(moment: datetime) -> datetime:
    return _month(moment).replace(
        year=moment.year + moment.month // 12, month=moment.month % 12 + 1
    )


class AuditWriter:
    """Writes `AttemptRecord`s to `audit_attempts` (and `audit_bodies`), batched.

    `start()` before the first record, `close()` after the last. The counters
    (`rows_written`, `rows_refused`, `statements`) and `outage` / `pending_rows`
    are there to read; the observer is told as they change.
    """

    def __init__(
        self,
        database_url: str,
        settings: AuditSettings,
        *,
        observer: AuditObserver | None = None,
        bodies: BodySource | None = None,
        connect_timeout: float = 5.0,
        command_timeout: float = 30.0,
        backoff_initial: float = 0.05,
        backoff_cap: float = 5.0,
    ) -> None:
        self._url = database_url
        self._wait = settings.batch_wait
        self._rows = settings.batch_rows
        self._bodies = bodies if settings.bodies else None
        self._observer: AuditObserver = observer or _NoObserver()
        self._connect_timeout = connect_timeout
        self._command_timeout = command_timeout
        self._backoff = (backoff_initial, backoff_cap)
        self._conn: asyncpg.Connection | None = None
        self._queue: list[_Waiting] = []
        self._writing: list[_Waiting] = []
        self._changed = asyncio.Event()
        self._closing = False
        self._task: asyncio.Task[None] | None = None
        self._months: set[datetime] = set()  # months whose partitions are known to exist
        self._ahead_after = 0.0  # loop time: when next month may be tried again
        self._down_since: float | None = None
        self.rows_written = 0
        self.rows_refused = 0
        self.statements = 0

    # -- what others read ---------------------------------------------------

    @property
    def outage(self) -> bool:
        """True while writes fail and are being retried."""
        return self._down_since is not None

    @property
    def pending_rows(self) -> int:
        return len(self._queue) + len(self._writing)

    # -- life -----------------------------------------------------------------

    async def start(self) -> None:
        """Check the schema and create partitions ahead; then take records.

        Missing tables stop the start (ConfigError); an unreachable database does
        not: records wait for it like in any outage.
        """
        try:
            conn = await self.connection()
            present = await conn.fetchval(
                "SELECT to_regclass('audit_attempts') IS NOT NULL"
                " AND to_regclass('audit_bodies') IS NOT NULL"
                " AND to_regproc('llm_fleet_audit_partitions') IS NOT NULL"
            )
            if not present:
                raise ConfigError(f"the audit trail's tables are missing: {_MIGRATE_HINT}")
            await self._ensure_months(conn, [datetime.now(UTC)])
        except ConfigError:
            await self._drop_connection()
            raise
        except asyncpg.InvalidCatalogNameError:
            await self._drop_connection()
            raise ConfigError(f"the audit database does not exist: {_MIGRATE_HINT}") from None
        except Exception as exc:
            await self._drop_connection()
            if not _is_transient(exc):  # a wrong role or password, no permission…
                raise ConfigError(f"the audit database cannot be used: {_describe(exc)}") from None
            log.warning("audit_database_unreachable_at_start", error=_describe(exc))
        self._task = asyncio.create_task(self._run(), name="audit-writer")

    async def close(self, grace: float = 10.0) -> None:
        """Write what waits, for at most `grace` seconds; what is still unwritten then
        fails its `record()` with ProviderUnavailable (its job must not be acked)."""
        self._closing = True
        self._changed.set()
        if self._task is not None:
            try:
                await asyncio.wait_for(asyncio.shield(self._task), grace)
            except TimeoutError:
                self._task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await self._task
            left = self._writing + self._queue
            self._writing, self._queue = [], []
            if left:
                log.error("audit_rows_unwritten", rows=len(left), grace_seconds=grace)
                for item in left:
                    item.resolve(ProviderUnavailable("audit database unreachable at shutdown"))
        await self._drop_connection()

    # -- the one entry point ------------------------------------------------

    async def record(self, record: AttemptRecord) -> None:
        """Return once the record's row is committed (or refused for good, and logged)."""
        if self._closing or self._task is None:
            raise InternalError("the audit writer is not running")
        loop = asyncio.get_running_loop()
        row = attempt_row(record, now=time.time())
        bodies = self._bodies_of(record)
        item = _Waiting(
            row, body_row(row, bodies) if bodies else None, loop.time(), loop.create_future()
        )
        self._queue.append(item)
        if len(self._queue) == 1 or len(self._queue) == self._rows:
            self._changed.set()  # the flusher sleeps without a deadline, or a batch is full
        self._observer.audit_pending(self.pending_rows)
        await item.done

    def _bodies_of(self, record: AttemptRecord) -> RecordBodies | None:
        if self._bodies is None:
            return None
        try:
            return self._bodies(record)
        except Exception:
            # The row matters more than its bodies: keep it, say what was lost.
            log.exception("audit_bodies_failed", request_id=record.request_id)
            return None

    # -- the flusher ------------------------------------------------------------

    async def _run(self) -> None:
        while batch := await self._next_batch():
            self._writing = batch
            self._observer.audit_pending(self.pending_rows)
            try:
                await self._store(batch)
            except Exception:
                # A bug, not the database: fail these records rather than hang every
                # job behind them, and keep writing the next ones.
                log.exception("audit_batch_failed", rows=len(batch))
                for item in batch:
                    item.resolve(InternalError("the audit writer failed on this record"))
            self._writing = []
            self._observer.audit_pending(self.pending_rows)

    async def _next_batch(self) -> list[_Waiting]:
        """The next batch once it is due: full, old enough, or closing. [] = closed."""
        loop = asyncio.get_running_loop()
        while True:
            timeout: float | None = None
            if self._queue:
                due = self._queue[0].arrived + self._wait
                if self._closing or len(self._queue) >= self._rows or loop.time() >= due:
                    break
                timeout = due - loop.time()
            elif self._closing:
                return []
            self._changed.clear()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._changed.wait(), timeout)
        batch = self._queue[: self._rows]
        del self._queue[: self._rows]
        return batch

    async def _store(self, items: Sequence[_Waiting]) -> None:
        """Write `items` and resolve them; a refused statement is split until the row
        it cannot take is alone."""
        try:
            await self._write(items)
        except _Refused as exc:
            if len(items) > 1:
                half = len(items) // 2
                await self._store(items[:half])
                await self._store(items[half:])
                return
            await self._refuse(items[0], exc)
            return
        for item in items:
            item.resolve()

    async def _refuse(self, item: _Waiting, exc: _Refused) -> None:
        key = {"request_id": item.row[0], "producer": item.row[1], "attempt": item.row[3]}
        if item.body is not None:
            # The attempt may be fine and its bodies the problem: keep what can be kept.
            try:
                await self._write([_Waiting(item.row, None, item.arrived, item.done)])
            except _Refused:
                pass
            else:
                log.error("audit_bodies_refused", **key, error=str(exc.__cause__)[:300])
                item.resolve()
                return
        self.rows_refused += 1
        log.error("audit_row_refused", **key, error=str(exc.__cause__)[:300])
        item.resolve()

    async def _write(self, items: Sequence[_Waiting]) -> None:
        """One statement for `items`, retried until it commits; _Refused if it never will."""
        rows = [item.row for item in items]
        bodies = [item.body for item in items if item.body is not None]
        try:
            args = columns(rows, len(ATTEMPT_COLUMNS))
            if bodies:
                args += columns(bodies, len(BODY_COLUMNS))
        except ValueError as exc:  # a row of the wrong shape
            raise _Refused() from exc
        sql = INSERT_ATTEMPTS_AND_BODIES if bodies else INSERT_ATTEMPTS
        delay, partitions_checked = self._backoff[0], False
        while True:
            try:
                conn = await self.connection()
                await self._ensure_months(conn, [row[_STARTED_AT] for row in rows])
                started = time.perf_counter()
                await conn.execute(sql, *args)
            except asyncpg.CheckViolationError as exc:
                if "no partition" not in str(exc) or partitions_checked:
                    raise _Refused() from exc
                # A month pruned since this worker created it: look again, once.
                self._months.clear()
                partitions_checked = True
                continue
            except Exception as exc:
                if not (_is_transient(exc) or isinstance(exc, _SCHEMA)):
                    self._back()  # it answered: whatever this is, it is no outage
                    raise _Refused() from exc
                await self._failed(exc)
                await asyncio.sleep(delay * random.uniform(0.5, 1.0))
                delay = min(delay * 2, self._backoff[1])
                continue
            took = time.perf_counter() - started
            self.statements += 1
            self.rows_written += len(rows)
            self._observer.audit_written(len(rows), took)
            self._back()
            return

    # -- outages ------------------------------------------------------------------

    async def _failed(self, exc: BaseException) -> None:
        await self._drop_connection()
        if self._down_since is not None:
            return
        self._down_since = time.monotonic()
        self._observer.audit_database(down=True)
        fields: dict[str, Any] = {"error": _describe(exc), "rows_waiting": self.pending_rows}
        if isinstance(exc, _SCHEMA):
            fields["hint"] = _MIGRATE_HINT
        log.warning("audit_database_unavailable", **fields)

    def _back(self) -> None:
        if self._down_since is None:
            return
        down = time.monotonic() - self._down_since
        self._down_since = None
        self._observer.audit_database(down=False)
        log.info("audit_database_back", down_seconds=round(down, 3), rows_waiting=self.pending_rows)

    # -- the connection and partitions ----------------------------------------------

    async def connection(self) -> asyncpg.Connection:
        """The writer's one connection (one statement runs at a time), opened on demand."""
        if self._conn is None or self._conn.is_closed():
            self._conn = await asyncpg.connect(
                self._url, timeout=self._connect_timeout, command_timeout=self._command_timeout
            )
        return self._conn

    async def _drop_connection(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None and not conn.is_closed():
            conn.terminate()  # close() would wait on a server that may not answer

    async def _ensure_months(self, conn: asyncpg.Connection, moments: Sequence[datetime]) -> None:
        """Create the partitions of the rows' months (they must exist: a failure is
        retried like any write), and next month's ahead of time (best effort).

        Creating a partition locks the parent table, so it waits for every query on
        it, and every insert waits behind it: better once a month ahead than on the
        first row of a month, and never for long (`lock_timeout`). Once a month is
        made or found, this worker knows it exists.
        """
        for month in sorted({_month(m) for m in moments} - self._months):
            await self._create_month(conn, month)
        ahead = _next_month(datetime.now(UTC))
        loop = asyncio.get_running_loop()
        if ahead in self._months or loop.time() < self._ahead_after:
            return
        try:
            await self._create_month(conn, ahead)
        except asyncpg.LockNotAvailableError:
            self._ahead_after = loop.time() + AHEAD_RETRY_SECONDS
            log.info("audit_partition_ahead_busy", month=f"{ahead:%Y-%m}")

    async def _create_month(self, conn: asyncpg.Connection, month: datetime) -> None:
        async with conn.transaction():
            await conn.execute(f"SET LOCAL lock_timeout = '{PARTITION_LOCK_TIMEOUT}'")
            created = await conn.fetch("SELECT llm_fleet_audit_partitions($1, 1)", month)
        if created:
            log.info("audit_partitions_created", partitions=[r[0] for r in created])
        self._months.add(month)


def _describe(exc: BaseException) -> str:
    # asyncpg messages name the server, database and role, never a password.
    text = str(exc)
    return f"{type(exc).__name__}: {text[:300]}" if text else type(exc).__name__
