"""What `llm-fleet audit` asks the audit trail: one request, the newest rows, usage and
cost summaries, and retention (dropping whole months)."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final

import asyncpg

PARENTS: Final = ("audit_attempts", "audit_bodies")
_PARTITION = re.compile(r"^(?P<parent>audit_attempts|audit_bodies)_y(?P<y>\d{4})m(?P<m>\d{2})$")
_AGE = re.compile(r"^\s*(?P<n>\d+(?:\.\d+)?)\s*(?P<unit>[smhdw])\s*$")
_UNIT_SECONDS: Final = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}
# How far back `--follow` looks again each poll: a batch that started before the
# newest row seen but committed after it still shows.
FOLLOW_OVERLAP: Final = timedelta(seconds=5)
PRUNE_LOCK_TIMEOUT: Final = "5s"

# --by key -> SQL expression. Days are UTC days.
GROUPS: Final = {
    "tenant": "producer",
    "provider": "provider",
    "model": "model",
    "kind": "kind",
    "status": "status",
    "day": "(started_at AT TIME ZONE 'UTC')::date",
}
_JSON_COLUMNS: Final = ("tried", "metadata")


def parse_age(text: str) -> timedelta:
    """`90d`, `12h`, `30m`, `2w`, `45s` → a timedelta; a unit is required."""
    match = _AGE.match(text)
    if match is None:
        raise ValueError(f"expected a number and a unit (s, m, h, d, w), like 90d; got {text!r}")
    seconds = float(match["n"]) * _UNIT_SECONDS[match["unit"]]
    if seconds <= 0:
        raise ValueError(f"expected a duration above zero; got {text!r}")
    return timedelta(seconds=seconds)


def parse_groups(text: str) -> list[str]:
    """`tenant,provider,model,day` → those keys, checked, in that order."""
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in GROUPS]
    if unknown or len(set(keys)) != len(keys):
        raise ValueError(f"--by takes distinct keys of {', '.join(GROUPS)}; got {text!r}")
    return keys


def row_dict(row: asyncpg.Record) -> dict[str, Any]:
    """A row as plain data: jsonb columns decoded, the rest as asyncpg returns them."""
    out = dict(row)
    for name in _JSON_COLUMNS:
        if isinstance(out.get(name), str):
            out[name] = json.loads(out[name])
    return out


_ATTEMPT_FIELDS: Final = """
    request_id, producer, submission, attempt, started_at, recorded_at, kind, queue, worker,
    status, error, provider, model, credential_id, tried, provider_request_id, queue_ms,
    ttft_ms, provider_ms, total_ms, retries, input_tokens, output_tokens, total_tokens,
    cached_input_tokens, cache_write_tokens, reasoning_tokens, search_units, cost_usd,
    metadata, dead_lettered, reached_provider"""


async def show(
    conn: asyncpg.Connection, request_id: str, tenant: str | None = None
) -> list[dict[str, Any]]:
    """Every attempt of a request (of one tenant, when given), in the order they ran."""
    rows = await conn.fetch(
        f"SELECT {_ATTEMPT_FIELDS} FROM audit_attempts"
        " WHERE request_id = $1 AND ($2::text IS NULL OR producer = $2)"
        " ORDER BY producer, submission, attempt, started_at",
        request_id,
        tenant,
    )
    return [row_dict(r) for r in rows]


async def tail(
    conn: asyncpg.Connection, limit: int, tenant: str | None = None
) -> list[dict[str, Any]]:
    """The `limit` rows written last, oldest first."""
    rows = await conn.fetch(
        f"SELECT * FROM (SELECT {_ATTEMPT_FIELDS} FROM audit_attempts"
        " WHERE ($2::text IS NULL OR producer = $2) ORDER BY recorded_at DESC LIMIT $1) newest"
        " ORDER BY recorded_at, started_at",
        limit,
        tenant,
    )
    return [row_dict(r) for r in rows]


async def written_since(
    conn: asyncpg.Connection, after: datetime, tenant: str | None = None
) -> list[dict[str, Any]]:
    """Rows written at or after `after`, oldest first (for `tail --follow`)."""
    rows = await conn.fetch(
        f"SELECT {_ATTEMPT_FIELDS} FROM audit_attempts"
        " WHERE recorded_at >= $1 AND ($2::text IS NULL OR producer = $2)"
        " ORDER BY recorded_at, started_at",
        after,
        tenant,
    )
    return [row_dict(r) for r in rows]


def row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    return (
        row["request_id"],
        row["producer"],
        row["submission"],
        row["attempt"],
        row["started_at"],
    )


@dataclass(slots=True)
class Follower:
    """Remembers what `tail --follow` printed, so the overlap shows nothing twice."""

    after: datetime
    seen: dict[tuple[Any, ...], datetime] = field(default_factory=dict)

    def fresh(self, rows: Sequence[dict[str, Any]]) -> list[dict[str, Any]]:
        out = [r for r in rows if row_key(r) not in self.seen]
        for r in rows:
            self.seen[row_key(r)] = r["recorded_at"]
            self.after = max(self.after, r["recorded_at"])
        horizon = self.after - FOLLOW_OVERLAP
        self.seen = {k: at for k, at in self.seen.items() if at >= horizon}
        return out

    @property
    def since(self) -> datetime:
        return self.after - FOLLOW_OVERLAP


async def summary(
    conn: asyncpg.Connection,
    since: datetime,
    by: Sequence[str],
    *,
    tenant: str | None = None,
    provider: str | None = None,
    model: str | None = None,
) -> list[dict[str, Any]]:
    """Requests, attempts, errors, tokens by type and cost per group, since `since`.

    `cost_usd` sums the known costs (None when none is known); `unknown_cost` counts
    answered attempts whose cost is unknown, so an unknown cost never reads as free.
    """
    keys = [f"{GROUPS[k]} AS {k}" for k in by]
    group = f"GROUP BY {', '.join(GROUPS[k] for k in by)} ORDER BY {', '.join(by)}" if by else ""
    rows = await conn.fetch(
        f"""SELECT {"".join(k + ", " for k in keys)}
            count(DISTINCT (producer, request_id)) AS requests,
            count(*) AS attempts,
            count(*) FILTER (WHERE status <> 'ok') AS errors,
            sum(input_tokens) AS input_tokens,
            sum(output_tokens) AS output_tokens,
            sum(cached_input_tokens) AS cached_input_tokens,
            sum(cache_write_tokens) AS cache_write_tokens,
            sum(reasoning_tokens) AS reasoning_tokens,
            sum(search_units) AS search_units,
            sum(cost_usd) AS cost_usd,
            count(*) FILTER (WHERE status = 'ok' AND cost_usd IS NULL) AS unknown_cost
        FROM audit_attempts
        WHERE started_at >= $1
          AND ($2::text IS NULL OR producer = $2)
          AND ($3::text IS NULL OR provider = $3)
          AND ($4::text IS NULL OR model = $4)
        {group}""",
        since,
        tenant,
        provider,
        model,
    )
    out = []
    for row in rows:
        item = dict(row)
        for name, value in item.items():  # sum(bigint) is numeric: back to int
            if name.endswith(("_tokens", "_units")) and value is not None:
                item[name] = int(value)
        out.append(item)
    return out


# -- retention --------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Partition:
    parent: str
    name: str
    start: datetime  # first instant it holds (UTC)
    end: datetime  # first instant it does not hold


@dataclass(slots=True)
class PruneReport:
    cutoff: datetime
    dropped: list[Partition] = field(default_factory=list)
    kept: list[Partition] = field(default_factory=list)
    created: list[str] = field(default_factory=list)


def _partition(parent: str, name: str) -> Partition | None:
    match = _PARTITION.match(name)
    if match is None or match["parent"] != parent:
        return None  # not one the fleet made: never dropped
    year, month = int(match["y"]), int(match["m"])
    start = datetime(year, month, 1, tzinfo=UTC)
    end = datetime(year + month // 12, month % 12 + 1, 1, tzinfo=UTC)
    return Partition(parent, name, start, end)


async def partitions(conn: asyncpg.Connection) -> list[Partition]:
    rows = await conn.fetch(
        "SELECT p.relname AS parent, c.relname AS name FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent"
        " WHERE p.relname = ANY($1::text[]) AND NOT i.inhdetachpending ORDER BY c.relname",
        list(PARENTS),
    )
    found = (_partition(r["parent"], r["name"]) for r in rows)
    return sorted((p for p in found if p is not None), key=lambda p: (p.start, p.parent))


async def prune(
    conn: asyncpg.Connection,
    older_than: timedelta,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    ahead: int = 3,
) -> PruneReport:
    """Drop every month that ended more than `older_than` ago (both tables), and create
    the partitions of this month and the next `ahead - 1` if missing.

    Whole months only: a month is dropped once all of it is older than the cutoff,
    so rows are kept up to a month longer than asked. Each partition is detached
    CONCURRENTLY (inserts into other months carry on) and then dropped, which is
    instant whatever its size; no row is deleted one by one.
    """
    now = now or datetime.now(UTC)
    report = PruneReport(cutoff=now - older_than)
    for part in await partitions(conn):
        (report.dropped if part.end <= report.cutoff else report.kept).append(part)
    if dry_run:
        return report
    # Detaching and creating partitions lock the parent table: give up rather than
    # queue every worker's inserts behind a long query (run prune again later).
    await conn.execute(f"SET lock_timeout = '{PRUNE_LOCK_TIMEOUT}'")
    for part in report.dropped:
        # Not in a transaction: DETACH ... CONCURRENTLY refuses to run inside one.
        await conn.execute(f'ALTER TABLE {part.parent} DETACH PARTITION "{part.name}" CONCURRENTLY')
        await conn.execute(f'DROP TABLE "{part.name}"')
    report.dropped += await _drop_leftovers(conn, report.cutoff)
    created = await conn.fetch("SELECT llm_fleet_audit_partitions($1, $2)", now, ahead)
    report.created = [r[0] for r in created]
    return report


async def _drop_leftovers(conn: asyncpg.Connection, cutoff: datetime) -> list[Partition]:
    """Months an interrupted prune left behind: half detached (finished here), or
    detached and not yet dropped (a table of the partitions' name that is no partition)."""
    pending = await conn.fetch(
        "SELECT p.relname AS parent, c.relname AS name FROM pg_inherits i"
        " JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent"
        " WHERE p.relname = ANY($1::text[]) AND i.inhdetachpending",
        list(PARENTS),
    )
    for row in pending:
        if _partition(row["parent"], row["name"]) is not None:
            await conn.execute(
                f'ALTER TABLE {row["parent"]} DETACH PARTITION "{row["name"]}" FINALIZE'
            )
    loose = await conn.fetch(
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND NOT relispartition"
        " AND relnamespace = current_schema()::regnamespace"
        " AND relname ~ '^audit_(attempts|bodies)_y[0-9]{4}m[0-9]{2}$'"
    )
    dropped = []
    for row in loose:
        name = row["relname"]
        part = _partition(name.rsplit("_y", 1)[0], name)
        if part is not None and part.end <= cutoff:
            await conn.execute(f'DROP TABLE "{name}"')
            dropped.append(part)
    return dropped
