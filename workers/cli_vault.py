"""`llm-fleet migrate` and `llm-fleet creds add|list|verify|share|unshare|revoke|rotate`.

Secrets enter through stdin or a named environment variable, never through
argv (which `ps` and shell history show to everyone). Nothing here prints a
secret: `list` opens rows only to mark the damaged ones (when a key is given),
and keeps nothing of what they hold.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import asyncpg
import click

from contracts.brokers import BrokerRing
from contracts.client import FleetClient
from contracts.errors import FleetError
from contracts.jobs import Credential, Target
from workers.cli_settings import database_settings
from workers.config import Settings
from workers.crypto import Keyring, KeyringError, seal, secret_fields
from workers.migrate import MigrationError, migrate, migrations_dir
from workers.vault import (
    LEGACY_SCHEME,
    CredentialExists,
    CredentialInfo,
    KeyVerdicts,
    Vault,
    decrypt_fields,
    parse_id,
)
from workers.vault_keys import (
    ConstraintState,
    RotationReport,
    finish_constraints,
    record_keys,
    rotate,
)

T = TypeVar("T")

# A verify job's envelope outlives its wait by this much (queueing, clock skew).
_VERIFY_TTL_MARGIN = 120.0


def _run(coro: Coroutine[Any, Any, T]) -> T:
    return asyncio.run(coro)


def _settings() -> Settings:
    return database_settings("the credential commands need")


def _keyring() -> Keyring:
    try:
        return Keyring.from_env(os.environ)
    except KeyringError as exc:
        raise click.ClickException(str(exc)) from None


def _optional_keyring() -> Keyring | None:
    """The keyring when INTEGRATION_CRYPTO_KEY is set; commands that can do without it."""
    if not os.environ.get("INTEGRATION_CRYPTO_KEY"):
        return None
    return _keyring()


def _with_vault(fn: Callable[[Vault], Awaitable[T]], keyring: Keyring | None = None) -> T:
    """Run one vault operation; turn expected failures into one clear CLI error."""
    settings = _settings()

    async def go() -> T:
        vault = Vault(settings.database_url, keyring, cache_ttl=0)
        try:
            return await fn(vault)
        finally:
            await vault.close()

    try:
        return _run(go())
    except FleetError as exc:
        raise click.ClickException(exc.message) from None
    except (CredentialExists, ValueError) as exc:
        raise click.ClickException(str(exc)) from None


@click.command("migrate")
def migrate_cmd() -> None:
    """Create the database if needed and apply missing SQL migrations (DATABASE_URL)."""
    settings = _settings()
    try:
        directory = migrations_dir(settings.migrations_dir or None)
        applied = _run(migrate(settings.database_url, directory))
    except MigrationError as exc:
        raise click.ClickException(str(exc)) from None
    except (asyncpg.PostgresError, asyncpg.InterfaceError, OSError) as exc:
        # asyncpg messages name the server, database and role, never the password.
        raise click.ClickException(f"migration failed: {type(exc).__name__}: {exc}") from None
    for name in applied:
        click.echo(f"applied {name}")
    click.echo("database schema is up to date" if not applied else f"{len(applied)} applied")
    try:
        states = _with_vault(finish_constraints)
    except asyncpg.LockNotAvailableError:
        click.echo(
            "warning: credentials table busy, constraints not checked; run migrate again", err=True
        )
    else:
        _report_constraints(states)
    keyring = _optional_keyring()
    if keyring is None:
        click.echo("INTEGRATION_CRYPTO_KEY not set: no key-check records written")
        return
    # A worker judges its key by this record; write it now for keys already proven
    # (or about to encrypt for the first time) so no worker has to fall back to rows.
    outcomes = _with_vault(lambda v: record_keys(v, keyring), keyring)
    if outcomes is None:
        click.echo("no vault_key_checks table in this schema: no key-check records written")
        return
    for kid, outcome in outcomes.items():
        words = {
            "checked": "key-check record opens",
            "recorded": "key-check record written",
            "unused": "nothing stored under it, not recorded",
        }
        click.echo(f"key id {kid!r}: {words.get(outcome, outcome)}")


def _report_constraints(states: list[ConstraintState]) -> None:
    """Constraints of migration 0003 that existing rows break are named, never hidden."""
    for st in states:
        if st.validated:
            click.echo(f"constraint {st.name} now holds for every row")
            continue
        ids = ", ".join(st.row_ids) or "(rows written since the check; run migrate again)"
        click.echo(
            f"warning: constraint {st.name} holds for new and changed rows only: "
            f"{len(st.row_ids)} existing row(s) break it: {ids}. Fix or delete them "
            "and run `llm-fleet migrate` again",
            err=True,
        )


@click.group("creds")
def creds() -> None:
    """Provider credentials stored encrypted in PostgreSQL (AES-256-GCM)."""


def _read_secret(from_env: str | None) -> dict[str, str]:
    if from_env:
        text = os.environ.get(from_env)
        if not text:
            raise click.ClickException(f"environment variable {from_env} is not set or empty")
    elif sys.stdin.isatty():
        text = click.prompt("API key (or JSON object of fields)", hide_input=True)
    else:
        text = sys.stdin.read()
    try:
        return secret_fields(text)
    except ValueError as exc:
        raise click.ClickException(str(exc)) from None


@creds.command("add")
@click.option("--provider", required=True, help="Provider the key is for (e.g. openai).")
@click.option("--name", required=True, help="A name unique per tenant and provider.")
@click.option(
    "--tenant",
    required=True,
    help="The owner: the broker user whose jobs may use it (and tenants it is shared with).",
)
@click.option("--from-env", "from_env", metavar="VAR", help="Read the secret from this env var.")
@click.option(
    "--verify",
    "check_first",
    is_flag=True,
    help="Ask the provider, through the fleet, whether the credential works, and store "
    "it only if it does.",
)
@click.option("--model", default="verify", show_default=True, help="Model sent with --verify.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="--verify wait.")
def add_cmd(
    provider: str,
    name: str,
    tenant: str,
    from_env: str | None,
    check_first: bool,
    model: str,
    timeout: float,
) -> None:
    """Store a key read from stdin (or --from-env VAR); print the new credential id.

    The input is either the bare API key or a JSON object of string fields
    (api_key, base_url, endpoint, deployment, region, project, ...; a Google
    service-account key file is such an object as it stands).
    """
    fields = _read_secret(from_env)
    keyring = _keyring()
    if check_first:
        # Sealed for the workers as a job would carry it: nothing is stored until the
        # provider has accepted it.
        ok, detail = _ask_verify(_sealed_target(keyring, provider, model, fields, timeout), timeout)
        if not ok:
            raise click.ClickException(f"not stored: {provider} refused the credential: {detail}")
        click.echo(f"verified: {detail}", err=True)
    cid = _with_vault(lambda v: v.add(tenant, provider, name, fields), keyring)
    click.echo(cid)


def _cli_user() -> str:
    """The broker user this CLI publishes as: the tenant of the jobs it sends."""
    try:
        return BrokerRing(_settings().amqp_url).user
    except ValueError as exc:
        raise click.ClickException(f"AMQP_URL: {exc}") from None


def _sealed_target(
    keyring: Keyring, provider: str, model: str, fields: dict[str, str], timeout: float
) -> Target:
    """A verify target carrying `fields` sealed for this CLI's own jobs, briefly."""
    envelope = seal(keyring, provider, fields, tenant=_cli_user(), ttl=timeout + _VERIFY_TTL_MARGIN)
    return Target(provider=provider, model=model, credential=Credential(sealed=envelope))


