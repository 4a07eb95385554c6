"""A worker's health and metrics port listens where FLEET_HEALTH_HOST says, and only there."""

from __future__ import annotations

import asyncio
import json
import socket

import aiohttp
import pytest

from tests.integration.conftest import SpawnWorker

pytestmark = pytest.mark.integration


def _other_address() -> str | None:
    """An address of this machine that is not loopback, if it has one."""
    probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        probe.connect(("192.0.2.1", 9))  # TEST-NET-1: routing only, nothing is sent
        address: str = probe.getsockname()[0]
    except OSError:
        return None
    finally:
        probe.close()
    return None if address.startswith("127.") or address == "0.0.0.0" else address


async def _healthy(address: str, port: int) -> bool:
    try:
        async with (
            aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=3)) as http,
            http.get(f"http://{address}:{port}/healthz/") as response,
        ):
            return response.status == 200
    except (aiohttp.ClientError, TimeoutError):
        return False


def _starting_line(logs: str) -> dict[str, object]:
    for line in logs.splitlines():
        if '"worker_starting"' in line:
            found: dict[str, object] = json.loads(line)
            return found
    raise AssertionError(f"no worker_starting line in:\n{logs}")


@pytest.mark.parametrize("host", ["127.0.0.1", "0.0.0.0"])
async def test_the_worker_binds_the_configured_host(
    spawn_worker: SpawnWorker, free_port: int, host: str
) -> None:
    other = _other_address()
    worker = await spawn_worker(
        env={"FLEET_HEALTH_PORT": str(free_port), "FLEET_HEALTH_HOST": host}
    )
    assert _starting_line(worker.logs())["health_host"] == host
    # worker_ready may come before the health site is up: give it a moment.
    for _ in range(50):
        if await _healthy("127.0.0.1", free_port):
            break
        await asyncio.sleep(0.1)
    else:
        raise AssertionError(f"no /healthz/ on 127.0.0.1:{free_port}:\n{worker.logs()}")
    if other is None:
        pytest.skip("this machine has no interface besides loopback")
    assert await _healthy(other, free_port) is (host == "0.0.0.0")
