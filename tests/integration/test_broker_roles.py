"""The roles of workers/broker_roles.py on a real broker, set up by `llm-fleet tenants`.

One private node with the management plugin serves the whole module: the CLI creates the
worker and operator users and producers `a` and `b` through the management API, the
worker declares the topology (producers cannot), and then each user does over AMQP what
its role needs (allowed) and what another role's would (ACCESS_REFUSED).
"""

from __future__ import annotations

import json
import secrets
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import pytest
from aio_pika.abc import AbstractChannel, AbstractConnection, AbstractIncomingMessage
from click.testing import CliRunner, Result

from contracts import topology as t
from contracts.amqp import declare_release_stream, declare_topology, job_queue_arguments
from tests.brokers import BrokerNode
from workers.broker_definitions import HASHING_ALGORITHM, password_matches
from workers.cli import main
from workers.management import ManagementClient

pytestmark = pytest.mark.integration

WORKER = t.DEFAULT_WORKER_USER
OPERATOR = t.DEFAULT_OPERATOR_USER


@dataclass
class Fleet:
    node: BrokerNode
    passwords: dict[str, str]
    files: Path

    async def connect(self, user: str) -> AbstractConnection:
        url = f"amqp://{user}:{self.passwords[user]}@127.0.0.1:{self.node.port}/"
        return await aio_pika.connect(url)

    def password_file(self, user: str, password: str) -> str:
        path = self.files / f"{user}-{secrets.token_hex(4)}.pw"
        path.write_text(password + "\n")
        return str(path)

    def cli(self, *args: str, input: str | None = None) -> Result:
        return tenants_cli(self.node.management_url, *args, input=input)


