"""`llm-fleet audit show|tail|summary|prune`: read and trim the audit trail (DATABASE_URL).

Text for people, `--json` for programs (one JSON object per line). Unknown cost is
printed as unknown, never as 0.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, date, datetime
from typing import Any, TypeVar

import asyncpg
import click

from workers import audit_query as q
from workers.cli_settings import database_settings

T = TypeVar("T")
POLL_SECONDS = 1.0


def _database_url() -> str:
    return database_settings("the audit trail is in").database_url


def _with_db(fn: Callable[[asyncpg.Connection], Awaitable[T]]) -> T:
    url = _database_url()

    async def go() -> T:
        conn = await asyncpg.connect(url, timeout=10)
        try:
            return await fn(conn)
        finally:
            await conn.close()

    try:
        return asyncio.run(go())
    except asyncpg.LockNotAvailableError:
        raise click.ClickException(
            "the audit tables are busy (a long query holds them): try again later"
        ) from None
    except (asyncpg.UndefinedTableError, asyncpg.UndefinedFunctionError):
        raise click.ClickException("no audit tables here: run `llm-fleet migrate`") from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError, TimeoutError) as exc:
        # asyncpg messages name the server, database and role, never the password.
        raise click.ClickException(f"audit query failed: {type(exc).__name__}: {exc}") from None


def _json_value(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.astimezone(UTC).isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


def _emit_json(rows: Sequence[dict[str, Any]]) -> None:
    for row in rows:
        click.echo(json.dumps(row, default=_json_value, ensure_ascii=False))


def _when(value: datetime) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _cost(value: float | None, unknown: int = 0) -> str:
    if value is None:
        return f"unknown ({unknown})" if unknown else "-"
    known = f"${value:.6f}"
    return f"{known} + {unknown} unknown" if unknown else known


def _unknown(row: dict[str, Any]) -> int:
    """1 when an answered attempt's cost is unknown (a failed one may have cost nothing)."""
    return 1 if row["cost_usd"] is None and row["status"] == "ok" else 0


def _target(provider: str | None, model: str | None) -> str:
    return f"{provider}/{model}" if provider else "-"


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}ms"


def _tail_line(row: dict[str, Any]) -> str:
    tokens = (
        f"in {row['input_tokens']} out {row['output_tokens']}"
        if row["input_tokens"] is not None
        else "-"
    )
    cost = _cost(row["cost_usd"], _unknown(row))
    return "  ".join(
        [
            _when(row["recorded_at"]),
            row["producer"] or "-",
            row["request_id"] or "-",
            f"#{row['attempt']}.{row['submission']}",
            row["kind"],
            row["status"],
            _target(row["provider"], row["model"]),
            _ms(row["total_ms"]),
            tokens,
            cost,
        ]
    )


def _show_block(row: dict[str, Any]) -> list[str]:
    tried = ", ".join(_target(t["provider"], t["model"]) for t in row["tried"]) or None
    fields: list[tuple[str, Any]] = [
        ("tenant", row["producer"]),
        ("kind", row["kind"]),
        ("status", row["status"]),
        ("error", row["error"]),
        ("target", _target(row["provider"], row["model"])),
        ("credential", row["credential_id"]),
        ("tried before", tried),
        ("provider request", row["provider_request_id"]),
        ("queue / ttft / provider / total", " / ".join(_ms(row[k]) for k in _TIMES)),
        ("retries", row["retries"]),
        ("tokens", ", ".join(f"{k} {row[c]}" for k, c in _TOKENS if row[c] is not None)),
        ("cost", _cost(row["cost_usd"], _unknown(row))),
        ("metadata", json.dumps(row["metadata"], ensure_ascii=False) if row["metadata"] else ""),
        ("dead-lettered", "yes" if row["dead_lettered"] else None),
        ("worker / queue", f"{row['worker']} / {row['queue']}"),
        ("recorded", _when(row["recorded_at"])),
    ]
    head = (
        f"attempt {row['attempt']} of submission {row['submission']}, "
        f"started {_when(row['started_at'])}"
    )
    return [head] + [f"  {k:<32} {v}" for k, v in fields if v not in (None, "", "-")]


_TIMES = ("queue_ms", "ttft_ms", "provider_ms", "total_ms")
_TOKENS = (
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cached input", "cached_input_tokens"),
    ("cache write", "cache_write_tokens"),
    ("reasoning", "reasoning_tokens"),
    ("search units", "search_units"),
)
_SUMMARY_NUMBERS = (
    ("requests", "requests"),
    ("attempts", "attempts"),
    ("errors", "errors"),
    ("input", "input_tokens"),
    ("output", "output_tokens"),
    ("cached", "cached_input_tokens"),
    ("cache_write", "cache_write_tokens"),
    ("reasoning", "reasoning_tokens"),
    ("search_units", "search_units"),
)


