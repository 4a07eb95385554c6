"""Who sent what: broker logins, reply-queue ownership and the client's frame filter."""

from __future__ import annotations

import asyncio
from types import SimpleNamespace
from typing import Any

import pytest
from pamqp.commands import Basic

from contracts import topology as t
from contracts.brokers import BrokerRing, broker_user
from contracts.client import FleetClient, _Inbox
from contracts.codec import encode
from contracts.frames import Answered, Final
from contracts.jobs import Message


class TestOwnership:
    @pytest.mark.parametrize(
        ("user", "queue", "owned"),
        [
            ("a", "llm.reply.a.0123abcd", True),
            ("a", "llm.reply.a.embed-backfill_2", True),
            ("a", "llm.reply.b.0123abcd", False),
            ("a", "llm.reply.a.b.0123", False),  # user "a.b"'s queue, not a's
            ("a.b", "llm.reply.a.b.0123", True),
            ("a", "llm.reply.ab.0123", False),
            ("a", "llm.reply.a.", False),
            ("a", "llm.chat", False),
            ("a", "amq.gen-xyz", False),
            ("", "llm.reply..x", False),
            ("a", "llm.reply.a." + "x" * 129, False),
        ],
    )
    def test_owns_reply_queue(self, user: str, queue: str, owned: bool) -> None:
        assert t.owns_reply_queue(user, queue) is owned


class TestLogins:
    @pytest.mark.parametrize(
        ("url", "user"),
        [
            ("amqp://acme:pw@host/", "acme"),
            ("amqp://host/", "guest"),
            ("amqp://svc%2Ddash:pw@host:5672/vh", "svc-dash"),
        ],
    )
    def test_broker_user(self, url: str, user: str) -> None:
        assert broker_user(url) == user

    def test_one_process_one_login(self) -> None:
        assert BrokerRing("amqp://a:x@h1/,amqp://a:y@h2/").user == "a"
        with pytest.raises(ValueError, match="same login"):
            BrokerRing("amqp://a:x@h1/,amqp://b:y@h2/")


class TestClientNames:
    def test_reply_queues_are_under_the_login(self) -> None:
        client = FleetClient("amqp://acme:pw@127.0.0.1/")
        assert client.user == "acme"
        assert t.owns_reply_queue("acme", client.reply_queue)

    def test_named_reply_queue_is_a_token_of_the_login(self) -> None:
        client = FleetClient("amqp://acme:pw@127.0.0.1/", reply_queue="embed-backfill")
        assert client.reply_queue == "llm.reply.acme.embed-backfill"
        full = FleetClient("amqp://acme:pw@127.0.0.1/", reply_queue="llm.reply.acme.x1")
        assert full.reply_queue == "llm.reply.acme.x1"

    @pytest.mark.parametrize("name", ["llm.reply.other.x", "with.dot", "llm.reply.acme.a.b"])
    def test_names_outside_the_login_are_refused(self, name: str) -> None:
        with pytest.raises(ValueError, match="reply_queue"):
            FleetClient("amqp://acme:pw@127.0.0.1/", reply_queue=name)


class _Channel:
    def __init__(self) -> None:
        self.acked: list[int] = []

    async def basic_ack(self, tag: int) -> None:
        self.acked.append(tag)


def _message(body: bytes, user_id: str | None) -> Any:
    """Just what `FleetClient._on_reply` reads of an aiormq delivery."""
    return SimpleNamespace(
        body=body,
        header=SimpleNamespace(properties=Basic.Properties(user_id=user_id)),
        delivery=SimpleNamespace(delivery_tag=7),
        channel=_Channel(),
    )


def _final(rid: str) -> bytes:
    return encode(
        [
            Final(
                request_id=rid,
                attempt=1,
                seq=0,
                target=Answered(provider="mock", model="m"),
                message=Message(role="assistant", content="hi"),
            )
        ]
    )


class TestFrameFilter:
    async def _client_waiting_for(self, rid: str) -> tuple[FleetClient, asyncio.Queue[Any]]:
        client = FleetClient("amqp://acme:pw@127.0.0.1/", worker_users=["fleet-w"])
        inbox = client._inboxes[rid] = _Inbox()
        return client, inbox.queue

    @pytest.mark.parametrize("sender", [None, "mallory", "guest"])
    async def test_frames_from_non_workers_are_dropped(self, sender: str | None) -> None:
        client, queue = await self._client_waiting_for("r1")
        message = _message(_final("r1"), sender)
        await client._on_reply(message)
        assert queue.empty()
        assert client.dropped_frames["untrusted_sender"] == 1
        assert message.channel.acked == [7]  # taken off the queue, never redelivered

    @pytest.mark.parametrize("sender", ["fleet-w", "acme"])
    async def test_worker_frames_are_taken(self, sender: str) -> None:
        client, queue = await self._client_waiting_for("r1")
        await client._on_reply(_message(_final("r1"), sender))
        assert type(queue.get_nowait()) is Final
        assert not client.dropped_frames

    async def test_frames_for_requests_never_sent_are_counted(self) -> None:
        client, queue = await self._client_waiting_for("r1")
        await client._on_reply(_message(_final("someone-elses"), "fleet-w"))
        assert queue.empty()
        assert client.dropped_frames["unknown_request"] == 1

    async def test_late_frames_of_own_requests_are_not_strangers(self) -> None:
        """After a cancel or a timeout the worker may still answer: expected, not counted."""
        client, queue = await self._client_waiting_for("r1")
        client._forget("r1")
        await client._on_reply(_message(_final("r1"), "fleet-w"))
        assert queue.empty() and not client.dropped_frames
