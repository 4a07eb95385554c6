"""Client inbox ordering across attempts and resubmissions, reconnect pacing, broker
rotation, and the release ledger that keeps broker restarts out of the crash count."""

from __future__ import annotations

import asyncio
import time

import pytest

from contracts.brokers import Backoff, BrokerRing, broker_urls
from contracts.client import Restart, _Inbox
from contracts.frames import Answered, Delta, Error, Final, Frame, Start
from contracts.jobs import Message, ToolCall
from workers.releases import ReleaseLedger, job_key, release_note


def drain(inbox: _Inbox) -> list[object]:
    out: list[object] = []
    while not inbox.queue.empty():
        out.append(inbox.queue.get_nowait())
    return out


def delta(seq: int, text: str, attempt: int = 1, submission: int = 0) -> Delta:
    return Delta(request_id="r", attempt=attempt, seq=seq, submission=submission, text=text)


def final(seq: int, text: str, attempt: int = 1, submission: int = 0) -> Final:
    return Final(
        request_id="r",
        attempt=attempt,
        seq=seq,
        submission=submission,
        target=Answered(provider="p", model="m"),
        message=Message(
            role="assistant",
            content=text,
            tool_calls=[ToolCall(id="c1", name="f", arguments="{}")],
        ),
    )


class TestInbox:
    def test_frames_of_an_older_submission_are_ignored_once_resubmitted(self) -> None:
        inbox = _Inbox()
        inbox.push(Start(request_id="r", attempt=1, seq=0, worker="w"))
        inbox.push(delta(1, "old "))
        inbox.resubmitted(1)
        inbox.push(delta(2, "late old"))  # the first submission still running somewhere
        inbox.push(Start(request_id="r", attempt=1, seq=0, submission=1, worker="w2"))
        inbox.push(delta(1, "new", submission=1))
        inbox.push(final(2, "new", submission=1))
        events = drain(inbox)
        kinds = [type(e).__name__ for e in events]
        assert kinds == ["Start", "Delta", "Restart", "Start", "Delta", "Final"]
        assert events[2] == Restart(0)
        assert [e.text for e in events if isinstance(e, Delta)] == ["old ", "new"]

    def test_no_restart_when_nothing_was_shown(self) -> None:
        inbox = _Inbox()
        inbox.push(Start(request_id="r", attempt=1, seq=0, worker="w"))
        inbox.resubmitted(1)
        inbox.push(Start(request_id="r", attempt=1, seq=0, submission=1, worker="w"))
        assert [type(e).__name__ for e in drain(inbox)] == ["Start", "Start"]

    def test_a_final_after_lost_deltas_gives_the_whole_answer_once(self) -> None:
        """A broker restart drops transient deltas but keeps the persistent final."""
        inbox = _Inbox()
        inbox.push(Start(request_id="r", attempt=2, seq=0, worker="w"))
        inbox.push(delta(1, "Hel", attempt=2))
        # seq 2 and 3 were lost
        inbox.push(final(4, "Hello there", attempt=2))
        events = drain(inbox)
        assert [type(e).__name__ for e in events] == ["Start", "Delta", "Restart", "Delta", "Final"]
        catch_up = events[3]
        assert isinstance(catch_up, Delta) and catch_up.text == "Hello there"
        assert [c.name for c in catch_up.tool_calls] == ["f"]
        # anything after the final (a duplicate redelivery) is dropped
        inbox.push(delta(3, "dup", attempt=2))
        assert drain(inbox) == []

    def test_an_error_after_a_gap_ends_the_request(self) -> None:
        inbox = _Inbox()
        inbox.push(delta(0, "x"))
        err = Error(request_id="r", attempt=1, seq=5, code="timeout", message="m")
        inbox.push(err)
        assert drain(inbox)[-1] is err

    def test_out_of_order_deltas_are_held_until_the_gap_fills(self) -> None:
        inbox = _Inbox()
        frames: list[Frame] = [delta(1, "b"), delta(0, "a"), final(2, "ab")]
        for f in frames:
            inbox.push(f)
        assert [getattr(e, "text", None) for e in drain(inbox)] == ["a", "b", None]


