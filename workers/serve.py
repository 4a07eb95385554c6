"""Assemble and run one worker process from its settings."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import Mapping

import structlog

from providers.http import HttpClientPool
from providers.registry import default_registry
from workers.config import Settings
from workers.credentials import CredentialResolver, StoredCredentials
from workers.crypto import Keyring
from workers.execute import Executor
from workers.health import build_health_app, start_health_server
from workers.metrics import WorkerMetrics
from workers.runtime import Worker

log = structlog.get_logger("llm_fleet.serve")


async def run_worker(
    settings: Settings, keyring: Keyring, vault: StoredCredentials | None = None
) -> None:
    http = HttpClientPool(settings.http)
    # Build the pooled client now: httpx imports its transport stack on first use,
    # which should neither land on the first job's latency nor run deep in a job's stack.
    http.client  # noqa: B018
    registry = default_registry(http, settings.provider_urls)
    executor = Executor(registry, CredentialResolver(keyring, vault), settings.retry)
    metrics = WorkerMetrics()
    worker = Worker(settings, executor, metrics)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, worker.request_stop)

    async def readiness() -> Mapping[str, bool]:
        return {"broker": worker.broker_connected}

    runner = None
    if settings.health_port:
        runner = await start_health_server(build_health_app(metrics, readiness), settings.health_port)
    log.info(
        "worker_starting", worker=settings.worker_id, key_id=keyring.active_kid,
        providers=registry.names(), health_port=settings.health_port or None,
    )
    try:
        await worker.run()
    finally:
        await http.aclose()
        if runner is not None:
            await runner.cleanup()
