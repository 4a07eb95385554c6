"""Start and stop the pieces a benchmark needs: mock providers and worker processes.

Everything runs as real subprocesses (`python -m workers.cli ...`), exactly as
deployed, so worker CPU and RSS can be read per process with psutil. Each fleet
gets a fresh `INTEGRATION_CRYPTO_KEY` and sealed credentials (no database on the
hot path: workers run with `DATABASE_URL=""`).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aio_pika
import httpx
import psutil  # type: ignore[import-untyped,unused-ignore]

from bench import report
from bench.streams import CountingClient
from contracts.amqp import declare_topology
from contracts.brokers import broker_urls
from contracts.jobs import Credential, Target
from contracts.topology import MESSAGE_QUEUES
from workers.crypto import Keyring, seal

ROOT = Path(__file__).resolve().parents[1]
MOCK_KEY = "sk-bench-mock-key-0001"
CHAT_MODEL = "mock-model"
EMBED_MODEL = "text-embedding-3-small"
BENCH_VHOST = "llm-fleet-bench"
DEFAULT_AMQP_URL = "amqp://guest:guest@127.0.0.1:5672/"


# -- specs ---------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MockSpec:
    """One mock provider process (`llm-fleet mock-provider` flags)."""

    ttft_ms: float = 0.0
    tokens_per_sec: float = 0.0
    tokens: int = 50
    embed_dims: int = 1536
    stamp_tokens: bool = False
    processes: int = 1
    # Per-key budgets the mock enforces (0 = unlimited). They hold per process: a
    # rate-limited mock must run as one process for its limit to mean anything.
    rpm: int = 0
    tpm: int = 0

    def describe(self) -> dict[str, Any]:
        described: dict[str, Any] = {
            "ttft_ms": self.ttft_ms,
            "tokens_per_sec": self.tokens_per_sec,
            "tokens": self.tokens,
            "embed_dims": self.embed_dims,
            "stamp_tokens": self.stamp_tokens,
            "mock_processes": self.processes,
        }
        if self.rpm or self.tpm:
            described |= {"requests_per_min": self.rpm, "tokens_per_min": self.tpm}
        return described


def instant(tokens: int = 50, **kw: Any) -> MockSpec:
    return MockSpec(ttft_ms=0.0, tokens_per_sec=0.0, tokens=tokens, **kw)


def realistic(tokens: int = 200, **kw: Any) -> MockSpec:
    return MockSpec(ttft_ms=300.0, tokens_per_sec=50.0, tokens=tokens, **kw)


@dataclass(frozen=True, slots=True)
class WorkerSpec:
    concurrency: int = 128
    coalesce_ms: float | None = None  # None: the worker's own default
    queues: str = "llm.chat,llm.embed"
    extra_env: Mapping[str, str] = field(default_factory=dict)

    def describe(self) -> dict[str, Any]:
        return {
            "concurrency": self.concurrency,
            "coalesce_ms": self.coalesce_ms if self.coalesce_ms is not None else "worker default",
            "queues": self.queues,
            "database": "none (sealed credentials)",
        }


# -- run context ---------------------------------------------------------------


@dataclass(slots=True)
class BenchContext:
    out: Path
    quick: bool
    amqp_url: str
    logdir: Path
    machine: dict[str, Any] = field(default_factory=dict)

    def save(self, name: str, data: Mapping[str, Any]) -> Path:
        full = {"benchmark": name, "quick": self.quick, "machine": self.machine, **data}
        return report.write_json(self.out, name, full)


def bench_amqp_url() -> str:
    """AMQP_URL when set; else a dedicated vhost on the local broker.

    A vhost of its own keeps the benchmark's jobs away from any worker a
    developer left running on `/`, and vice versa.
    """
    if url := os.environ.get("AMQP_URL"):
        return url
    parts = urllib.parse.urlsplit(DEFAULT_AMQP_URL)
    if shutil.which("rabbitmqctl") is None:
        return DEFAULT_AMQP_URL
    run = ["rabbitmqctl", "-q"]
    listed = subprocess.run([*run, "list_vhosts"], capture_output=True, text=True, check=False)
    if listed.returncode != 0:
        return DEFAULT_AMQP_URL
    if BENCH_VHOST not in listed.stdout.split():
        subprocess.run([*run, "add_vhost", BENCH_VHOST], capture_output=True, check=False)
    subprocess.run(
        [*run, "set_permissions", "-p", BENCH_VHOST, parts.username or "guest", ".*", ".*", ".*"],
        capture_output=True,
        check=False,
    )
    return urllib.parse.urlunsplit(parts._replace(path="/" + BENCH_VHOST))


async def purge_fleet_queues(amqp_url: str) -> None:
    """Jobs left by an aborted run would land on this run's workers."""
    conn = await aio_pika.connect(amqp_url)
    try:
        await declare_topology(conn)
        channel = await conn.channel()
        for name in MESSAGE_QUEUES:
            await (await channel.get_queue(name)).purge()
    finally:
        await conn.close()