def _table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(h), *(len(r[i]) for r in rows)) for i, h in enumerate(headers)]
    click.echo("  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip())
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


@click.group("audit")
def audit() -> None:
    """Read the audit trail: one row per job attempt (DATABASE_URL)."""


@audit.command("show")
@click.argument("request_id")
@click.option("--tenant", help="Only this tenant's request (request ids are the producer's).")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per attempt.")
def show_cmd(request_id: str, tenant: str | None, as_json: bool) -> None:
    """Every attempt of one request: who, which target and credential, times, tokens, cost."""
    rows = _with_db(lambda conn: q.show(conn, request_id, tenant))
    if as_json:
        _emit_json(rows)
        return
    if not rows:
        raise click.ClickException(f"no audit rows for request {request_id!r}")
    for i, row in enumerate(rows):
        if i:
            click.echo()
        click.echo("\n".join(_show_block(row)))


@audit.command("tail")
@click.option("-n", "limit", type=click.IntRange(1, 10_000), default=20, show_default=True)
@click.option("--tenant", help="Only this tenant's rows.")
@click.option("--follow", "-f", is_flag=True, help="Keep printing rows as they are written.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per row.")
def tail_cmd(limit: int, tenant: str | None, follow: bool, as_json: bool) -> None:
    """The rows written last, oldest first."""

    def emit(rows: Sequence[dict[str, Any]]) -> None:
        if as_json:
            _emit_json(rows)
        else:
            for row in rows:
                click.echo(_tail_line(row))

    async def go(conn: asyncpg.Connection) -> None:
        rows = await q.tail(conn, limit, tenant)
        emit(rows)
        if not follow:
            return
        follower = q.Follower(after=datetime.now(UTC))
        follower.fresh(rows)
        while True:
            await asyncio.sleep(POLL_SECONDS)
            emit(follower.fresh(await q.written_since(conn, follower.since, tenant)))

    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C ends --follow
        _with_db(go)


@audit.command("summary")
@click.option("--since", default="1d", show_default=True, help="How far back: 90m, 12h, 7d, 4w.")
@click.option(
    "--by",
    default="tenant,provider,model",
    show_default=True,
    help=f"Group by these, comma-separated: {', '.join(q.GROUPS)} (days are UTC).",
)
@click.option("--tenant", help="Only this tenant.")
@click.option("--provider", help="Only this provider (the target that answered or failed last).")
@click.option("--model", help="Only this model.")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per group.")
def summary_cmd(
    since: str,
    by: str,
    tenant: str | None,
    provider: str | None,
    model: str | None,
    as_json: bool,
) -> None:
    """Requests, errors, tokens by type and cost per group. A cost the price table does not
    know is counted as unknown, not as 0."""
    try:
        start = datetime.now(UTC) - q.parse_age(since)
        keys = q.parse_groups(by)
    except ValueError as exc:
        raise click.BadParameter(str(exc)) from None
    rows = _with_db(
        lambda conn: q.summary(conn, start, keys, tenant=tenant, provider=provider, model=model)
    )
    if as_json:
        _emit_json(rows)
        return
    if not rows or not rows[0]["attempts"]:
        click.echo(f"no attempts since {_when(start)} UTC")
        return
    headers = [*keys, *(h for h, _ in _SUMMARY_NUMBERS), "cost_usd"]
    table = [
        [
            *("-" if row[k] is None else str(row[k]) for k in keys),
            *("-" if row[c] is None else str(row[c]) for _, c in _SUMMARY_NUMBERS),
            _cost(row["cost_usd"], row["unknown_cost"]),
        ]
        for row in rows
    ]
    _table(headers, table)


@audit.command("prune")
@click.option("--older-than", required=True, help="Drop months wholly older than this: 90d, 26w.")
@click.option("--dry-run", is_flag=True, help="Only say which months would be dropped.")
@click.option("--json", "as_json", is_flag=True, help="The report as one JSON object.")
def prune_cmd(older_than: str, dry_run: bool, as_json: bool) -> None:
    """Drop whole months of the audit trail (rows and bodies) and create the coming months.

    A month goes once all of it is older than --older-than, so rows stay up to a
    month longer. Dropping a month is instant whatever its size.
    """
    try:
        age = q.parse_age(older_than)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--older-than") from None
    report = _with_db(lambda conn: q.prune(conn, age, dry_run=dry_run))
    if as_json:
        _emit_json(
            [
                {
                    "cutoff": report.cutoff,
                    "dry_run": dry_run,
                    "dropped": [p.name for p in report.dropped],
                    "kept": [p.name for p in report.kept],
                    "created": report.created,
                }
            ]
        )
        return
    verb = "would drop" if dry_run else "dropped"
    for part in report.dropped:
        click.echo(f"{verb} {part.name} ({part.start:%Y-%m} UTC)")
    for name in report.created:
        click.echo(f"created {name}")
    months = sorted({f"{p.start:%Y-%m}" for p in report.kept})
    click.echo(
        f"cutoff {_when(report.cutoff)} UTC; {len(report.dropped)} partitions {verb}; "
        f"months kept: {', '.join(months) or 'none'}"
    )
