"""ReplyStream batching, against a fake confirm channel (the broker path is in integration)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from contracts import topology as t
from contracts.codec import decode_frames
from contracts.errors import BadRequest
from contracts.frames import Answered, Delta, Error, Final, Start
from contracts.jobs import Message
from workers.config import CoalesceSettings
from workers.reply import ReplyPublisher, ReplyStream


class Channel:
    """Records what would be published; confirms at once."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def basic_publish(self, body: bytes, **_: Any) -> None:
        self.bodies.append(body)


async def test_start_rides_with_the_first_delta() -> None:
    channel = Channel()
    pub = ReplyPublisher(
        channel, CoalesceSettings(interval=0.0, start_hold=0.5), user="llm-fleet-worker"
    )  # type: ignore[arg-type]
    stream = ReplyStream(pub, reply_to="q", request_id="r", attempt=1)
    stream.start("w1")
    await asyncio.sleep(0.05)
    assert channel.bodies == []  # held back, waiting for company
    stream.text("hi")
    await asyncio.sleep(0.01)
    (first,) = channel.bodies
    assert [type(f) for f in decode_frames(first)] == [Start, Delta]
    stream.close()


async def test_start_goes_alone_when_the_provider_is_slow() -> None:
    channel = Channel()
    pub = ReplyPublisher(
        channel, CoalesceSettings(interval=0.0, start_hold=0.02), user="llm-fleet-worker"
    )  # type: ignore[arg-type]
    stream = ReplyStream(pub, reply_to="q", request_id="r", attempt=1)
    stream.start("w1")
    await asyncio.sleep(0.1)
    assert [type(f) for f in decode_frames(channel.bodies[0])] == [Start]
    stream.close()


async def test_streams_sharing_a_reply_queue_share_messages_and_keep_order() -> None:
    channel = Channel()
    pub = ReplyPublisher(
        channel, CoalesceSettings(interval=0.01, start_hold=0.0), user="llm-fleet-worker"
    )  # type: ignore[arg-type]
    a = ReplyStream(pub, reply_to="q", request_id="a", attempt=1)
    b = ReplyStream(pub, reply_to="q", request_id="b", attempt=2)
    for piece in ("x", "y", "z"):
        a.text(piece)
        b.text(piece.upper())
    await asyncio.gather(
        a.finish(target=Answered(provider="p", model="m")),
        b.finish(target=Answered(provider="p", model="m")),
    )
    frames = [f for body in channel.bodies for f in decode_frames(body)]
    assert len(channel.bodies) < len(frames)  # batched: fewer messages than frames
    for rid, text, attempt in (("a", "xyz", 1), ("b", "XYZ", 2)):
        mine = [f for f in frames if f.request_id == rid]
        assert [f.seq for f in mine] == list(range(len(mine)))
        assert "".join(f.text for f in mine if isinstance(f, Delta)) == text
        assert isinstance(mine[-1], Final) and mine[-1].attempt == attempt
    a.close()
    b.close()


async def test_a_frame_that_cannot_be_built_fails_its_job_not_the_batch() -> None:
    """Used to kill the sender task, leaving every waiting job hung for ever."""
    channel = Channel()
    pub = ReplyPublisher(
        channel, CoalesceSettings(interval=0.0, start_hold=0.0), user="llm-fleet-worker"
    )  # type: ignore[arg-type]
    bad = ReplyStream(pub, reply_to="q", request_id="bad", attempt=1)
    good = ReplyStream(pub, reply_to="q", request_id="good", attempt=1)
    outcome = await asyncio.wait_for(
        asyncio.gather(
            bad.finish(target=object()),  # not encodable
            good.finish(target=Answered(provider="p", model="m")),
            return_exceptions=True,
        ),
        timeout=2,
    )
    assert isinstance(outcome[0], TypeError) and outcome[1] is None
    await bad.fail(code="internal", message="could not encode the answer")
    frames = [f for body in channel.bodies for f in decode_frames(body)]
    assert [(f.request_id, f.seq) for f in frames if f.request_id == "bad"] == [("bad", 0)]
    bad.close()
    good.close()


async def test_refusal_pieces_travel_in_delta_frames_apart_from_text() -> None:
    channel = Channel()
    pub = ReplyPublisher(
        channel, CoalesceSettings(interval=0.0, start_hold=0.0), user="llm-fleet-worker"
    )  # type: ignore[arg-type]
    stream = ReplyStream(pub, reply_to="q", request_id="r", attempt=1)
    stream.refusal("I can't")
    stream.refusal(" help.")
    await asyncio.sleep(0.01)
    stream.text("plain")
    await asyncio.sleep(0.01)
    deltas = [f for body in channel.bodies for f in decode_frames(body) if type(f) is Delta]
    assert "".join(d.refusal for d in deltas) == "I can't help."
    assert "".join(d.text for d in deltas) == "plain"
    stream.close()


async def test_an_answer_over_the_broker_limit_becomes_an_error_frame() -> None:
    """The broker would refuse it and close the channel; the job would run again for ever."""
    channel = Channel()
    pub = ReplyPublisher(
        channel, CoalesceSettings(interval=0.0, start_hold=0.0), user="llm-fleet-worker"
    )  # type: ignore[arg-type]
    stream = ReplyStream(pub, reply_to="q", request_id="r", attempt=1)
    huge = Message(role="assistant", content="x" * t.BROKER_MAX_MESSAGE_BYTES)
    with pytest.raises(BadRequest, match="over the broker's message limit"):
        await stream.finish(target=Answered(provider="p", model="m"), message=huge)
    assert channel.bodies == []
    await stream.fail_with(BadRequest("answer too big"))
    (error,) = decode_frames(channel.bodies[-1])
    assert isinstance(error, Error) and error.seq == 0 and error.code == "bad_request"
    stream.close()