# -- processes -----------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass(slots=True)
class Proc:
    """A child process plus a psutil handle for CPU and memory readings."""

    name: str
    popen: subprocess.Popen[bytes]
    log: Path
    ps: psutil.Process

    @property
    def pid(self) -> int:
        return self.popen.pid

    def _tree(self) -> list[psutil.Process]:
        # The mock forks children with --processes > 1; count them too.
        try:
            return [self.ps, *self.ps.children(recursive=True)]
        except psutil.NoSuchProcess:
            return []

    def cpu_seconds(self) -> float:
        """user + system CPU seconds of the process and its children so far."""
        total = 0.0
        for p in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                t = p.cpu_times()
                total += t.user + t.system
        return total

    def rss_mb(self) -> float:
        total = 0
        for p in self._tree():
            with contextlib.suppress(psutil.NoSuchProcess):
                total += p.memory_info().rss
        return total / 2**20

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""


def spawn(name: str, args: list[str], env: Mapping[str, str], logdir: Path) -> Proc:
    log = logdir / f"{name}.log"
    with log.open("ab") as out:
        popen = subprocess.Popen(
            [sys.executable, "-m", "workers.cli", *args],
            env=dict(env),
            stdout=out,
            stderr=subprocess.STDOUT,
            cwd=ROOT,
        )
    return Proc(name, popen, log, psutil.Process(popen.pid))


async def stop(procs: list[Proc], grace: float = 10.0) -> None:
    for p in procs:
        if p.popen.poll() is None:
            p.popen.send_signal(signal.SIGTERM)
    give_up = time.monotonic() + grace
    for p in procs:
        try:
            await asyncio.to_thread(p.popen.wait, max(0.1, give_up - time.monotonic()))
        except subprocess.TimeoutExpired:
            p.popen.kill()
            await asyncio.to_thread(p.popen.wait, 5)


async def wait_ready(url: str, proc: Proc, within: float = 30.0) -> None:
    give_up = time.monotonic() + within
    headers = {"Authorization": f"Bearer {MOCK_KEY}"}
    async with httpx.AsyncClient(timeout=2.0) as http:
        while True:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited during start-up:\n{proc.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url, headers=headers)).status_code == 200:
                    return
            if time.monotonic() > give_up:
                raise TimeoutError(f"{proc.name} not ready at {url} within {within:.0f}s")
            await asyncio.sleep(0.1)


def broker_process(amqp_url: str) -> psutil.Process | None:
    """The local RabbitMQ VM serving `amqp_url`, if any: its CPU shows where a bottleneck
    sits. Chosen by the port it listens on, since test and cluster nodes may run beside it."""
    port = urllib.parse.urlsplit(broker_urls(amqp_url)[0]).port or 5672
    for p in psutil.process_iter(["name"]):
        if p.info["name"] != "beam.smp":
            continue
        with contextlib.suppress(psutil.Error):
            if any(
                c.status == psutil.CONN_LISTEN and c.laddr.port == port
                for c in p.net_connections(kind="tcp")
            ):
                return p
    return None


def cpu_of(p: psutil.Process | None) -> float:
    if p is None:
        return 0.0
    try:
        t = p.cpu_times()
    except psutil.Error:
        return 0.0
    return float(t.user + t.system)


# -- fleet ---------------------------------------------------------------------


@dataclass(slots=True)
class Mock:
    spec: MockSpec
    proc: Proc
    port: int

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/openai/v1"

    @property
    def stats_url(self) -> str:
        """The mock's counters (`/_mock/stats`, per process)."""
        return f"http://127.0.0.1:{self.port}/_mock/stats"


@dataclass(slots=True)
class Fleet:
    """Mocks (one per provider name), workers and a connected FleetClient."""

    amqp_url: str
    keyring: Keyring
    mocks: dict[str, Mock]
    workers: list[Proc]
    client: CountingClient
    worker_spec: WorkerSpec
    # Each worker's health server: /metrics there has its Prometheus counters.
    health_urls: list[str] = field(default_factory=list)
    _sealed: dict[str, str] = field(default_factory=dict)

    def sealed(self, provider: str) -> str:
        # The envelope is bound to its provider name (AES-GCM associated data).
        if provider not in self._sealed:
            # For the client's broker user (its jobs' tenant), for as long as a run may take.
            self._sealed[provider] = seal(
                self.keyring, provider, {"api_key": MOCK_KEY}, tenant=self.client.user
            )
        return self._sealed[provider]

    def target(self, provider: str = "mock", model: str = CHAT_MODEL) -> Target:
        return Target(
            provider=provider, model=model, credential=Credential(sealed=self.sealed(provider))
        )

    def describe(self) -> dict[str, Any]:
        return {
            "workers": len(self.workers),
            "worker": self.worker_spec.describe(),
            "mocks": {name: m.spec.describe() for name, m in self.mocks.items()},
        }


