"""`llm-fleet` command line: worker, seal, seal-key, mock-provider, providers, demo."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Coroutine
from typing import Any

import click

from contracts.sealing import parse_ttl
from workers.cli_audit import audit
from workers.cli_backfill import backfill
from workers.cli_prices import prices_cmd
from workers.cli_tenants import tenants
from workers.cli_top import top
from workers.cli_vault import creds, migrate_cmd
from workers.config import ConfigError, Settings
from workers.crypto import Keyring, KeyringError, seal, secret_fields
from workers.logs import configure_logging


def run_async(coro: Coroutine[Any, Any, Any]) -> Any:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a Linux/macOS nicety
        return asyncio.run(coro)
    return uvloop.run(coro)


def load_keyring() -> Keyring:
    try:
        return Keyring.from_env(os.environ)
    except KeyringError as exc:
        raise click.ClickException(str(exc)) from None


@click.group()
@click.version_option(package_name="llm-fleet")
def main() -> None:
    """llm-fleet: a RabbitMQ worker fleet for LLM, embedding and rerank provider calls."""


@main.command()
@click.option("--queues", help="Comma-separated queues to consume (llm.chat,llm.embed,llm.batch).")
@click.option(
    "--concurrency",
    type=int,
    help="Jobs run at once from each of llm.chat and llm.embed. Env FLEET_CONCURRENCY.",
)
@click.option(
    "--batch-concurrency",
    type=int,
    help="llm.batch jobs run at once, on slots of their own. Env FLEET_BATCH_CONCURRENCY.",
)
@click.option("--grace", "grace_period", type=float, help="Seconds in-flight jobs get on SIGTERM.")
@click.option(
    "--health-port", type=int, help="Port for /healthz/, /readiness/, /metrics (0 = off)."
)
@click.option(
    "--health-host",
    help="Address the health port binds (env FLEET_HEALTH_HOST; default 127.0.0.1, "
    "0.0.0.0 in a container).",
)
@click.option(
    "--log-format", type=click.Choice(["json", "console"]), default="json", show_default=True
)
@click.option("--log-level", default=None, help="Log level (default INFO, env FLEET_LOG_LEVEL).")
def worker(
    queues: str | None,
    concurrency: int | None,
    batch_concurrency: int | None,
    grace_period: float | None,
    health_port: int | None,
    health_host: str | None,
    log_format: str,
    log_level: str | None,
) -> None:
    """Consume jobs and call providers until SIGTERM."""
    from workers.serve import run_worker

    try:
        settings = Settings.from_env(
            queues=tuple(q for q in queues.split(",") if q) if queues else None,
            concurrency=concurrency,
            batch_concurrency=batch_concurrency,
            grace_period=grace_period,
            health_port=health_port,
            health_host=health_host,
            log_format=log_format,
            log_level=log_level,
        )
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from None
    configure_logging(settings.log_format, settings.log_level)
    keyring = load_keyring()  # fail at start-up, not on every job
    try:
        run_async(run_worker(settings, keyring))
    except ConfigError as exc:  # settings that only make sense against the registry
        raise click.ClickException(str(exc)) from None


@main.command("seal")
@click.option("--provider", required=True, help="Provider the envelope is bound to (e.g. openai).")
@click.option(
    "--tenant",
    required=True,
    help="The broker user whose jobs may use the envelope (it opens for no one else).",
)
@click.option(
    "--ttl",
    default="24h",
    show_default=True,
    help="How long it opens: 3600, 90s, 30m, 24h, 7d (at most 30d).",
)
def seal_cmd(provider: str, tenant: str, ttl: str) -> None:
    """Read a key (or a JSON object of fields) from stdin; print a sealed credential envelope."""
    try:
        seconds = parse_ttl(ttl)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--ttl") from None
    if sys.stdin.isatty():
        click.echo("Paste the key, then press Ctrl-D:", err=True)
    try:
        fields = secret_fields(sys.stdin.read())
        envelope = seal(load_keyring(), provider, fields, tenant=tenant, ttl=seconds)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(envelope)


@main.command("seal-key")
@click.option("--tenant", required=True, help="The broker user (tenant) the key seals for.")
@click.option("--kid", help="Fleet key id to derive it from (default: the active key).")
def seal_key_cmd(tenant: str, kid: str | None) -> None:
    """Print a tenant's sealing key, for its producers to seal envelopes without the fleet key.

    The producer keeps it like a password and seals with `contracts.sealing.seal`.
    It seals (and opens) envelopes for that tenant only, and opens no stored
    credential. It changes with the fleet key: after a rotation, hand out the new one.
    """
    keyring = load_keyring()
    try:
        key = keyring.sealing_key(tenant, kid)
    except KeyError:
        raise click.ClickException(
            f"key id {kid!r} is not in INTEGRATION_CRYPTO_KEY(S) "
            f"(this keyring holds: {', '.join(sorted(keyring.kids))})"
        ) from None
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None
    click.echo(key.export())
    click.echo(
        f"sealing key for tenant {tenant!r} under key id {key.kid!r}: keep it like a password",
        err=True,
    )


@main.command("mock-provider")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", type=int, default=8900, show_default=True)
@click.option(
    "--profile", type=click.Choice(["instant", "realistic"]), default="instant", show_default=True
)
@click.option("--ttft-ms", type=float, help="Delay before the first token (overrides the profile).")
@click.option("--tokens-per-sec", type=float, help="Token rate; 0 = as fast as possible.")
@click.option("--tokens", type=int, help="Tokens per answer when the request sets no max_tokens.")
@click.option(
    "--api-key",
    "api_keys",
    multiple=True,
    help="Accepted bearer key (repeatable). Default: mock-key.",
)
@click.option("--accept-any-key", is_flag=True, help="Accept every bearer key.")
@click.option("--embed-dims", type=int, help="Embedding size when the request sets no dimensions.")
@click.option("--fault-rate", type=float, help="Fraction of requests that get --fault-kind.")
@click.option(
    "--fault-kind", help="Fault for --fault-rate (e.g. 500, 429:retry-after=1, drop-after:3)."
)
@click.option(
    "--stamp-tokens", is_flag=True, help="Token text carries its emission time (benchmarks)."
)
@click.option("--rpm", type=int, help="Requests per minute per API key; 0 = unlimited.")
@click.option("--tpm", type=int, help="Tokens per minute per API key; 0 = unlimited.")
@click.option("--context-window", type=int, help="Tokens a model accepts (prompt + answer).")
@click.option(
    "--processes", type=int, default=1, show_default=True, help="Server processes sharing the port."
)
def mock_provider(
    host: str,
    port: int,
    profile: str,
    ttft_ms: float | None,
    tokens_per_sec: float | None,
    tokens: int | None,
    api_keys: tuple[str, ...],
    accept_any_key: bool,
    embed_dims: int | None,
    fault_rate: float | None,
    fault_kind: str | None,
    stamp_tokens: bool,
    rpm: int | None,
    tpm: int | None,
    context_window: int | None,
    processes: int,
) -> None:
    """Serve every provider's API as a mock, each under /<provider> (tests, demos, load tests).

    Faults, the text engine and the rate limits are shared; `llm-fleet providers`
    lists the providers and their mocks' paths.
    """
    from dataclasses import replace

    from providers.mock.config import PROFILES
    from providers.mock.server import run_mock

    overrides: dict[str, Any] = {
        "ttft_ms": ttft_ms,
        "tokens_per_sec": tokens_per_sec,
        "max_tokens_default": tokens,
        "embed_dims": embed_dims,
        "fault_rate": fault_rate,
        "fault_kind": fault_kind,
        "requests_per_minute": rpm,
        "tokens_per_minute": tpm,
        "context_window": context_window,
    }
    config = replace(PROFILES[profile], **{k: v for k, v in overrides.items() if v is not None})
    if api_keys:
        config = replace(config, api_keys=frozenset(api_keys))
    config = replace(config, accept_any_key=accept_any_key, stamp_tokens=stamp_tokens)
    try:
        from providers.mock.faults import FaultSpecError, parse_fault

        parse_fault(config.fault_kind)
    except FaultSpecError as exc:
        raise click.BadParameter(str(exc), param_hint="--fault-kind") from None
    run_mock(config, host, port, processes)


@main.command("providers")
@click.option("--json", "as_json", is_flag=True, help="One JSON object per provider.")
def providers_cmd(as_json: bool) -> None:
    """List every provider a worker can call: capabilities, address, credential fields.

    Addresses include the operator's FLEET_PROVIDER_URLS overrides.
    """
    import msgspec

    from providers.core.http import HttpClientPool
    from providers.registry import default_registry

    try:
        settings = Settings.from_env()
        registry = default_registry(
            HttpClientPool(), settings.provider_urls, settings.provider_token_urls
        )
    except (ConfigError, ValueError) as exc:
        raise click.ClickException(str(exc)) from None
    infos = registry.describe()
    if as_json:
        for info in infos:
            click.echo(msgspec.json.encode(info).decode())
        return
    width = max(len(i.name) for i in infos)
    for info in infos:
        caps = ",".join(info.capabilities)
        url = info.default_base_url or "(set by operator or credential base_url)"
        click.echo(f"{info.name:<{width}}  {caps:<34}  {url}")
        fields = ", ".join(info.credential_fields)
        click.echo(f"{'':<{width}}  auth: {info.auth}; credential fields: {fields}")


@main.command()
@click.option("--workers", "n_workers", type=int, default=2, show_default=True)
@click.option(
    "--texts", type=int, default=200, show_default=True, help="Texts to embed in the backfill."
)
@click.option(
    "--prompt", default="Explain in a few sentences why a message queue helps an AI platform."
)
def demo(n_workers: int, texts: int, prompt: str) -> None:
    """Start a mock provider and a worker fleet, stream a chat answer, run an embedding backfill."""
    from workers.demo import run_demo

    sys.exit(run_async(run_demo(n_workers=n_workers, n_texts=texts, prompt=prompt)))


main.add_command(migrate_cmd)
main.add_command(creds)
main.add_command(tenants)
main.add_command(audit)
main.add_command(prices_cmd)
main.add_command(top)
main.add_command(backfill)

if __name__ == "__main__":  # pragma: no cover
    main()
