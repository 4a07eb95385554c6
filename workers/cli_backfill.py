"""`llm-fleet backfill`: embed a corpus through the fleet, resumably (see workers/backfill/)."""

from __future__ import annotations

import asyncio
import os
import shlex
import sys
from pathlib import Path
from typing import Literal, cast

import aiormq
import asyncpg
import click

from contracts.client import DEFAULT_AMQP_URL
from contracts.jobs import Credential, Target
from providers.registry import builtin_specs
from workers.backfill.batching import Batcher, BatchLimits
from workers.backfill.inputs import InputSpec, open_input
from workers.backfill.items import BackfillError
from workers.backfill.plan import format_plan, make_plan
from workers.backfill.runner import BackfillReport, BackfillSettings, run_backfill
from workers.backfill.sinks import OutputSpec
from workers.backfill.tokens import TokenEstimator
from workers.config import DEFAULT_DATABASE_URL
from workers.prices import load_price_table

# What one job may hold when the provider's own limits are unknown (a custom provider).
_FALLBACK_LIMITS = BatchLimits(max_inputs=96)
_CONTRACT_MAX_INPUTS = 2048  # contracts.jobs.EmbedJob.inputs


def provider_limits(provider: str, model: str) -> tuple[BatchLimits, bool]:
    """The provider's per-request embedding limits for `model`, and whether they were known."""
    for spec in builtin_specs():
        if spec.name == provider:
            limits = getattr(spec, "embed_limits", None)
            if limits is None:
                break
            known = limits.for_model(model)
            return (
                BatchLimits(
                    max_inputs=min(known.max_inputs, _CONTRACT_MAX_INPUTS),
                    max_input_tokens=known.max_input_tokens,
                    max_request_tokens=known.max_request_tokens,
                ),
                True,
            )
    return _FALLBACK_LIMITS, False


def _narrower(limit: int | None, flag: int | None) -> int | None:
    if flag is None:
        return limit
    return flag if limit is None else min(limit, flag)


def batch_limits(
    provider: str,
    model: str,
    *,
    batch_size: int | None,
    max_request_tokens: int | None,
    max_input_tokens: int | None,
) -> BatchLimits:
    known, _ = provider_limits(provider, model)
    max_inputs = _narrower(known.max_inputs, batch_size)
    assert max_inputs is not None
    return BatchLimits(
        max_inputs=max_inputs,
        max_input_tokens=_narrower(known.max_input_tokens, max_input_tokens),
        max_request_tokens=_narrower(known.max_request_tokens, max_request_tokens),
    )


def default_checkpoint(output: OutputSpec) -> Path:
    if output.path:
        return Path(output.path + ".checkpoint")
    assert output.table
    return Path(f"{output.table}.backfill-checkpoint")


def _positive(_ctx: click.Context, param: click.Parameter, value: float | None) -> float | None:
    if value is not None and value <= 0:
        raise click.BadParameter("must be greater than 0", param=param)
    return value