class TestBackoff:
    def test_grows_while_sessions_fail_and_resets_after_a_healthy_one(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        monkeypatch.setattr("random.uniform", lambda a, b: b)
        b = Backoff(initial=0.2, cap=1.0, healthy_after=10.0)
        assert [b.next_delay() for _ in range(5)] == [0.2, 0.4, 0.8, 1.0, 1.0]
        b.opened()  # a session that is lost at once does not reset the delay
        assert b.next_delay() == 1.0
        b.opened()
        monkeypatch.setattr(time, "monotonic", lambda: 1e9)
        assert b.next_delay() == 0.2


class TestBrokerRing:
    def test_urls_are_split_and_required(self) -> None:
        assert broker_urls("amqp://a/, amqp://b/,") == ("amqp://a/", "amqp://b/")
        assert broker_urls(["amqp://a/"]) == ("amqp://a/",)
        with pytest.raises(ValueError):
            broker_urls(" , ")

    async def test_tries_every_broker_in_turn(self, monkeypatch: pytest.MonkeyPatch) -> None:
        tried: list[str] = []

        async def refuse(url: str, **_: object) -> None:
            tried.append(url)
            raise ConnectionRefusedError(url)

        monkeypatch.setattr("aio_pika.connect", refuse)
        ring = BrokerRing("amqp://a/,amqp://b/,amqp://c/")
        with pytest.raises(ConnectionRefusedError):
            await ring.connect("test")
        assert sorted(tried) == ["amqp://a/", "amqp://b/", "amqp://c/"]
        tried.clear()
        with pytest.raises(ConnectionRefusedError):
            await ring.connect("test")
        assert sorted(tried) == ["amqp://a/", "amqp://b/", "amqp://c/"]

    async def test_a_second_connection_can_follow_the_first(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        async def accept_b_only(url: str, **_: object) -> str:
            if url != "amqp://b/":
                raise ConnectionRefusedError(url)
            return url

        monkeypatch.setattr("aio_pika.connect", accept_b_only)
        ring = BrokerRing("amqp://a/,amqp://b/,amqp://c/")
        assert await ring.connect("consume") == "amqp://b/"
        assert await ring.connect("publish", same_broker=True) == "amqp://b/"


class TestReleaseLedger:
    def test_notes_count_once_per_note_and_per_job(self) -> None:
        ledger = ReleaseLedger()
        a, b = job_key("q", "r1", 0), job_key("q", "r2", 0)
        note = release_note("w1", "broker_connection_lost", [a, b])
        assert ledger.read(note) and ledger.read(note)  # a session re-reads the stream
        ledger.read(release_note("w2", "broker_connection_lost", [a]))
        assert (ledger.releases(a), ledger.releases(b)) == (2, 1)
        assert ledger.releases(job_key("q", "r1", 1)) == 0  # a resubmission is a new job
        assert not ledger.read(b"\xc1 not a note")
        # A note anyone could write must not stop the reader: deep nesting in an extra field.
        deep = b"\x91" * 100_000 + b"\x01"
        note = b"\x85\xa2id\xa1x\xa6worker\xa1w\xa6reason\xa1r\xa4jobs\x90\xa5extra" + deep
        assert not ledger.read(note)


class TestClientPublish:
    async def test_a_broken_session_is_not_retried_in_a_tight_loop(self) -> None:
        """A publish that fails at once (its channel already closed) must wait for the
        next session, not retry the dead one: that loop once logged 5 million lines."""
        from aiormq.exceptions import ChannelInvalidStateError

        from contracts.client import FleetClient, _Pending, _Session
        from contracts.errors import ProviderUnavailable
        from contracts.jobs import ChatJob, Credential, Target

        attempts = 0

        class DeadChannel:
            async def basic_publish(self, *_: object, **__: object) -> None:
                nonlocal attempts
                attempts += 1
                raise ChannelInvalidStateError("closed")

        client = FleetClient("amqp://unused/", reconnect_timeout=0.3)
        client._session = _Session(connection=None, publish=DeadChannel())  # type: ignore[arg-type]
        client._ready.set()
        client._supervisor = asyncio.create_task(asyncio.sleep(3600))  # "connected"
        job = ChatJob(
            v=1,
            request_id="r",
            target=Target(provider="p", model="m", credential=Credential(id="c")),
            messages=[Message(role="user", content="x")],
        )
        pending = _Pending(job, False, None)
        try:
            with pytest.raises(ProviderUnavailable):
                await client._send(pending, asyncio.get_running_loop().time() + 5)
        finally:
            client._supervisor.cancel()
        assert attempts == 1 and pending.submission == 1


def test_unknown_queues_are_refused_at_start_up() -> None:
    from workers.config import ConfigError, Settings

    with pytest.raises(ConfigError, match=r"llm\.typo"):
        Settings.from_env({"FLEET_QUEUES": "llm.chat,llm.typo"})
    assert Settings.from_env({"FLEET_QUEUES": "llm.batch"}).queues == ("llm.batch",)