def _ask_verify(target: Target, timeout: float) -> tuple[bool, str]:
    """The fleet's verdict on a credential; a failure to ask is reported as one."""

    async def ask() -> tuple[bool, str]:
        async with FleetClient(_settings().amqp_url, default_timeout=timeout) as client:
            try:
                result = await client.verify(target, deadline=time.time() + timeout)
            except FleetError as exc:
                return False, f"{exc.code.value}: {exc.message}"
        return result.ok, result.detail

    try:
        return _run(ask())
    except OSError as exc:
        raise click.ClickException(f"cannot reach RabbitMQ: {type(exc).__name__}") from None


def _when(info: CredentialInfo, attr: str) -> str:
    value = getattr(info, attr)
    return "-" if value is None else str(value.replace(microsecond=0).isoformat())


@creds.command("list")
@click.option("--provider", help="Only this provider.")
@click.option("--tenant", help="Only this tenant.")
@click.option("--all", "include_revoked", is_flag=True, help="Include revoked credentials.")
def list_cmd(provider: str | None, tenant: str | None, include_revoked: bool) -> None:
    """Show stored credentials (metadata only; secrets are never shown).

    TENANT is the owner, SHARED the tenants it is shared with. SCHEME is `v2`, or
    `v1` for rows still encrypted under the fleet key itself without their tenant
    in the associated data (`creds rotate` upgrades them). With
    INTEGRATION_CRYPTO_KEY set, a STATE column says which rows open: `ok`,
    `damaged` (does not open although its key is proven right), `wrong key` or
    `no key` (its key id is not in INTEGRATION_CRYPTO_KEY(S)). `--tenant T` shows
    what T's jobs may use: its own credentials and those shared with it.
    """
    keyring = _optional_keyring()

    async def fetch(v: Vault) -> tuple[list[CredentialInfo], KeyVerdicts | None]:
        rows = await v.list(provider=provider, tenant=tenant, include_revoked=include_revoked)
        verdicts = await v.judge_rows([r.id for r in rows]) if keyring is not None else None
        return rows, verdicts

    rows, verdicts = _with_vault(fetch, keyring)
    head = ("ID", "TENANT", "SHARED", "PROVIDER", "NAME", "KEY ID", "SCHEME", "CREATED", "REVOKED")
    table = [(*head, "STATE") if verdicts is not None else head]
    for r in rows:
        line = (
            r.id,
            r.tenant,
            ",".join(r.shared_with) or "-",
            r.provider,
            r.name,
            r.key_id,
            f"v{r.scheme}",
            _when(r, "created_at"),
            _when(r, "revoked_at"),
        )
        table.append((*line, verdicts.row_state(r.id, r.key_id)) if verdicts else line)
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    for row in table:
        click.echo("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
    legacy = sum(r.scheme == LEGACY_SCHEME for r in rows)
    if legacy:
        click.echo(
            f"{legacy} credential(s) listed use scheme v1 (the fleet key itself, no tenant in "
            "their associated data): run `llm-fleet creds rotate` to upgrade them",
            err=True,
        )


def _existing(credential_id: str) -> CredentialInfo:
    if parse_id(credential_id) is None:
        raise click.ClickException(f"{credential_id!r} is not a credential id (a uuid)")
    info = _with_vault(lambda v: v.get_row(credential_id))
    if info is None:
        raise click.ClickException(f"no credential with id {credential_id}")
    return info


@creds.command("verify")
@click.argument("credential_id")
@click.option("--model", default="verify", show_default=True, help="Model name sent with the job.")
@click.option("--timeout", type=float, default=60.0, show_default=True, help="Seconds to wait.")
def verify_cmd(credential_id: str, model: str, timeout: float) -> None:
    """Ask the provider, through the fleet, whether a stored credential works.

    The job goes out as this CLI's broker user. When that user may use the
    credential (its owner, or shared with it) the job names it by id, as its
    tenant's jobs do; otherwise (an operator checking a tenant's key) the CLI opens
    the row with INTEGRATION_CRYPTO_KEY and sends it sealed for itself.
    """
    info = _existing(credential_id)
    if info.revoked_at is not None:
        revoked = _when(info, "revoked_at")
        raise click.ClickException(f"credential {info.id} was revoked at {revoked}")
    user = _cli_user()
    if user == info.tenant or user in info.shared_with:
        target = Target(provider=info.provider, model=model, credential=Credential(id=info.id))
    else:
        keyring = _keyring()

        async def fields_of(v: Vault) -> dict[str, str]:
            row = await v.sealed_row(info.id)
            if row is None:
                raise click.ClickException(f"no credential with id {info.id}")
            return decrypt_fields(keyring, row)

        fields = _with_vault(fields_of, keyring)
        target = _sealed_target(keyring, info.provider, model, fields, timeout)
        click.echo(
            f"{info.id} belongs to tenant {info.tenant!r}, not to {user!r} (this CLI's broker "
            "user): sent sealed for it",
            err=True,
        )
    ok, detail = _ask_verify(target, timeout)
    click.echo(f"{'ok' if ok else 'not ok'}: {info.provider} credential {info.id}: {detail}")
    if not ok:
        sys.exit(1)


@creds.command("share")
@click.argument("credential_id")
@click.option("--with", "tenant", required=True, help="The tenant (broker user) to share with.")
def share_cmd(credential_id: str, tenant: str) -> None:
    """Let another tenant's jobs use a credential (the owner's stay able to)."""
    info = _existing(credential_id)
    if _with_vault(lambda v: v.share(info.id, tenant)):
        click.echo(f"shared {info.id} ({info.tenant}/{info.provider}/{info.name}) with {tenant}")
    else:
        click.echo(f"{info.id} was already shared with {tenant}")


@creds.command("unshare")
@click.argument("credential_id")
@click.option("--with", "tenant", required=True, help="The tenant to stop sharing with.")
def unshare_cmd(credential_id: str, tenant: str) -> None:
    """Stop another tenant's jobs using a credential; workers drop their cached copy at once."""
    info = _existing(credential_id)
    if not _with_vault(lambda v: v.unshare(info.id, tenant)):
        click.echo(f"{info.id} was not shared with {tenant}")
        return
    click.echo(f"{info.id} is no longer shared with {tenant}")
    _tell_workers_to_forget(info.id)


@creds.command("revoke")
@click.argument("credential_id")
def revoke_cmd(credential_id: str) -> None:
    """Revoke a credential; running workers drop their cached copy at once."""
    info = _existing(credential_id)
    if _with_vault(lambda v: v.revoke(info.id)):
        click.echo(f"revoked {info.id} ({info.tenant}/{info.provider}/{info.name})")
        _tell_workers_to_forget(info.id)
    else:
        click.echo(f"{info.id} was already revoked at {_when(info, 'revoked_at')}")


def _tell_workers_to_forget(credential_id: str) -> None:
    """Workers drop their cached copy of the row (and with it who may use it)."""
    try:
        _run(_broadcast_forget(credential_id))
    except Exception as exc:
        click.echo(
            f"warning: could not tell workers over RabbitMQ ({type(exc).__name__}); "
            "they catch up when their row cache expires (FLEET_VAULT_CACHE_SECONDS)",
            err=True,
        )


async def _broadcast_forget(credential_id: str) -> None:
    async with FleetClient(_settings().amqp_url, name="llm-fleet creds") as client:
        # The notice revocations use: a worker drops its cached row and reads it again.
        await client.credential_revoked(credential_id)


@creds.command("rotate")
@click.option("--batch-size", type=click.IntRange(min=1), default=100, show_default=True)
@click.option(
    "--max-batches", type=click.IntRange(min=1), help="Stop after N batches (run again to resume)."
)
def rotate_cmd(batch_size: int, max_batches: int | None) -> None:
    """Re-encrypt every row not under the active INTEGRATION_CRYPTO_KEY, or still v1.

    Rows end up as scheme v2 (the key derived for vault rows, the owner tenant
    in the associated data); v1 key-check records are rewritten too. Old keys
    must be in INTEGRATION_CRYPTO_KEYS (kid:base64,...). Safe beside running
    workers (of this version: they open v1 and v2) and safe to interrupt: run it
    again to continue.
    """
    keyring = _keyring()

    def progress(r: RotationReport) -> None:
        click.echo(f"batch {r.batches}: {r.rotated} re-encrypted under {r.active_kid!r} so far")

    report = _with_vault(
        lambda v: rotate(
            v, keyring, batch_size=batch_size, max_batches=max_batches, on_batch=progress
        ),
        keyring,
    )
    click.echo(
        f"re-encrypted {report.rotated} credential(s) under key id {report.active_kid!r} "
        f"in {report.batches} batch(es) ({report.upgraded} upgraded from v1); "
        f"{report.remaining} still to do"
    )
    for kid in report.checks_upgraded:
        click.echo(f"key-check record of key id {kid!r} upgraded to v2")
    for cid, reason in sorted(report.unreadable.items()):
        click.echo(f"cannot read {cid}: {reason}", err=True)
    for cid, reason in sorted(report.damaged.items()):
        click.echo(f"damaged {cid}: {reason}", err=True)
    for cid, constraint in sorted(report.refused.items()):
        click.echo(f"cannot change {cid}: its row breaks {constraint}", err=True)
    problems = []
    if report.unreadable:
        problems.append(
            f"{len(report.unreadable)} credential(s) could not be read and were left untouched; "
            "add their key to INTEGRATION_CRYPTO_KEYS and run again"
        )
    if report.damaged:
        problems.append(
            f"{len(report.damaged)} credential(s) are damaged (they do not open under a key "
            "proven right) and were left untouched; store those keys again and revoke these ids"
        )
    if report.refused:
        problems.append(
            f"{len(report.refused)} credential(s) break a constraint and were left untouched "
            "(see `llm-fleet migrate`); fix those rows and run again"
        )
    if problems:
        raise click.ClickException("; ".join(problems))
    if report.remaining and max_batches is not None:
        click.echo("stopped at --max-batches; run again to continue")
    elif report.remaining:
        raise click.ClickException(
            f"{report.remaining} row(s) were locked by another process; run again to finish"
        )
