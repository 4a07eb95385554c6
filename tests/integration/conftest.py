"""Integration fixtures: worker processes against real RabbitMQ, the mock provider in-process."""

from __future__ import annotations

import asyncio
import itertools
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import aio_pika
import asyncpg
import pytest

from bench.harness import purge_fleet_queues
from contracts import topology as t
from contracts.brokers import broker_user
from contracts.client import FleetClient
from contracts.jobs import Credential, Target
from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock
from tests.conftest import DEFAULT_AMQP
from workers.crypto import Keyring, seal
from workers.migrate import database_name, migrate, quote_ident, with_database
from workers.vault import Vault

MOCK_KEY = "sk-test-mock-key-0001"
# The broker user the tests' clients publish as, which the broker stamps on their
# jobs: the tenant sealed envelopes and stored credentials must be for.
TENANT = broker_user(os.environ.get("AMQP_URL", DEFAULT_AMQP))
CANARY_KEY = "sk-canary-7f3a9c1e5b2d4680aa11"
ROOT = Path(__file__).resolve().parents[2]

pytestmark = pytest.mark.integration


@pytest.fixture(scope="session")
async def mock() -> AsyncIterator[RunningMock]:
    config = MockConfig(
        api_keys=frozenset({MOCK_KEY, CANARY_KEY}), max_tokens_default=24, embed_dims=64
    )
    running = await start_mock(config, "127.0.0.1", 0)
    yield running
    await running.close()


@pytest.fixture(scope="session")
def keyring(crypto_key: str) -> Keyring:
    return Keyring.from_env({"INTEGRATION_CRYPTO_KEY": crypto_key})


def sealed_target(
    keyring: Keyring,
    *,
    model: str = "mock-chat",
    key: str = MOCK_KEY,
    provider: str = "mock",
    tenant: str | None = None,
) -> Target:
    """A target whose key is sealed for `tenant`'s jobs (default: the test clients' user)."""
    envelope = seal(keyring, provider, {"api_key": key}, tenant=tenant or TENANT)
    return Target(provider=provider, model=model, credential=Credential(sealed=envelope))


@pytest.fixture
def target(keyring: Keyring) -> Target:
    return sealed_target(keyring)


@dataclass
class WorkerProc:
    proc: subprocess.Popen[bytes]
    log: Path

    def logs(self) -> str:
        return self.log.read_text(errors="replace")

    @property
    def pid(self) -> int:
        return self.proc.pid

    def signal(self, sig: int) -> None:
        self.proc.send_signal(sig)

    async def wait(self, within: float = 60.0) -> int:
        give_up = time.monotonic() + within
        while self.proc.poll() is None:
            if time.monotonic() > give_up:
                raise TimeoutError(f"worker {self.pid} did not exit within {within}s")
            await asyncio.sleep(0.05)
        return self.proc.returncode


SpawnWorker = Callable[..., Awaitable[WorkerProc]]
_counter = itertools.count(1)


@pytest.fixture
async def spawn_worker(
    amqp_url: str, crypto_key: str, mock: RunningMock, tmp_path: Path
) -> AsyncIterator[SpawnWorker]:
    procs: list[WorkerProc] = []

    async def start(
        *,
        concurrency: int = 32,
        queues: str = "llm.chat,llm.embed,llm.batch",
        grace: float = 30.0,
        env: dict[str, str] | None = None,
        broker_url: str | None = None,
    ) -> WorkerProc:
        n = next(_counter)
        log = tmp_path / f"worker-{n}.log"
        full_env = {
            **os.environ,
            "AMQP_URL": broker_url or amqp_url,
            "INTEGRATION_CRYPTO_KEY": crypto_key,
            "FLEET_PROVIDER_URLS": (
                f"mock={mock.base_url},openai={mock.base_url},"
                f"anthropic-mock={mock.url('anthropic')}"
            ),
            "FLEET_HEALTH_PORT": "0",
            # No credential store unless a test asks for one (vault tests pass DATABASE_URL).
            "DATABASE_URL": "",
            "FLEET_COALESCE_MS": "10",
            "FLEET_LOG_LEVEL": "DEBUG",
            "FLEET_WORKER_ID": f"test-worker-{n}",
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        }
        with log.open("wb") as out:
            proc = subprocess.Popen(  # noqa: ASYNC220 - returns at once; readiness is polled below
                [
                    sys.executable,
                    "-m",
                    "workers.cli",
                    "worker",
                    "--queues",
                    queues,
                    "--concurrency",
                    str(concurrency),
                    "--grace",
                    str(grace),
                ],
                env=full_env,
                stdout=out,
                stderr=subprocess.STDOUT,
                cwd=ROOT,
            )
        worker = WorkerProc(proc, log)
        procs.append(worker)
        give_up = time.monotonic() + 30
        while '"worker_ready"' not in worker.logs():
            if proc.poll() is not None or time.monotonic() > give_up:
                raise RuntimeError(f"worker did not start:\n{worker.logs()}")
            await asyncio.sleep(0.05)
        return worker

    yield start
    for w in procs:
        if w.proc.poll() is None:
            w.proc.send_signal(signal.SIGKILL)
            w.proc.wait(10)


