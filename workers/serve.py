"""Assemble and run one worker process from its settings."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Mapping

import structlog

from contracts.errors import ProviderUnavailable
from providers.core.http import HttpClientPool
from providers.registry import default_registry
from workers.audit import AuditWriter
from workers.audit_rows import RecordBodies
from workers.config import ConfigError, Settings
from workers.credentials import CredentialResolver, StoredCredentials
from workers.crypto import Keyring
from workers.execute import Executor
from workers.health import build_health_app, start_health_server
from workers.metrics import WorkerMetrics
from workers.outcome import AttemptRecord
from workers.prices import load_price_table
from workers.runtime import Worker
from workers.tracing import open_tracing
from workers.vault import Vault
from workers.vault_keys import MAX_IDS_LOGGED, check_keys

log = structlog.get_logger("llm_fleet.serve")


async def open_vault(settings: Settings, keyring: Keyring) -> Vault | None:
    """The credential store, or None when DATABASE_URL is empty.

    Refuses to start (SystemExit) when stored credentials are under keys this
    worker lacks, or when a key it holds is the wrong one for its key id (the
    key-check record does not open): better one clear line at start-up than an
    `unauthorized` on every job. Damaged rows (ones that do not open under a key
    proven right) are logged and answered per job; they never stop a worker. An
    unreachable database is only a warning: sealed credentials still work, stored
    ones are retried per job, and readiness shows it.
    """
    if not settings.database_url:
        return None
    vault = Vault(settings.database_url, keyring, cache_ttl=settings.vault_cache_ttl)
    try:
        report = await check_keys(vault, keyring)
    except ProviderUnavailable as exc:
        log.warning("credential_store_unreachable_at_start", error=exc.message)
        return vault
    if report.problems:
        await vault.close()
        for problem in report.problems:
            log.error("credential_keys_missing", problem=problem)
        raise SystemExit("worker refused to start: " + "; ".join(report.problems))
    if not report.has_check_table:
        log.warning(
            "vault_key_checks_missing",
            hint="run `llm-fleet migrate`: keys are judged by their rows until then",
        )
    for kid in report.recorded:
        log.info("vault_key_check_recorded", key_id=kid, proven_by="rows")
    if report.damaged:
        ids = sorted(report.damaged)
        log.warning(
            "vault_damaged_rows",
            count=len(ids),
            credential_ids=ids[:MAX_IDS_LOGGED],
            key_ids=sorted(set(report.damaged.values())),
            hint="these rows do not open under a key proven right; jobs naming them are "
            "refused. Store those keys again and revoke these ids",
        )
    return vault


def _bodies_of(record: AttemptRecord) -> RecordBodies | None:
    if record.request_body is None:
        return None
    return RecordBodies(record.request_body, record.response_body)


async def run_worker(
    settings: Settings, keyring: Keyring, vault: StoredCredentials | None = None
) -> None:
    tracer = open_tracing(settings.tracing, instance_id=settings.worker_id)
    prices = load_price_table(settings.prices_file)  # a bad operator file stops start-up
    owned = await open_vault(settings, keyring) if vault is None else None
    http = HttpClientPool(settings.http)
    # Build the pooled client now: httpx imports its transport stack on first use,
    # which should neither land on the first job's latency nor run deep in a job's stack.
    http.client  # noqa: B018
    try:
        registry = default_registry(http, settings.provider_urls, settings.provider_token_urls)
    except ValueError as exc:  # an address for a provider this worker does not have
        raise ConfigError(str(exc)) from None
    executor = Executor(
        registry,
        CredentialResolver(keyring, vault or owned),
        settings.retry,
        tracer=tracer,
        keep_bodies=settings.audit.enabled and settings.audit.bodies,
    )
    metrics = WorkerMetrics(providers=registry.names())
    audit = None
    if settings.audit.enabled:
        # Every settled attempt's row is written before its ack (workers/audit.py);
        # a database without the audit tables stops start-up (run `llm-fleet migrate`).
        audit = AuditWriter(
            settings.database_url, settings.audit, observer=metrics, bodies=_bodies_of
        )
        await audit.start()
    worker = Worker(
        settings,
        executor,
        metrics,
        forget_credential=owned.forget if owned is not None else None,
        prices=prices,
        tracer=tracer,
        recorder=audit,
    )
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop)

    async def readiness() -> Mapping[str, bool]:
        checks = {"broker": worker.broker_connected}
        if owned is not None:
            checks["database"] = await owned.ping()
        if audit is not None:
            checks["audit"] = not audit.outage
        return checks

    runner = None
    if settings.health_port:
        runner = await start_health_server(
            build_health_app(metrics, readiness), settings.health_port, settings.health_host
        )
    log.info(
        "worker_starting",
        worker=settings.worker_id,
        key_id=keyring.active_kid,
        providers=registry.names(),
        health_port=settings.health_port or None,
        health_host=settings.health_host if settings.health_port else None,
        credential_store=owned is not None or vault is not None,
    )
    try:
        await worker.run()
    finally:
        if audit is not None:
            await audit.close(grace=settings.grace_period)
        # Spans still batched are sent now (the SDK's flush blocks: off the loop).
        await asyncio.to_thread(tracer.close)
        await http.aclose()
        if owned is not None:
            await owned.close()
        if runner is not None:
            await runner.cleanup()
