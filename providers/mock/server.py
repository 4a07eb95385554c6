"""Start the mock server: in-process for tests, or as a blocking multi-process server.

One process serves every provider's mock, each under its own path prefix (see
`providers.mock.app`). Command line: ``llm-fleet mock-provider``.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
from collections.abc import Callable
from dataclasses import dataclass
from typing import Final

from aiohttp import web

from providers.mock.app import MockProvider, build_app, mock_providers, mock_stats
from providers.mock.config import MockConfig

_STOP_SIGNALS: Final = (signal.SIGTERM, signal.SIGINT)


@dataclass(frozen=True, slots=True)
class RunningMock:
    """A started mock; `port` is the bound one, also when 0 was asked for."""

    runner: web.AppRunner
    host: str
    port: int

    @property
    def root(self) -> str:
        """The server's root; the admin API is under `{root}/_mock`."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def url(self, prefix: str) -> str:
        """The base URL of one provider's mock, as the fleet's adapter takes it."""
        return f"{self.root}/{prefix}{_mock_provider(prefix).api_path}"

    def sdk_url(self, prefix: str) -> str:
        """The base URL of one provider's mock, as that provider's official SDK takes it."""
        return f"{self.root}/{prefix}{_mock_provider(prefix).sdk_path}"

    def token_url(self, prefix: str) -> str | None:
        """One provider's mock token endpoint, where it has one."""
        path = _mock_provider(prefix).token_path
        return None if path is None else f"{self.root}/{prefix}{path}"

    @property
    def base_url(self) -> str:
        """The OpenAI dialect's base URL (what the `mock` provider calls)."""
        return self.url("openai")

    async def close(self) -> None:
        await self.runner.cleanup()


def _mock_provider(prefix: str) -> MockProvider:
    for provider in mock_providers():
        if provider.prefix == prefix:
            return provider
    raise KeyError(prefix)


async def start_mock(
    config: MockConfig,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    reuse_port: bool = False,
    shutdown_timeout: float = 1.0,
) -> RunningMock:
    """Serve `config` on host:port inside the running loop until `close()`.

    `shutdown_timeout` bounds how long `close()` waits for in-flight requests, so a
    test that leaves a stalled stream behind does not hang its teardown.
    """
    # handler_cancellation: a client that gives up mid-stall frees its handler at once,
    # instead of holding it (and its timers) until the stall ends.
    app = build_app(config)
    runner = web.AppRunner(
        app,
        access_log=None,
        shutdown_timeout=shutdown_timeout,
        handler_cancellation=True,
    )
    await runner.setup()
    server = runner.server
    if server is not None:
        mock_stats(app).connections = lambda: server.connections
    site = web.TCPSite(runner, host, port, reuse_port=reuse_port or None)
    try:
        await site.start()
    except BaseException:
        await runner.cleanup()
        raise
    bound_port = int(runner.addresses[0][1])
    return RunningMock(runner=runner, host=host, port=bound_port)


def _loop_factory() -> Callable[[], asyncio.AbstractEventLoop] | None:
    try:
        import uvloop
    except ImportError:
        return None
    factory: Callable[[], asyncio.AbstractEventLoop] = uvloop.new_event_loop
    return factory


async def _serve_until_signalled(
    config: MockConfig, host: str, port: int, reuse_port: bool
) -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in _STOP_SIGNALS:
        loop.add_signal_handler(sig, stop.set)
    # A forked worker inherits the blocked mask its supervisor used around fork().
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    mock = await start_mock(config, host, port, reuse_port=reuse_port)
    urls = ", ".join(mock.url(p.prefix) for p in mock_providers())
    print(f"mock providers on {urls} (pid {os.getpid()})", file=sys.stderr)
    try:
        await stop.wait()
    finally:
        await mock.close()


def _serve(config: MockConfig, host: str, port: int, reuse_port: bool) -> None:
    with asyncio.Runner(loop_factory=_loop_factory()) as runner:
        runner.run(_serve_until_signalled(config, host, port, reuse_port))


def _fork_worker(config: MockConfig, host: str, port: int) -> int:
    pid = os.fork()
    if pid:
        return pid
    code = 0
    try:
        _serve(config, host, port, reuse_port=True)
    except BaseException as exc:  # a forked child must never return into the parent's code
        print(f"mock worker {os.getpid()} failed: {exc!r}", file=sys.stderr)
        code = 1
    finally:
        os._exit(code)


def run_mock(
    config: MockConfig, host: str = "127.0.0.1", port: int = 8000, processes: int = 1
) -> None:
    """Serve until SIGTERM/SIGINT. With `processes > 1`, fork workers sharing the port
    through SO_REUSEPORT so the kernel spreads connections and the mock is never the
    bottleneck of a benchmark. Admin state (`/_mock/*`) is per worker.
    """
    if processes < 1:
        raise ValueError("processes must be >= 1")
    if processes == 1:
        _serve(config, host, port, reuse_port=False)
        return
    if port == 0:
        raise ValueError("processes > 1 needs a fixed port: each worker binds it separately")
    # Blocked until handlers exist, so an early signal cannot kill a half-started fleet.
    signal.pthread_sigmask(signal.SIG_BLOCK, _STOP_SIGNALS)
    children = [_fork_worker(config, host, port) for _ in range(processes)]
    alive = set(children)

    def forward(signum: int, _frame: object) -> None:
        for pid in alive:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signum)

    previous = {sig: signal.signal(sig, forward) for sig in _STOP_SIGNALS}
    signal.pthread_sigmask(signal.SIG_UNBLOCK, _STOP_SIGNALS)
    try:
        while alive:
            pid, _status = os.wait()
            alive.discard(pid)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