def tenants_cli(management_url: str, command: str, *args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(
        main, ["tenants", command, *args, "--management-url", management_url], input=input
    )


def ok(result: Result) -> Result:
    assert result.exit_code == 0, f"{result.output}\n{result.exception!r}"
    return result


@pytest.fixture(scope="module")
def node() -> Iterator[BrokerNode]:
    with BrokerNode(management=True) as started:
        yield started


@pytest.fixture(scope="module")
async def fleet(node: BrokerNode, tmp_path_factory: pytest.TempPathFactory) -> Fleet:
    files = tmp_path_factory.mktemp("passwords")
    fleet = Fleet(node, {}, files)
    for user in (WORKER, OPERATOR, "a", "b"):
        fleet.passwords[user] = secrets.token_urlsafe(12)
    ok(
        fleet.cli(
            "roles",
            "--worker-password-file",
            fleet.password_file(WORKER, fleet.passwords[WORKER]),
            "--operator-password-file",
            "-",
            input=fleet.passwords[OPERATOR] + "\n",
        )
    )
    for tenant in ("a", "b"):
        ok(
            fleet.cli(
                "add",
                tenant,
                "--password-file",
                fleet.password_file(tenant, fleet.passwords[tenant]),
            )
        )
    # Producers have no configure rights on the topology: the worker declares it.
    worker = await fleet.connect(WORKER)
    try:
        await declare_topology(worker)
        await declare_release_stream(worker)
    finally:
        await worker.close()
    return fleet


@pytest.fixture
async def as_a(fleet: Fleet) -> AsyncIterator[AbstractConnection]:
    connection = await fleet.connect("a")
    yield connection
    await connection.close()


def _token() -> str:
    return uuid.uuid4().hex


async def _declare_reply_queue(fleet: Fleet, user: str) -> str:
    """A reply queue of `user`'s, declared as that user."""
    name = f"{t.reply_queue_prefix(user)}{_token()}"
    connection = await fleet.connect(user)
    try:
        channel = await connection.channel()
        await channel.declare_queue(name, durable=True, arguments={"x-expires": 60_000})
    finally:
        await connection.close()
    return name


async def _publish(channel: AbstractChannel, exchange: str, routing_key: str) -> None:
    target = (
        channel.default_exchange
        if exchange == ""
        else await channel.get_exchange(exchange, ensure=False)
    )
    await target.publish(aio_pika.Message(b"{}"), routing_key=routing_key)


async def _ack(message: AbstractIncomingMessage) -> None:
    await message.ack()


async def _consume(channel: AbstractChannel, queue: str, **arguments: Any) -> None:
    """basic.consume (the permission check), then basic.cancel."""
    q = await channel.get_queue(queue, ensure=False)
    tag = await q.consume(_ack, arguments=arguments or None)
    await q.cancel(tag)


async def _refused(
    connection: AbstractConnection, op: Callable[[AbstractChannel], Awaitable[object]]
) -> None:
    channel = await connection.channel(publisher_confirms=True)
    with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
        await op(channel)


# -- the CLI ---------------------------------------------------------------------------


def test_list_names_each_users_role(fleet: Fleet) -> None:
    rows = {
        line.split()[0]: line.split()[1:] for line in ok(fleet.cli("list")).output.splitlines()[1:]
    }
    assert rows["a"] == ["producer"]
    assert rows["b"] == ["producer"]
    assert rows[WORKER] == ["worker"]
    assert rows[OPERATOR] == ["operator", "management"]
    # guest's `.*` is no role of the fleet's.
    assert rows["guest"] == ["custom", "administrator"]


def test_add_is_idempotent_and_resets_a_password_only_when_given(fleet: Fleet) -> None:
    again = ok(fleet.cli("add", "a"))
    assert "password unchanged" in again.output
    assert fleet.passwords["a"] not in again.output
    with ManagementClient(fleet.node.management_url) as api:
        before = api.user("a")
        ok(fleet.cli("add", "a"))
        assert api.user("a") == before  # same stored hash: the password was kept
        new = secrets.token_urlsafe(12)
        reset = ok(fleet.cli("add", "a", "--password-file", "-", input=new + "\n"))
        assert "password reset" in reset.output and new not in reset.output
        after = api.user("a")
        # The broker's own hash of it is what `tenants definitions` computes.
        assert after is not None and after.hashing_algorithm == HASHING_ALGORITHM
        assert password_matches(new, after.password_hash)
    fleet.passwords["a"] = new


async def test_add_generates_a_password_once_for_a_new_tenant(fleet: Fleet) -> None:
    result = ok(fleet.cli("add", "gen"))
    [line] = [x for x in result.output.splitlines() if "shown only now" in x]
    fleet.passwords["gen"] = line.rsplit(": ", 1)[1]
    assert "amqp://gen:<password>@127.0.0.1:5672/" in result.output
    connection = await fleet.connect("gen")
    await connection.close()
    again = ok(fleet.cli("add", "gen"))
    assert "shown only now" not in again.output


async def test_roles_gives_an_existing_user_its_tags_and_keeps_its_password(
    fleet: Fleet,
) -> None:
    # An operator user made by hand, without the management tag.
    fleet.passwords["op2"] = secrets.token_urlsafe(12)
    with ManagementClient(fleet.node.management_url) as api:
        api.put_user("op2", tags=(), password=fleet.passwords["op2"])
        ok(fleet.cli("roles", "--worker-user", "w2", "--operator-user", "op2"))
        info = api.user("op2")
    assert info is not None and info.tags == ("management",)
    operator = await fleet.connect("op2")
    try:
        channel = await operator.channel()
        await _consume(channel, t.DEAD_QUEUE)
    finally:
        await operator.close()


def test_refuses_to_turn_an_administrator_or_a_role_user_into_a_tenant(fleet: Fleet) -> None:
    guest = fleet.cli("add", "guest")
    assert guest.exit_code != 0 and "administrator" in guest.output
    worker = fleet.cli("add", WORKER)
    assert worker.exit_code != 0
    bad = fleet.cli("add", "a.b")
    assert bad.exit_code != 0 and "not a valid user name" in bad.output
    with ManagementClient(fleet.node.management_url) as api:
        info = api.user("guest")
        assert info is not None and info.tags == ("administrator",)


def test_remove_deletes_only_producers(fleet: Fleet) -> None:
    ok(fleet.cli("add", "gone", "--password-file", fleet.password_file("gone", "pw-gone")))
    assert "removed producer 'gone'" in ok(fleet.cli("remove", "gone")).output
    with ManagementClient(fleet.node.management_url) as api:
        assert api.user("gone") is None
    missing = fleet.cli("remove", "gone")
    assert missing.exit_code != 0 and "no broker user" in missing.output
    operator = fleet.cli("remove", OPERATOR)
    assert operator.exit_code != 0 and "operator" in operator.output


def test_a_refused_login_is_reported_without_the_password(fleet: Fleet) -> None:
    wrong = f"not-the-password-{secrets.token_hex(4)}"
    url = fleet.node.management_url.replace("guest:guest@", f"guest:{wrong}@")
    result = tenants_cli(url, "list")
    assert result.exit_code != 0
    assert "refused the login of user 'guest'" in result.output
    assert wrong not in result.output


def test_a_login_without_the_administrator_tag_is_refused(fleet: Fleet) -> None:
    # The operator (tag management) may look at queues, not change users.
    url = f"http://{OPERATOR}:{fleet.passwords[OPERATOR]}@127.0.0.1:{fleet.node.management_port}"
    result = tenants_cli(url, "add", "c")
    assert result.exit_code != 0
    assert "refused the login of user 'llm-fleet-operator'" in result.output
    assert fleet.passwords[OPERATOR] not in result.output
    with ManagementClient(fleet.node.management_url) as api:
        assert api.user("c") is None


async def test_imported_definitions_create_a_producer_that_logs_in(fleet: Fleet) -> None:
    password = secrets.token_urlsafe(12)
    result = CliRunner().invoke(
        main,
        ["tenants", "definitions", "--tenant", "defined", "--without-roles",
         "--password-file", f"defined={fleet.password_file('defined', password)}"],
    )  # fmt: skip
    ok(result)
    path = fleet.files / "definitions.json"
    path.write_text(result.stdout)
    fleet.node.ctl("import_definitions", str(path))
    fleet.passwords["defined"] = password
    connection = await fleet.connect("defined")
    try:
        channel = await connection.channel()
        await channel.declare_queue(f"{t.reply_queue_prefix('defined')}{_token()}", exclusive=True)
    finally:
        await connection.close()
    rows = ok(fleet.cli("list")).output
    assert any(line.split()[:2] == ["defined", "producer"] for line in rows.splitlines())
    assert json.loads(result.stdout)["users"][0]["name"] == "defined"


# -- a producer ------------------------------------------------------------------------


async def test_producer_uses_its_own_reply_queue_and_publishes_jobs(
    fleet: Fleet, as_a: AbstractConnection
) -> None:
    channel = await as_a.channel(publisher_confirms=True)
    name = f"{t.reply_queue_prefix('a')}{_token()}"
    queue = await channel.declare_queue(name, durable=True, arguments={"x-expires": 60_000})
    await _consume(channel, name)
    await _publish(channel, t.JOBS_EXCHANGE, t.QUEUE_CHAT)
    await _publish(channel, t.JOBS_EXCHANGE, t.CATALOG_QUEUE)
    await _publish(channel, t.CONTROL_EXCHANGE, "")
    await queue.delete(if_unused=False, if_empty=False)


REFUSED_TO_A: dict[str, Callable[[AbstractChannel, str], Awaitable[object]]] = {
    "consume llm.dead": lambda ch, _: _consume(ch, t.DEAD_QUEUE),
    "consume llm.chat": lambda ch, _: _consume(ch, t.QUEUE_CHAT),
    "declare b's reply queue": lambda ch, b_queue: ch.declare_queue(
        b_queue, durable=True, arguments={"x-expires": 60_000}
    ),
    "declare a new queue in b's prefix": lambda ch, _: ch.declare_queue(
        f"{t.reply_queue_prefix('b')}x", exclusive=True
    ),
    "consume b's reply queue": lambda ch, b_queue: _consume(ch, b_queue),
    "delete b's reply queue": lambda ch, b_queue: ch.queue_delete(b_queue),
    "publish into b's reply queue": lambda ch, b_queue: _publish(ch, "", b_queue),
    "publish to llm.dlx": lambda ch, _: _publish(ch, t.DEAD_LETTER_EXCHANGE, ""),
    "declare llm.chat": lambda ch, _: ch.declare_queue(
        t.QUEUE_CHAT, durable=True, arguments=job_queue_arguments(t.DEFAULT_BROKER_DELIVERY_LIMIT)
    ),
    "delete llm.chat": lambda ch, _: ch.queue_delete(t.QUEUE_CHAT),
    "declare llm.jobs": lambda ch, _: ch.declare_exchange(
        t.JOBS_EXCHANGE, aio_pika.ExchangeType.DIRECT, durable=True
    ),
    "consume llm.releases": lambda ch, _: _consume(ch, t.RELEASES_QUEUE),
}


@pytest.mark.parametrize("what", sorted(REFUSED_TO_A))
async def test_producer_is_refused(fleet: Fleet, as_a: AbstractConnection, what: str) -> None:
    b_queue = await _declare_reply_queue(fleet, "b")
    await _refused(as_a, lambda ch: REFUSED_TO_A[what](ch, b_queue))


# -- the worker and the operator -------------------------------------------------------


async def test_worker_does_everything_a_worker_does(fleet: Fleet) -> None:
    reply_queue = await _declare_reply_queue(fleet, "a")
    worker = await fleet.connect(WORKER)
    try:
        # Again, on a declared topology: what every worker does at start-up.
        await declare_topology(worker)
        await declare_release_stream(worker)
        channel = await worker.channel(publisher_confirms=True)
        control = await channel.declare_queue(
            exclusive=True,
            auto_delete=True,
            arguments={"x-max-length": 100, "x-overflow": "drop-head"},
        )
        assert control.name.startswith("amq.gen-")
        await control.bind(t.CONTROL_EXCHANGE, routing_key="")
        await _consume(channel, control.name)
        for queue in (*t.JOB_QUEUES, t.DEAD_NOTIFY_QUEUE, t.CATALOG_QUEUE):
            await _consume(channel, queue)
        await channel.set_qos(prefetch_count=10)
        await _consume(channel, t.RELEASES_QUEUE, **{"x-stream-offset": "first"})
        # Replies, dead-letter copies and release notes go through the default exchange.
        for routing_key in (reply_queue, t.DEAD_QUEUE, t.RELEASES_QUEUE):
            await _publish(channel, "", routing_key)
        await _refused(worker, lambda ch: _consume(ch, t.DEAD_QUEUE))
    finally:
        await worker.close()


async def test_operator_reads_dead_letters(fleet: Fleet) -> None:
    operator = await fleet.connect(OPERATOR)
    try:
        channel = await operator.channel(publisher_confirms=True)
        await _consume(channel, t.DEAD_QUEUE)
        # Credential revocations.
        await _publish(channel, t.CONTROL_EXCHANGE, "")
    finally:
        await operator.close()
