"""`llm-fleet demo` on a machine whose fleet is already set up, and with a worker that refuses."""

from __future__ import annotations

import base64
import os
import time

import asyncpg
import pytest

from tests.integration.conftest import SpawnWorker
from workers.crypto import Keyring
from workers.demo import run_demo
from workers.vault import Vault

pytestmark = pytest.mark.integration


def new_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


async def test_the_demo_runs_beside_a_store_sealed_with_another_key(
    amqp_url: str,
    vault_db: str,
    vault_sql: asyncpg.Connection,
    spawn_worker: SpawnWorker,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """After the README's `creds add`, the store holds a row under the operator's key,
    which the demo's own fresh key cannot open."""
    operator_key = new_key()
    store = Vault(vault_db, Keyring.from_env({"INTEGRATION_CRYPTO_KEY": operator_key}))
    try:
        await store.add("default", "openai", "prod", {"api_key": "sk-operator-000111"})
    finally:
        await store.close()
    # What broke the demo before: a worker with any other key refuses that store.
    with pytest.raises(RuntimeError, match="refused to start"):
        await spawn_worker(env={"DATABASE_URL": vault_db})

    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        "DATABASE_URL": vault_db,
        "INTEGRATION_CRYPTO_KEY": operator_key,
    }
    code = await run_demo(n_workers=2, n_texts=40, prompt="why queues?", env=env)
    out = capsys.readouterr()
    assert code == 0, out.err
    assert "the fleet serves: " in out.out and "mock" in out.out
    assert "usage: " in out.out and "40 rows like" in out.out
    assert "demo finished" in out.out


async def test_a_worker_that_refuses_to_start_stops_the_demo_at_once_with_its_reason(
    amqp_url: str, capsys: pytest.CaptureFixture[str]
) -> None:
    env = {
        **os.environ,
        "AMQP_URL": amqp_url,
        # Valid on its face, refused once the worker has built its registry.
        "FLEET_PROVIDER_RETRY_ATTEMPTS": "no-such-provider=2",
    }
    started = time.monotonic()
    code = await run_demo(n_workers=2, n_texts=10, prompt="never asked", env=env)
    took = time.monotonic() - started
    err = capsys.readouterr().err
    assert code == 1
    assert took < 20  # the fleet's 30 s readiness wait was not sat out
    assert "demo stopped: demo-worker-" in err
    assert "unknown providers: no-such-provider" in err
    assert "Traceback" not in err