def mock_args(spec: MockSpec, port: int) -> list[str]:
    """`llm-fleet mock-provider` arguments for one mock process."""
    args = [
        "mock-provider",
        "--port",
        str(port),
        "--api-key",
        MOCK_KEY,
        "--ttft-ms",
        str(spec.ttft_ms),
        "--tokens-per-sec",
        str(spec.tokens_per_sec),
        "--tokens",
        str(spec.tokens),
        "--embed-dims",
        str(spec.embed_dims),
        "--processes",
        str(spec.processes),
    ]
    if spec.rpm:
        args += ["--rpm", str(spec.rpm)]
    if spec.tpm:
        args += ["--tpm", str(spec.tpm)]
    return [*args, "--stamp-tokens"] if spec.stamp_tokens else args


def _worker_env(base: Mapping[str, str], spec: WorkerSpec, index: int) -> dict[str, str]:
    env = {**base, "FLEET_HEALTH_PORT": str(free_port()), "FLEET_WORKER_ID": f"bench-{index}"}
    if spec.coalesce_ms is not None:
        env["FLEET_COALESCE_MS"] = str(spec.coalesce_ms)
    env.update(spec.extra_env)
    return env


@contextlib.asynccontextmanager
async def start_fleet(
    ctx: BenchContext,
    mocks: Mapping[str, MockSpec],
    *,
    workers: int = 1,
    worker: WorkerSpec | None = None,
) -> AsyncIterator[Fleet]:
    """Mocks (provider name → spec, e.g. {"mock": instant(), "vllm": realistic()}),
    `workers` worker processes, all ready, plus a connected FleetClient."""
    spec = worker or WorkerSpec()
    await purge_fleet_queues(ctx.amqp_url)
    key = base64.b64encode(os.urandom(32)).decode()
    keyring = Keyring.from_env({"INTEGRATION_CRYPTO_KEY": key})
    procs: list[Proc] = []
    try:
        running: dict[str, Mock] = {}
        for name, mspec in mocks.items():
            port = free_port()
            proc = spawn(f"mock-{name}-{port}", mock_args(mspec, port), os.environ, ctx.logdir)
            procs.append(proc)
            running[name] = Mock(mspec, proc, port)
        base_env = {
            **os.environ,
            "AMQP_URL": ctx.amqp_url,
            "DATABASE_URL": "",
            "INTEGRATION_CRYPTO_KEY": key,
            "FLEET_PROVIDER_URLS": ",".join(f"{n}={m.url}" for n, m in running.items()),
            "PYTHONPATH": str(ROOT),
        }
        worker_procs: list[Proc] = []
        health_urls: list[str] = []
        ready: list[Awaitable[None]] = []
        for i in range(workers):
            env = _worker_env(base_env, spec, i + 1)
            args = [
                "worker",
                "--queues",
                spec.queues,
                "--concurrency",
                str(spec.concurrency),
                "--grace",
                "5",
            ]
            proc = spawn(f"worker-{i + 1}-{os.getpid()}", args, env, ctx.logdir)
            procs.append(proc)
            worker_procs.append(proc)
            health = f"http://127.0.0.1:{env['FLEET_HEALTH_PORT']}"
            health_urls.append(health)
            ready.append(wait_ready(f"{health}/readiness/", proc))
        ready += [wait_ready(f"{m.url}/models", m.proc) for m in running.values()]
        await asyncio.gather(*ready)
        client = CountingClient(ctx.amqp_url, default_timeout=120, name="llm-fleet bench")
        await client.connect()
        try:
            yield Fleet(ctx.amqp_url, keyring, running, worker_procs, client, spec, health_urls)
        finally:
            await client.close()
    finally:
        await stop(procs)


# -- load helpers --------------------------------------------------------------


async def run_pool(n: int, concurrency: int, job: Callable[[int], Awaitable[None]]) -> float:
    """Run job(0..n-1) with at most `concurrency` at once; returns wall seconds."""
    counter = iter(range(n))

    async def lane() -> None:
        for i in counter:
            await job(i)

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(min(n, concurrency))))
    return time.perf_counter() - started


def make_logdir() -> Path:
    return Path(tempfile.mkdtemp(prefix="llm-fleet-bench-"))
