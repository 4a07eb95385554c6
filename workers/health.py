"""HTTP health and metrics endpoints: /healthz/, /readiness/, /metrics (aiohttp)."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping

from aiohttp import web
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from workers.metrics import WorkerMetrics

ReadinessCheck = Callable[[], Awaitable[Mapping[str, bool]]]


def build_health_app(metrics: WorkerMetrics, readiness: ReadinessCheck) -> web.Application:
    async def healthz(_: web.Request) -> web.Response:
        return web.json_response({"healthy": True})

    async def ready(_: web.Request) -> web.Response:
        checks = dict(await readiness())
        ok = all(checks.values())
        return web.json_response({"ready": ok, "checks": checks}, status=200 if ok else 503)

    async def prom(_: web.Request) -> web.Response:
        return web.Response(
            body=generate_latest(metrics.registry),
            headers={"Content-Type": CONTENT_TYPE_LATEST},
        )

    app = web.Application()
    app.router.add_get("/healthz/", healthz)
    app.router.add_get("/healthz", healthz)
    app.router.add_get("/readiness/", ready)
    app.router.add_get("/readiness", ready)
    app.router.add_get("/metrics", prom)
    return app


async def start_health_server(
    app: web.Application, port: int, host: str = "127.0.0.1"
) -> web.AppRunner:
    """Serve `app` on `host`:`port` (FLEET_HEALTH_HOST): loopback unless told otherwise,
    since /metrics names providers, models and queues to whoever can reach it."""
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
    except BaseException:
        await runner.cleanup()  # a port in use would otherwise leave the runner set up
        raise
    return runner
