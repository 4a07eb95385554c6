"""Producer A against producer B on one broker, each with its own RabbitMQ login.

The broker is a private node set up exactly as the README tells operators to: the
roles and both tenants are created with `llm-fleet tenants`, workers run as the
worker login, producers as their own. Every attempt the issue lists is played by A
and must be refused (A gets a clear error or nothing), while B's answers stay
untouched and no job is lost.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aio_pika
import aiormq
import msgspec
import pytest

from contracts import topology as t
from contracts.client import FleetClient
from contracts.codec import encode
from contracts.errors import Cancelled, NotFound, Unauthorized
from contracts.frames import Answered, Final
from contracts.jobs import ChatJob, Credential, Message, Target
from providers.mock.server import RunningMock
from tests.brokers import BrokerNode
from tests.integration.conftest import MOCK_KEY, ROOT, SpawnWorker
from tests.integration.test_fleet import mock_admin
from workers.crypto import Keyring, seal
from workers.vault import Vault

pytestmark = pytest.mark.integration

WORKER = t.DEFAULT_WORKER_USER
OPERATOR = t.DEFAULT_OPERATOR_USER


@dataclass(frozen=True)
class Tenants:
    node: BrokerNode
    passwords: dict[str, str]

    def url(self, user: str) -> str:
        return f"amqp://{user}:{self.passwords[user]}@127.0.0.1:{self.node.port}/"


def _fleet_cli(*args: str) -> str:
    done = subprocess.run(
        [sys.executable, "-m", "workers.cli", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    return done.stdout


@pytest.fixture(scope="module")
def tenants(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Tenants]:
    secrets_dir = tmp_path_factory.mktemp("broker-passwords")
    passwords = {user: uuid.uuid4().hex for user in (WORKER, OPERATOR, "a", "b")}
    files: dict[str, Path] = {}
    for user, password in passwords.items():
        files[user] = secrets_dir / user
        files[user].write_text(password)
    with BrokerNode(management=True) as node:
        api = ("--management-url", node.management_url)
        _fleet_cli(
            "tenants",
            "roles",
            *api,
            "--worker-password-file",
            str(files[WORKER]),
            "--operator-password-file",
            str(files[OPERATOR]),
        )
        for tenant in ("a", "b"):
            _fleet_cli("tenants", "add", tenant, *api, "--password-file", str(files[tenant]))
        yield Tenants(node, passwords)


@pytest.fixture
async def fleet(tenants: Tenants, spawn_worker: SpawnWorker) -> Tenants:
    """One worker, running as the worker login (it declares the topology)."""
    await spawn_worker(broker_url=tenants.url(WORKER), concurrency=8)
    conn = await aio_pika.connect(tenants.url(OPERATOR))
    try:  # each test reads the dead letters its own attempts left
        await (await (await conn.channel()).declare_queue(t.DEAD_QUEUE, passive=True)).purge()
    finally:
        await conn.close()
    return tenants


@pytest.fixture
async def b_client(fleet: Tenants) -> AsyncIterator[FleetClient]:
    async with FleetClient(fleet.url("b"), default_timeout=30) as client:
        yield client


@pytest.fixture
async def a_conn(fleet: Tenants) -> AsyncIterator[aio_pika.abc.AbstractConnection]:
    """Producer A talking AMQP by hand, as an attacker would."""
    conn = await aio_pika.connect(fleet.url("a"))
    try:
        yield conn
    finally:
        await conn.close()


_KEYRINGS: list[Keyring] = []


@pytest.fixture(autouse=True)
def _fleet_key(keyring: Keyring) -> Iterator[None]:
    """The fleet key the workers hold, for `target_for`."""
    _KEYRINGS.append(keyring)
    yield
    _KEYRINGS.pop()


def target_for(tenant: str, mock: RunningMock, model: str = "mock-chat") -> Target:
    """A target whose credential is sealed for `tenant`'s jobs only."""
    del mock  # the worker reaches it through FLEET_PROVIDER_URLS
    sealed = seal(_KEYRINGS[-1], "mock", {"api_key": MOCK_KEY}, tenant=tenant, ttl=600)
    return Target(provider="mock", model=model, credential=Credential(sealed=sealed))


