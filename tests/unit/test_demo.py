"""The demo waits for its fleet, and stops at once when a process of it gives up."""

from __future__ import annotations

import asyncio
import sys
import time
from pathlib import Path

import pytest

from workers.demo import Child, DemoFailed, demo_env, wait_ready


async def child(tmp_path: Path, name: str, code: str) -> Child:
    log = tmp_path / f"{name}.log"
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-c", code, stdout=out, stderr=out
        )
    return Child(name, proc, log)


async def never() -> None:
    await asyncio.Event().wait()


async def test_a_process_that_exits_ends_the_wait_with_its_reason(tmp_path: Path) -> None:
    refusing = await child(
        tmp_path,
        "demo-worker-2",
        'import sys, time; print(\'{"event": "credential_keys_missing"}\'); '
        "time.sleep(0.3); sys.exit('worker refused to start: 1 credential under key k0')",
    )
    running = await child(tmp_path, "demo-worker-1", "import time; time.sleep(60)")
    started = time.monotonic()
    try:
        with pytest.raises(DemoFailed) as info:
            await wait_ready([running, refusing], [never()], within=30)
    finally:
        running.proc.kill()
        await running.proc.wait()
    assert time.monotonic() - started < 5  # not the 30 s the fleet gets to come up
    message = str(info.value)
    assert message.startswith("demo-worker-2 stopped (exit code 1)")
    assert message.endswith("worker refused to start: 1 credential under key k0")


async def test_ready_when_every_probe_passes(tmp_path: Path) -> None:
    running = await child(tmp_path, "demo-worker-1", "import time; time.sleep(60)")
    try:
        await wait_ready([running], [asyncio.sleep(0.05), asyncio.sleep(0.1)], within=5)
    finally:
        running.proc.kill()
        await running.proc.wait()


async def test_a_fleet_that_never_gets_ready_is_reported_not_raised_as_timeout(
    tmp_path: Path,
) -> None:
    running = await child(tmp_path, "demo-worker-1", "import time; time.sleep(60)")
    try:
        with pytest.raises(DemoFailed, match="not ready within"):
            await wait_ready([running], [never()], within=0.3)
    finally:
        running.proc.kill()
        await running.proc.wait()


def test_the_demo_leaves_the_operators_store_and_keys_alone() -> None:
    env = demo_env(
        {
            "DATABASE_URL": "postgresql://postgres@127.0.0.1:5432/llm_fleet",
            "INTEGRATION_CRYPTO_KEY": "b3BlcmF0b3Ita2V5LW9wZXJhdG9yLWtleS1vcGVyYXRvcg==",
            "INTEGRATION_CRYPTO_KEYS": "old:b2xkLWtleQ==",
            "AMQP_URL": "amqp://u:p@rabbit:5672/",
        }
    )
    assert env["DATABASE_URL"] == ""
    assert env["INTEGRATION_CRYPTO_KEY"] != "b3BlcmF0b3Ita2V5LW9wZXJhdG9yLWtleS1vcGVyYXRvcg=="
    assert "INTEGRATION_CRYPTO_KEYS" not in env
    assert env["AMQP_URL"] == "amqp://u:p@rabbit:5672/"