@click.command("backfill")
@click.option("--input", "input_path", help="JSON-lines (.jsonl) or CSV (.csv) file to embed.")
@click.option("--input-format", type=click.Choice(["jsonl", "csv"]), help="Default: from suffix.")
@click.option("--query", help="A PostgreSQL query instead of a file (read ordered by the id).")
@click.option("--input-dsn", help="Database of --query (default DATABASE_URL).")
@click.option("--id-field", default="id", show_default=True, help="Field/column of the ids.")
@click.option("--text-field", default="text", show_default=True, help="Field/column to embed.")
@click.option("--output", "output_path", help="Output file: .jsonl, .npy (+ .ids.jsonl), .parquet.")
@click.option("--output-format", type=click.Choice(["jsonl", "npy", "parquet"]))
@click.option("--output-table", help="PostgreSQL table to write (created when missing).")
@click.option("--output-dsn", help="Database of --output-table (default DATABASE_URL).")
@click.option(
    "--vector-type",
    type=click.Choice(["auto", "vector", "real[]"]),
    default="auto",
    show_default=True,
    help="Table column type: pgvector's `vector` when installed (auto), else real[].",
)
@click.option(
    "--order",
    type=click.Choice(["input", "arrival"]),
    default="input",
    show_default=True,
    help="Rows in input order, or as answers arrive (each row keyed by its id).",
)
@click.option("--provider", required=True, help="Provider name (see `llm-fleet providers`).")
@click.option("--model", required=True, help="Embedding model.")
@click.option("--credential", "credential_id", help="Stored credential id (llm-fleet creds).")
@click.option(
    "--sealed",
    envvar="FLEET_SEALED_CREDENTIAL",
    help="Sealed credential envelope (llm-fleet seal); env FLEET_SEALED_CREDENTIAL.",
)
@click.option("--dimensions", type=click.IntRange(min=1), help="Vector size, if the model can.")
@click.option("--input-type", help="Provider input type (search_document, RETRIEVAL_DOCUMENT…).")
@click.option("--rpm", type=float, callback=_positive, help="Requests/min the credential allows.")
@click.option("--tpm", type=float, callback=_positive, help="Tokens/min the credential allows.")
@click.option("--max-in-flight", type=click.IntRange(min=1), default=64, show_default=True)
@click.option("--batch-size", type=click.IntRange(min=1), help="Texts per job (≤ the provider's).")
@click.option("--max-request-tokens", type=click.IntRange(min=1), help="Tokens per job, at most.")
@click.option("--max-input-tokens", type=click.IntRange(min=1), help="Tokens per text, at most.")
@click.option(
    "--long-texts",
    type=click.Choice(["refuse", "truncate"]),
    default="refuse",
    show_default=True,
    help="A text over the model's limit: refuse it (listed) or embed its beginning.",
)
@click.option("--checkpoint", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--restart", is_flag=True, help="Forget the checkpoint and the output; start over.")
@click.option("--cache/--no-cache", "use_cache", default=True, show_default=True)
@click.option("--cache-dsn", help="Database of the content cache (default DATABASE_URL).")
@click.option("--dry-run", is_flag=True, help="Count texts, tokens, cost and time; send nothing.")
@click.option("--job-timeout", type=float, default=600.0, show_default=True, callback=_positive)
@click.option("--amqp-url", envvar="AMQP_URL", default=DEFAULT_AMQP_URL, show_default=True)
def backfill(
    input_path: str | None,
    input_format: str | None,
    query: str | None,
    input_dsn: str | None,
    id_field: str,
    text_field: str,
    output_path: str | None,
    output_format: str | None,
    output_table: str | None,
    output_dsn: str | None,
    vector_type: str,
    order: str,
    provider: str,
    model: str,
    credential_id: str | None,
    sealed: str | None,
    dimensions: int | None,
    input_type: str | None,
    rpm: float | None,
    tpm: float | None,
    max_in_flight: int,
    batch_size: int | None,
    max_request_tokens: int | None,
    max_input_tokens: int | None,
    long_texts: str,
    checkpoint: Path | None,
    restart: bool,
    use_cache: bool,
    cache_dsn: str | None,
    dry_run: bool,
    job_timeout: float,
    amqp_url: str,
) -> None:
    """Embed every text of a file or query into a file or table, at the provider's rate limit.

    Resumable: run the same command again after a crash or Ctrl-C and it goes on
    where it stopped, every id exactly once in the output.
    """
    database_url = os.environ.get("DATABASE_URL", DEFAULT_DATABASE_URL)
    if (input_path is None) == (query is None):
        raise click.UsageError("give exactly one of --input or --query")
    if (output_path is None) == (output_table is None):
        raise click.UsageError("give exactly one of --output or --output-table")
    if not dry_run and (credential_id is None) == (sealed is None):
        raise click.UsageError("give exactly one of --credential or --sealed")
    input_spec = InputSpec(
        path=input_path,
        format=cast(Literal["jsonl", "csv"] | None, input_format),
        query=query,
        dsn=(input_dsn or database_url) if query else None,
        id_field=id_field,
        text_field=text_field,
    )
    output_spec = OutputSpec(
        path=output_path,
        format=cast(Literal["jsonl", "npy", "parquet"] | None, output_format),
        table=output_table,
        dsn=(output_dsn or database_url) if output_table else None,
        vector_type=cast(Literal["auto", "vector", "real[]"], vector_type),
    )
    limits = batch_limits(
        provider,
        model,
        batch_size=batch_size,
        max_request_tokens=max_request_tokens,
        max_input_tokens=max_input_tokens,
    )
    if dry_run:
        _run(_dry_run(input_spec, limits, provider, model, long_texts, rpm, tpm))
        return
    credential = Credential(id=credential_id) if credential_id else Credential(sealed=sealed)
    settings = BackfillSettings(
        amqp_url=amqp_url,
        target=Target(provider=provider, model=model, credential=credential),
        input=input_spec,
        output=output_spec,
        checkpoint=checkpoint or default_checkpoint(output_spec),
        dimensions=dimensions,
        input_type=input_type,
        order=cast(Literal["input", "arrival"], order),
        limits=limits,
        long_texts=cast(Literal["truncate", "refuse"], long_texts),
        requests_per_minute=rpm,
        tokens_per_minute=tpm,
        max_in_flight=max_in_flight,
        cache_dsn=(cache_dsn or database_url) if use_cache else None,
        cache_required=cache_dsn is not None,
        job_timeout=job_timeout,
        restart=restart,
    )
    report = cast(BackfillReport, _run(run_backfill(settings)))
    click.echo(describe_report(report, settings.checkpoint))
    if report.stopped:
        click.echo(f"Resume with the same command:\n  {_command_line()}")
        sys.exit(130)
    if report.failed:
        sys.exit(3)


def _run(coro: object) -> object:
    from workers.cli import run_async

    try:
        return run_async(coro)  # type: ignore[arg-type]
    except BackfillError as exc:
        raise click.ClickException(str(exc)) from None
    except (OSError, aiormq.exceptions.AMQPError, asyncpg.PostgresError) as exc:
        # A broker or database that cannot be reached: the checkpoint is as the last
        # commit left it. (Their messages name hosts and errors, never passwords.)
        raise click.ClickException(
            f"{type(exc).__name__}: {exc}. Nothing is lost: run the same command again to resume."
        ) from None


async def _dry_run(
    input_spec: InputSpec,
    limits: BatchLimits,
    provider: str,
    model: str,
    long_texts: str,
    rpm: float | None,
    tpm: float | None,
) -> None:
    prices_file = os.environ.get("FLEET_PRICES_FILE", "")
    estimator = TokenEstimator()
    batcher = Batcher(limits, estimator, long_texts=cast(Literal["truncate", "refuse"], long_texts))
    source = await open_input(input_spec)
    try:
        plan = await make_plan(
            source.rows(),
            done=set(),
            batcher=batcher,
            estimator=estimator,
            prices=await asyncio.to_thread(load_price_table, prices_file),
            provider=provider,
            model=model,
            requests_per_minute=rpm,
            tokens_per_minute=tpm,
        )
    finally:
        await source.close()
    click.echo(format_plan(plan))


def describe_report(report: BackfillReport, checkpoint: Path) -> str:
    cost = "unknown" if report.cost_usd is None else f"${report.cost_usd:.6f}"
    rate = report.written / report.seconds if report.seconds > 0 else 0.0
    if report.complete:
        head = f"✔ backfill complete: {report.output}"
    elif report.stopped:
        head = f"■ backfill stopped: {report.output} (checkpoint {checkpoint})"
    else:
        head = f"backfill ended early: {report.output}"
    if report.complete and not (report.written or report.refused or report.failed):
        return (
            f"{head}: nothing left to do ({report.already_done:,} rows written by earlier "
            f"runs, {report.refused_total:,} refused)"
        )
    lines = [
        head,
        f"  this run: {report.written:,} written ({report.cached:,} from the cache) in "
        f"{report.seconds:.1f} s ({rate:,.0f} texts/s), {report.tokens:,} tokens, cost {cost}",
        f"  earlier runs: {report.already_done:,}; refused: {report.refused:,} now, "
        f"{report.refused_total + report.refused:,} in all; retries {report.retries:,} "
        f"(rate limited {report.rate_limited:,})",
    ]
    if report.truncated:
        lines.append(f"  {report.truncated:,} texts over the model's limit: their start embedded")
    if report.duplicates:
        lines.append(f"  {report.duplicates:,} repeated ids skipped (first occurrence kept)")
    if report.rejected_file is not None:
        lines.append(f"  refused texts and why: {report.rejected_file}")
    if report.failed:
        lines.append(
            f"  {report.failed:,} texts failed after every attempt: run the same command "
            "again to retry them"
        )
    return "\n".join(lines)


def _command_line() -> str:
    """This command as typed, with a sealed envelope shown as the variable that can hold it."""
    args, hide = ["llm-fleet"], False
    for arg in sys.argv[1:]:
        if hide:
            args.append('"$FLEET_SEALED_CREDENTIAL"')
            hide = False
        elif arg == "--sealed":
            args.append(arg)
            hide = True
        elif arg.startswith("--sealed="):
            args.append('--sealed="$FLEET_SEALED_CREDENTIAL"')
        else:
            args.append(shlex.quote(arg))
    return " ".join(args)