def _ask(text: str) -> list[Message]:
    return [Message(role="user", content=text)]


def _text(final: Final) -> str:
    assert final.message is not None
    return final.message.text()


async def _answer_to(client: FleetClient, tenant: str, mock: RunningMock, prompt: str) -> str:
    """The answer a fresh request gets (the mock's answers are a function of the prompt)."""
    return _text(await client.chat(target_for(tenant, mock), _ask(prompt)))


async def _publish(
    conn: aio_pika.abc.AbstractConnection,
    body: bytes,
    *,
    exchange: str = t.JOBS_EXCHANGE,
    routing_key: str = t.QUEUE_CHAT,
    **properties: Any,
) -> None:
    """One confirmed publish on a channel of its own (a refusal closes only that channel)."""
    channel = await conn.channel(publisher_confirms=True)
    try:
        target = await channel.get_exchange(exchange, ensure=False) if exchange else None
        ex = target or channel.default_exchange
        await ex.publish(aio_pika.Message(body, **properties), routing_key=routing_key)
    finally:
        if not channel.is_closed:
            await channel.close()


async def _dead_letters(
    tenants: Tenants, within: float = 10.0, expect: int = 1
) -> list[aio_pika.abc.AbstractIncomingMessage]:
    """What the operator finds in llm.dead (taken off the queue), once `expect` are there."""
    conn = await aio_pika.connect(tenants.url(OPERATOR))
    found: list[aio_pika.abc.AbstractIncomingMessage] = []
    try:
        channel = await conn.channel()
        queue = await channel.declare_queue(t.DEAD_QUEUE, passive=True)
        give_up = asyncio.get_running_loop().time() + within
        while len(found) < expect and asyncio.get_running_loop().time() < give_up:
            while (message := await queue.get(fail=False, no_ack=True)) is not None:
                found.append(message)
            if len(found) < expect:
                await asyncio.sleep(0.1)
    finally:
        await conn.close()
    return found


async def _own_reply_queue(
    conn: aio_pika.abc.AbstractConnection, user: str = "a"
) -> aio_pika.abc.AbstractQueue:
    channel = await conn.channel()
    name = t.reply_queue_prefix(user) + uuid.uuid4().hex[:16]
    return await channel.declare_queue(name, exclusive=True)


async def _nothing_arrives(queue: aio_pika.abc.AbstractQueue, wait: float = 1.5) -> None:
    await asyncio.sleep(wait)
    assert await queue.get(fail=False, no_ack=True) is None


# -- reading what is not yours ------------------------------------------------------------


class TestReading:
    @pytest.mark.parametrize("queue", [t.DEAD_QUEUE, t.QUEUE_CHAT, t.QUEUE_EMBED])
    async def test_a_cannot_consume_fleet_queues(
        self, a_conn: aio_pika.abc.AbstractConnection, queue: str
    ) -> None:
        raw = await (await a_conn.channel()).get_underlay_channel()
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await raw.basic_get(queue)

    async def test_a_cannot_read_bs_replies(
        self, a_conn: aio_pika.abc.AbstractConnection, b_client: FleetClient
    ) -> None:
        raw = await (await a_conn.channel()).get_underlay_channel()
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await raw.basic_get(b_client.reply_queue)

    async def test_operator_reads_dead_letters(self, fleet: Tenants) -> None:
        conn = await aio_pika.connect(fleet.url(OPERATOR))
        try:
            raw = await (await conn.channel()).get_underlay_channel()
            await raw.basic_get(t.DEAD_QUEUE)  # allowed: no exception
        finally:
            await conn.close()


# -- forging frames -----------------------------------------------------------------------


