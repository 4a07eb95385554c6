"""FLEET_HEALTH_HOST: where the health and metrics port listens, checked at start-up."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from pathlib import Path

import aiohttp
import pytest
from click.testing import CliRunner

from workers import config
from workers.cli import main
from workers.config import ConfigError, Settings
from workers.health import build_health_app, start_health_server
from workers.metrics import WorkerMetrics


@pytest.fixture
def no_container(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """As on a host: no container marker file (the test machine may well be a container)."""
    monkeypatch.setattr(config, "CONTAINER_MARKERS", (str(tmp_path / "absent"),))


class TestSetting:
    def test_loopback_by_default_outside_a_container(self, no_container: None) -> None:
        assert Settings.from_env({}).health_host == "127.0.0.1"

    @pytest.mark.parametrize("marker", [".dockerenv", ".containerenv"])
    def test_every_interface_by_default_inside_one(
        self, monkeypatch: pytest.MonkeyPatch, tmp_path: Path, marker: str
    ) -> None:
        (tmp_path / marker).touch()
        markers = (str(tmp_path / "absent"), str(tmp_path / marker))
        monkeypatch.setattr(config, "CONTAINER_MARKERS", markers)
        assert Settings.from_env({}).health_host == "0.0.0.0"

    def test_the_real_markers_are_docker_and_podman(self) -> None:
        assert config.CONTAINER_MARKERS == ("/.dockerenv", "/run/.containerenv")

    @pytest.mark.parametrize(
        ("given", "host"),
        [
            ("0.0.0.0", "0.0.0.0"),
            ("127.0.0.1", "127.0.0.1"),
            (" 10.1.2.3 ", "10.1.2.3"),
            ("::", "::"),
            ("::1", "::1"),
            ("localhost", "localhost"),
            ("worker-1.fleet.svc.cluster.local", "worker-1.fleet.svc.cluster.local"),
        ],
    )
    def test_the_setting_wins_over_the_default(
        self, no_container: None, given: str, host: str
    ) -> None:
        assert Settings.from_env({"FLEET_HEALTH_HOST": given}).health_host == host

    @pytest.mark.parametrize(
        "given",
        [
            "",
            "   ",
            "0.0.0.0:9004",
            "http://0.0.0.0",
            "two words",
            "-bad.example",
            "a..b",
            "x" * 64,
        ],
    )
    def test_a_malformed_host_stops_the_start(self, no_container: None, given: str) -> None:
        with pytest.raises(ConfigError, match="FLEET_HEALTH_HOST"):
            Settings.from_env({"FLEET_HEALTH_HOST": given})

    def test_the_cli_flag_wins_and_is_checked(self, no_container: None) -> None:
        env = {"FLEET_HEALTH_HOST": "0.0.0.0"}
        assert Settings.from_env(env, health_host="::1").health_host == "::1"
        with pytest.raises(ConfigError, match="--health-host"):
            Settings.from_env(env, health_host="not a host")

    def test_the_worker_command_refuses_a_bad_host(self) -> None:
        result = CliRunner().invoke(main, ["worker", "--health-host", "not a host"])
        assert result.exit_code != 0
        assert "FLEET_HEALTH_HOST / --health-host must be an IP address" in result.output

    @pytest.mark.parametrize("port", ["-1", "65536"])
    def test_a_port_out_of_range_stops_the_start(self, no_container: None, port: str) -> None:
        with pytest.raises(ConfigError, match="FLEET_HEALTH_PORT"):
            Settings.from_env({"FLEET_HEALTH_PORT": port})


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


async def _ready() -> Mapping[str, bool]:
    return {"broker": True}


@asynccontextmanager
async def serving(**host: str) -> AsyncIterator[int]:
    runner = await start_health_server(build_health_app(WorkerMetrics(), _ready), 0, **host)
    try:
        (address,) = runner.addresses
        yield int(address[1])
    finally:
        await runner.cleanup()


async def _reachable(address: str, port: int) -> bool:
    try:
        _, writer = await asyncio.wait_for(asyncio.open_connection(address, port), 2)
    except (OSError, TimeoutError):
        return False
    writer.close()
    await writer.wait_closed()
    return True


class TestServer:
    async def test_binds_loopback_when_asked_and_by_default(self) -> None:
        for host in ({"host": "127.0.0.1"}, {}):
            runner = await start_health_server(build_health_app(WorkerMetrics(), _ready), 0, **host)
            try:
                assert [a[0] for a in runner.addresses] == ["127.0.0.1"]
            finally:
                await runner.cleanup()

    async def test_answers_on_loopback(self) -> None:
        async with (
            serving(host="127.0.0.1") as port,
            aiohttp.ClientSession() as http,
            http.get(f"http://127.0.0.1:{port}/healthz/") as response,
        ):
            assert response.status == 200
            assert await response.json() == {"healthy": True}

    async def test_loopback_is_not_reachable_on_another_interface(self) -> None:
        other = _other_address()
        if other is None:
            pytest.skip("this machine has no interface besides loopback")
        async with serving(host="127.0.0.1") as port:
            assert await _reachable("127.0.0.1", port)
            assert not await _reachable(other, port)
        # The control: bound to every interface, the same address does answer.
        async with serving(host="0.0.0.0") as port:
            assert await _reachable(other, port)

    async def test_a_port_in_use_is_an_error_and_frees_the_runner(self) -> None:
        async with serving(host="127.0.0.1") as port:
            with pytest.raises(OSError):
                await start_health_server(
                    build_health_app(WorkerMetrics(), _ready), port, "127.0.0.1"
                )