@pytest.fixture(autouse=True)
async def clean_queues(amqp_url: str) -> AsyncIterator[None]:
    """Every integration test starts with empty fleet queues."""
    await purge_fleet_queues(amqp_url)
    yield


@pytest.fixture
async def client(amqp_url: str) -> AsyncIterator[FleetClient]:
    async with FleetClient(amqp_url, default_timeout=60) as c:
        yield c


async def drain_queue(
    amqp_url: str, name: str, wait: float = 0.0
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """Read (and ack) everything currently in a queue."""
    if wait:
        await asyncio.sleep(wait)
    conn = await aio_pika.connect(amqp_url)
    out = []
    try:
        channel = await conn.channel()
        queue = await channel.get_queue(name)
        while (msg := await queue.get(fail=False)) is not None:
            await msg.ack()
            out.append(msg)
    finally:
        await conn.close()
    return out


@pytest.fixture
def dead_letters(
    amqp_url: str,
) -> Callable[..., Awaitable[list[aio_pika.abc.AbstractIncomingMessage]]]:
    async def read(wait: float = 0.3) -> list[aio_pika.abc.AbstractIncomingMessage]:
        return await drain_queue(amqp_url, t.DEAD_QUEUE, wait)

    return read


# -- credential vault (issue 3) ----------------------------------------------------------


@pytest.fixture(scope="session")
async def vault_db(database_url: str) -> AsyncIterator[str]:
    """A throwaway database, created and migrated by `workers.migrate`, dropped at the end."""
    url = with_database(database_url, f"llm_fleet_test_{uuid.uuid4().hex[:12]}")
    assert await migrate(url) == [
        "0001_credentials.sql",
        "0002_vault_key_checks.sql",
        "0003_credentials_constraints.sql",
        "0004_tenant_keys_and_shares.sql",
        "0005_audit.sql",
        "0006_embedding_cache.sql",
    ]
    yield url
    await drop_database(database_url, url)


async def drop_database(admin_url: str, url: str) -> None:
    admin = await asyncpg.connect(with_database(admin_url, "postgres"))
    try:
        name = quote_ident(database_name(url))
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


@pytest.fixture
async def vault_sql(vault_db: str) -> AsyncIterator[asyncpg.Connection]:
    """A raw connection to the test database, whose credentials table starts empty."""
    conn = await asyncpg.connect(vault_db)
    await conn.execute("TRUNCATE credentials CASCADE")  # and credential_shares
    yield conn
    await conn.close()


@pytest.fixture
async def vault(
    vault_db: str, vault_sql: asyncpg.Connection, keyring: Keyring
) -> AsyncIterator[Vault]:
    """The store under the session key (the key `spawn_worker` gives workers); no row cache."""
    v = Vault(vault_db, keyring, cache_ttl=0)
    yield v
    await v.close()


@dataclass
class CliResult:
    code: int
    out: str
    err: str


RunCli = Callable[..., Awaitable[CliResult]]


@pytest.fixture
def fleet_cli(vault_db: str, amqp_url: str, crypto_key: str) -> RunCli:
    """Run `llm-fleet ...` as a subprocess, without blocking the loop the mock provider runs in."""

    async def run(*args: str, stdin: str = "", env: dict[str, str] | None = None) -> CliResult:
        full_env = {
            **os.environ,
            "DATABASE_URL": vault_db,
            "AMQP_URL": amqp_url,
            "INTEGRATION_CRYPTO_KEY": crypto_key,
            "PYTHONPATH": str(ROOT),
            **(env or {}),
        }
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "workers.cli",
            *args,
            env=full_env,
            cwd=ROOT,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(proc.communicate(stdin.encode()), 90)
        assert proc.returncode is not None
        return CliResult(proc.returncode, out.decode(), err.decode())

    return run