class TestForgedFrames:
    async def test_a_cannot_publish_into_bs_reply_queue(
        self, a_conn: aio_pika.abc.AbstractConnection, b_client: FleetClient
    ) -> None:
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await _publish(a_conn, b"forged", exchange="", routing_key=b_client.reply_queue)

    async def test_b_believes_only_worker_frames(
        self, fleet: Tenants, b_client: FleetClient, mock: RunningMock
    ) -> None:
        """Even what the broker's administrator writes into B's queue is not an answer."""
        rid = f"b-{uuid.uuid4().hex[:8]}"
        forged = encode(
            [
                Final(
                    request_id=rid,
                    attempt=1,
                    seq=0,
                    target=Answered(provider="mock", model="forged"),
                    message=Message(role="assistant", content="forged answer"),
                    finish_reason="stop",
                )
            ]
        )
        admin = await aio_pika.connect(fleet.node.url)  # guest: an administrator
        try:
            # Sent while B waits, before the real answer can exist (the mock holds it).
            answer = asyncio.create_task(
                b_client.chat(target_for("b", mock, "mock-forge"), _ask("hello"), request_id=rid)
            )
            await asyncio.sleep(0.3)
            await _publish(admin, forged, exchange="", routing_key=b_client.reply_queue)
            await _publish(
                admin, forged, exchange="", routing_key=b_client.reply_queue, user_id="guest"
            )
            final = await answer
        finally:
            await admin.close()
        assert final.message is not None and final.message.text() != "forged answer"
        assert b_client.dropped_frames["untrusted_sender"] == 2


# -- someone else's request ids, queues and identity --------------------------------------


class TestIdentity:
    async def test_job_naming_bs_reply_queue_is_refused_unanswered(
        self,
        fleet: Tenants,
        a_conn: aio_pika.abc.AbstractConnection,
        b_client: FleetClient,
        mock: RunningMock,
    ) -> None:
        rid = f"shared-{uuid.uuid4().hex[:8]}"
        b_answer = asyncio.create_task(
            b_client.chat(target_for("b", mock), _ask("b asks"), request_id=rid)
        )
        job = ChatJob(v=1, request_id=rid, target=target_for("a", mock), messages=_ask("a asks"))
        await _publish(
            a_conn,
            encode(job),
            reply_to=b_client.reply_queue,
            correlation_id=rid,
            user_id="a",
        )
        final = await b_answer
        assert _text(final) == await _answer_to(b_client, "b", mock, "b asks")
        dead = await _dead_letters(fleet)
        assert len(dead) == 1
        headers = dead[0].headers
        assert headers[t.HDR_DEAD_CODE] == "bad_request"
        assert "not a reply queue of broker user 'a'" in str(headers[t.HDR_DEAD_REASON])
        assert b_client.dropped_frames["untrusted_sender"] == 0

    async def test_nothing_reaches_the_queue_a_job_names(
        self, fleet: Tenants, a_conn: aio_pika.abc.AbstractConnection, mock: RunningMock
    ) -> None:
        """Neither an answer nor an error frame: B's queue hears nothing of A's job."""
        b_conn = await aio_pika.connect(fleet.url("b"))
        try:
            b_queue = await _own_reply_queue(b_conn, "b")
            for body in (
                encode(
                    ChatJob(v=1, request_id="x-1", target=target_for("a", mock), messages=_ask("x"))
                ),
                b"\xc1 not msgpack",
            ):
                await _publish(
                    a_conn, body, reply_to=b_queue.name, correlation_id="x-1", user_id="a"
                )
            dead = await _dead_letters(fleet, expect=2)
            assert len(dead) == 2
            await _nothing_arrives(b_queue, wait=1.0)
        finally:
            await b_conn.close()

    async def test_same_request_id_in_two_tenants_gets_two_answers(
        self, fleet: Tenants, b_client: FleetClient, mock: RunningMock
    ) -> None:
        rid = f"same-{uuid.uuid4().hex[:8]}"
        async with FleetClient(fleet.url("a"), default_timeout=30) as a_client:
            a_final, b_final = await asyncio.gather(
                a_client.chat(target_for("a", mock), _ask("from a"), request_id=rid),
                b_client.chat(target_for("b", mock), _ask("from b"), request_id=rid),
            )
            assert _text(a_final) == await _answer_to(a_client, "a", mock, "from a")
        assert _text(b_final) == await _answer_to(b_client, "b", mock, "from b")
        assert _text(a_final) != _text(b_final)

    async def test_publishing_as_b_is_refused_by_the_broker(
        self, a_conn: aio_pika.abc.AbstractConnection, mock: RunningMock
    ) -> None:
        queue = await _own_reply_queue(a_conn)
        job = ChatJob(v=1, request_id="x", target=target_for("b", mock), messages=_ask("x"))
        with pytest.raises(aiormq.exceptions.ChannelPreconditionFailed):
            await _publish(a_conn, encode(job), reply_to=queue.name, user_id="b")

    async def test_job_without_identity_is_dead_lettered_unanswered(
        self, fleet: Tenants, a_conn: aio_pika.abc.AbstractConnection, mock: RunningMock
    ) -> None:
        queue = await _own_reply_queue(a_conn)
        job = ChatJob(v=1, request_id="anon-1", target=target_for("a", mock), messages=_ask("x"))
        await _publish(a_conn, encode(job), reply_to=queue.name, correlation_id="anon-1")
        dead = await _dead_letters(fleet)
        assert len(dead) == 1 and dead[0].headers[t.HDR_DEAD_CODE] == "bad_request"
        assert "no user_id" in str(dead[0].headers[t.HDR_DEAD_REASON])
        await _nothing_arrives(queue, wait=0.5)

    async def test_a_cannot_write_the_dead_letter_exchange(
        self, a_conn: aio_pika.abc.AbstractConnection, b_client: FleetClient
    ) -> None:
        with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
            await _publish(
                a_conn,
                b"\x80",
                exchange=t.DEAD_LETTER_EXCHANGE,
                routing_key="",
                reply_to=b_client.reply_queue,
                correlation_id="poison-1",
                user_id="a",
                headers={"x-death": [{"reason": "delivery_limit", "queue": "llm.chat"}]},
            )

    async def test_a_cannot_publish_to_the_default_exchange(
        self, a_conn: aio_pika.abc.AbstractConnection
    ) -> None:
        """Not even into a job queue directly, nor into the workers' release stream."""
        for queue in (t.QUEUE_CHAT, t.RELEASES_QUEUE):
            with pytest.raises(aiormq.exceptions.ChannelAccessRefused):
                await _publish(a_conn, b"x", exchange="", routing_key=queue, user_id="a")


