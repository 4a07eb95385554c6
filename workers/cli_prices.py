"""`llm-fleet prices`: the price table a worker started here would use."""

from __future__ import annotations

from typing import Any

import click
import msgspec

from workers.config import ConfigError, Settings
from workers.prices import (
    PricedModel,
    PriceTable,
    ProviderSummary,
    TokenRates,
    load_price_table,
)

_UNITS = (
    "token rates in USD per 1M tokens (in, cached in, cache write, out); embed per 1M input "
    "tokens; rerank per 1M tokens, or per 1,000 search units"
)
_LABELS = (
    ("input", "in"),
    ("cached_input", "cached"),
    ("cache_write", "write"),
    ("output", "out"),
    ("embed", "embed"),
    ("rerank", "rerank"),
    ("rerank_search_units", "per 1k searches"),
)


def _rates(values: TokenRates) -> str:
    parts = []
    for field, label in _LABELS:
        value = getattr(values, field, None)
        if value is not None:
            parts.append(f"{label} {value:g}")
    return "  ".join(parts)


def _entry_line(entry: PricedModel, width: int) -> str:
    line = f"  {entry.model:<{width}}  {_rates(entry.price)}"
    tier = entry.price.long_context
    if tier is not None:
        line += f"  (input > {tier.above_input_tokens:,}: {_rates(tier)})"
    return line


def _provider_line(provider: ProviderSummary) -> str:
    facts = []
    if provider.prices_from:
        facts.append(f"also {provider.prices_from}'s prices")
    if provider.verify_free is not None:
        facts.append("verify free" if provider.verify_free else "verify cost unknown")
    line = provider.name + (f"  ({'; '.join(facts)})" if facts else "")
    return line + (f"  {provider.source}" if provider.source else "")


def _as_text(table: PriceTable) -> None:
    shipped, *overrides = table.sources
    click.echo(f"prices in USD as of {shipped.as_of} (shipped)")
    for override in overrides:
        click.echo(f"override: {override.origin} as of {override.as_of}")
    click.echo(_UNITS)
    entries = table.entries()
    width = max((len(e.model) for e in entries), default=0)
    for provider in table.providers():
        click.echo("")
        click.echo(_provider_line(provider))
        if provider.note:
            click.echo(f"  note: {provider.note}")
        for entry in (e for e in entries if e.provider == provider.name):
            click.echo(_entry_line(entry, width))
            if entry.source and entry.source != provider.source:
                click.echo(f"  {'':<{width}}  source: {entry.source}")
            if entry.origin != "shipped":
                click.echo(f"  {'':<{width}}  from {entry.origin}")
            if entry.price.note:
                click.echo(f"  {'':<{width}}  note: {entry.price.note}")


def _as_json(table: PriceTable) -> dict[str, Any]:
    entries = table.entries()
    return {
        "currency": "USD",
        "as_of": table.as_of.isoformat(),
        "sources": [{"origin": s.origin, "as_of": s.as_of.isoformat()} for s in table.sources],
        "providers": [
            {
                "name": p.name,
                "source": p.source,
                "note": p.note,
                "prices_from": p.prices_from,
                "verify_free": p.verify_free,
                "models": [
                    {
                        "model": e.model,
                        **msgspec.to_builtins(e.price),
                        "source": e.source,
                        "origin": e.origin,
                    }
                    for e in entries
                    if e.provider == p.name
                ],
            }
            for p in table.providers()
        ],
    }


@click.command("prices")
@click.option("--json", "as_json", is_flag=True, help="The table as one JSON document.")
def prices_cmd(as_json: bool) -> None:
    """List the price table in effect: the shipped one and FLEET_PRICES_FILE's entries.

    A model not listed has an unknown cost (null in the final frame), never 0.
    """
    try:
        table = load_price_table(Settings.from_env().prices_file)
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    if as_json:
        click.echo(msgspec.json.encode(_as_json(table)).decode())
    else:
        _as_text(table)
