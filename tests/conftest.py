"""Fixtures: real RabbitMQ and PostgreSQL, worker processes, the mock provider.

Services come from AMQP_URL / DATABASE_URL (default: the local servers). When
those are unreachable and a Docker engine is, testcontainers starts them. When
neither works the run fails loudly: integration tests are never skipped.

Those shared servers are never stopped by a test. Tests that need a broker or a
database to go down take `private_broker`, `broker_cluster` or `private_postgres`
(tests/brokers.py): private instances, started on first use, gone at session end.
"""

from __future__ import annotations

import base64
import contextlib
import os
import shutil
import socket
import subprocess
import urllib.parse
from collections.abc import Iterator
from typing import Protocol, TypeVar

import pytest

from tests.brokers import BrokerCluster, BrokerNode, PrivatePostgres, reap_stale

DEFAULT_AMQP = "amqp://guest:guest@127.0.0.1:5672/"
DEFAULT_DB = "postgresql://postgres@127.0.0.1:5432/postgres"
TEST_VHOST_PREFIX = "llm-fleet-test"


def _reachable(url: str, default_port: int) -> bool:
    parts = urllib.parse.urlsplit(url)
    try:
        socket.create_connection(
            (parts.hostname or "127.0.0.1", parts.port or default_port), 2
        ).close()
    except OSError:
        return False
    return True


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    return subprocess.run(["docker", "info"], capture_output=True, check=False).returncode == 0


def _rabbitmqctl(*args: str, check: bool = True) -> str:
    out = subprocess.run(["rabbitmqctl", "-q", *args], capture_output=True, check=check, text=True)
    return out.stdout


def _reap_stale_vhosts() -> None:
    """Remove test vhosts left by sessions that were killed before their teardown."""
    for name in _rabbitmqctl("list_vhosts", "name", check=False).split():
        prefix, _, pid = name.rpartition("-")
        if prefix == TEST_VHOST_PREFIX and pid.isdigit() and not os.path.exists(f"/proc/{pid}"):
            _rabbitmqctl("delete_vhost", name, check=False)


@contextlib.contextmanager
def _isolated_vhost(url: str) -> Iterator[str]:
    """A throwaway vhost per test session on a local broker.

    Tests never touch real queues, and two sessions on one machine (CI beside a
    developer, say) never purge each other's queues.
    """
    parts = urllib.parse.urlsplit(url)
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if not local or shutil.which("rabbitmqctl") is None or os.environ.get("AMQP_URL"):
        yield url
        return
    _reap_stale_vhosts()
    vhost = f"{TEST_VHOST_PREFIX}-{os.getpid()}"
    _rabbitmqctl("delete_vhost", vhost, check=False)
    _rabbitmqctl("add_vhost", vhost)
    _rabbitmqctl("set_permissions", "-p", vhost, parts.username or "guest", ".*", ".*", ".*")
    try:
        yield urllib.parse.urlunsplit(parts._replace(path="/" + vhost))
    finally:
        _rabbitmqctl("delete_vhost", vhost, check=False)


@pytest.fixture(scope="session")
def amqp_url() -> Iterator[str]:
    url = os.environ.get("AMQP_URL", DEFAULT_AMQP)
    if _reachable(url, 5672):
        with _isolated_vhost(url) as isolated:
            yield isolated
        return
    if not _docker_available():
        pytest.fail(f"RabbitMQ is not reachable at {url} and no Docker engine can start one")
    from testcontainers.rabbitmq import RabbitMqContainer

    with RabbitMqContainer("rabbitmq:3.13-management") as rabbit:
        host, port = rabbit.get_container_host_ip(), rabbit.get_exposed_port(rabbit.port)
        yield f"amqp://guest:guest@{host}:{port}/"


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    url = os.environ.get("DATABASE_URL", DEFAULT_DB)
    if _reachable(url, 5432):
        yield url
        return
    if not _docker_available():
        pytest.fail(f"PostgreSQL is not reachable at {url} and no Docker engine can start one")
    from testcontainers.postgres import PostgresContainer

    with PostgresContainer("postgres:15", driver=None) as pg:
        yield pg.get_connection_url()


@pytest.fixture(scope="session")
def crypto_key() -> str:
    return base64.b64encode(os.urandom(32)).decode()


@pytest.fixture
def free_port() -> int:
    with contextlib.closing(socket.socket()) as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


# -- private servers a test may stop, kill and restart (tests/brokers.py) ------------------


class _Startable(Protocol):
    def start(self) -> None: ...
    def close(self) -> None: ...


_S = TypeVar("_S", bound=_Startable)


@pytest.fixture(scope="session", autouse=True)
def _reap_stale_harness() -> None:
    """Kill private brokers / PostgreSQL clusters whose pytest session died without teardown."""
    reap_stale()


@contextlib.contextmanager
def _started(make: type[_S], what: str) -> Iterator[_S]:
    # Construction (ports, directories) can fail too: report it like a failed boot.
    try:
        server = make()
    except Exception as exc:
        pytest.fail(f"{what} could not be set up: {exc}", pytrace=False)
    try:
        server.start()
    except Exception as exc:
        server.close()
        pytest.fail(f"{what} did not start: {exc}", pytrace=False)
    except BaseException:
        server.close()
        raise
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(scope="session")
def private_broker() -> Iterator[BrokerNode]:
    """A RabbitMQ node of this session's own. A test that stops or kills it starts it again."""
    with _started(BrokerNode, "private RabbitMQ node") as node:
        yield node


@pytest.fixture(scope="session")
def broker_cluster() -> Iterator[BrokerCluster]:
    """Three clustered private RabbitMQ nodes. A test that takes a node down starts it again."""
    with _started(BrokerCluster, "private RabbitMQ cluster") as cluster:
        yield cluster


@pytest.fixture(scope="session")
def private_postgres() -> Iterator[PrivatePostgres]:
    """A PostgreSQL 15 cluster of this session's own, trust auth, user postgres."""
    with _started(PrivatePostgres, "private PostgreSQL") as pg:
        yield pg