# -- cancels ------------------------------------------------------------------------------


def _cancel(rid: str) -> bytes:
    return msgspec.msgpack.encode({"v": 1, "type": "cancel", "request_id": rid})


class TestCancels:
    async def test_a_cannot_cancel_bs_job_in_flight(
        self,
        a_conn: aio_pika.abc.AbstractConnection,
        b_client: FleetClient,
        mock: RunningMock,
    ) -> None:
        model = f"mock-slow-{uuid.uuid4().hex[:6]}"
        await mock_admin(
            mock, "POST", "/_mock/faults", {"spec": "stall-after:1:2", "times": 1, "model": model}
        )
        rid = f"b-{uuid.uuid4().hex[:8]}"
        answer = asyncio.create_task(
            b_client.chat(target_for("b", mock, model), _ask("slow"), request_id=rid)
        )
        await asyncio.sleep(0.8)  # the provider call is stalled mid-answer
        await _publish(
            a_conn, _cancel(rid), exchange=t.CONTROL_EXCHANGE, routing_key="", user_id="a"
        )
        final = await answer
        assert final.message is not None and final.message.text()

    async def test_b_still_cancels_its_own(self, b_client: FleetClient, mock: RunningMock) -> None:
        model = f"mock-slow-{uuid.uuid4().hex[:6]}"
        await mock_admin(
            mock, "POST", "/_mock/faults", {"spec": "stall-after:1:5", "times": 1, "model": model}
        )
        rid = f"b-{uuid.uuid4().hex[:8]}"
        answer = asyncio.create_task(
            b_client.chat(target_for("b", mock, model), _ask("slow"), request_id=rid)
        )
        await asyncio.sleep(0.8)
        await b_client.cancel(rid)
        with pytest.raises(Cancelled):
            await answer

    async def test_a_cannot_precancel_bs_request_ids(
        self,
        a_conn: aio_pika.abc.AbstractConnection,
        b_client: FleetClient,
        mock: RunningMock,
    ) -> None:
        rid = f"later-{uuid.uuid4().hex[:8]}"
        await _publish(
            a_conn, _cancel(rid), exchange=t.CONTROL_EXCHANGE, routing_key="", user_id="a"
        )
        await asyncio.sleep(0.3)
        final = await b_client.chat(target_for("b", mock), _ask("mine"), request_id=rid)
        assert _text(final) == await _answer_to(b_client, "b", mock, "mine")


# -- credentials --------------------------------------------------------------------------


@pytest.fixture
async def vault_fleet(tenants: Tenants, spawn_worker: SpawnWorker, vault_db: str) -> Tenants:
    """One worker with the credential store, as the worker login."""
    await spawn_worker(
        broker_url=tenants.url(WORKER), concurrency=8, env={"DATABASE_URL": vault_db}
    )
    return tenants


def _stored(credential_id: str) -> Target:
    return Target(provider="mock", model="mock-chat", credential=Credential(id=credential_id))


class TestCredentials:
    async def test_a_cannot_spend_bs_stored_credential(
        self, vault_fleet: Tenants, vault: Vault
    ) -> None:
        suffix = uuid.uuid4().hex[:6]
        b_key = await vault.add("b", "mock", f"b-{suffix}", {"api_key": MOCK_KEY})
        a_key = await vault.add("a", "mock", f"a-{suffix}", {"api_key": MOCK_KEY})
        unknown = str(uuid.uuid4())
        async with FleetClient(vault_fleet.url("a"), default_timeout=30) as a:
            with pytest.raises(NotFound) as theirs:
                await a.chat(_stored(b_key), _ask("spend b's key"))
            with pytest.raises(NotFound) as missing:
                await a.chat(_stored(unknown), _ask("spend nobody's key"))
            # Indistinguishable from an id that does not exist: ids cannot be probed.
            assert theirs.value.message.replace(b_key, "ID") == missing.value.message.replace(
                unknown, "ID"
            )
            assert await a.chat(_stored(a_key), _ask("my own key"))
        async with FleetClient(vault_fleet.url("b"), default_timeout=30) as b:
            assert await b.chat(_stored(b_key), _ask("b's own key"))

    async def test_a_credential_shared_with_a_opens_for_a(
        self, vault_fleet: Tenants, vault: Vault
    ) -> None:
        b_key = await vault.add(
            "b", "mock", f"shared-{uuid.uuid4().hex[:6]}", {"api_key": MOCK_KEY}
        )
        assert await vault.share(b_key, "a")
        async with FleetClient(vault_fleet.url("a"), default_timeout=30) as a:
            assert await a.chat(_stored(b_key), _ask("shared with me"))

    async def test_a_cannot_replay_bs_sealed_envelope(
        self, fleet: Tenants, mock: RunningMock
    ) -> None:
        async with FleetClient(fleet.url("a"), default_timeout=30) as a:
            with pytest.raises(Unauthorized) as refused:
                await a.chat(target_for("b", mock), _ask("replay"))
        assert "'b'" in refused.value.message and "'a'" in refused.value.message

    async def test_an_expired_envelope_does_not_open(
        self, fleet: Tenants, keyring: Keyring
    ) -> None:
        sealed = seal(
            keyring, "mock", {"api_key": MOCK_KEY}, tenant="a", ttl=60, now=time.time() - 120
        )
        target = Target(provider="mock", model="mock-chat", credential=Credential(sealed=sealed))
        async with FleetClient(fleet.url("a"), default_timeout=30) as a:
            with pytest.raises(Unauthorized, match="expired"):
                await a.chat(target, _ask("too late"))
