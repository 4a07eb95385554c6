"""One bad message must never stop the fleet: poison properties and fuzzed jobs.

The incident this guards against: a job whose content_type was not UTF-8 made
pamqp raise inside aiormq's frame reader, so every worker it reached dropped its
broker connection, and the broker handed the message to the next one (~850
reconnects in 30 s) while valid jobs waited. Here such messages, written byte by
byte by tests/amqp_raw.py, travel next to valid traffic through a real worker:
each must be answered (or dead-lettered) exactly once, valid jobs must keep
flowing, and the worker's broker session must never drop.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import math
import random
import string
import struct
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import aio_pika
import msgspec
import pytest
from aio_pika.abc import AbstractIncomingMessage

from contracts import (
    ChatJob,
    ContractError,
    Error,
    Final,
    FleetError,
    Frame,
    Message,
    Target,
    decode_frames,
)
from contracts import encode as encode_job
from contracts import topology as t
from contracts.client import FleetClient
from contracts.codec import peek_job
from providers.mock.server import RunningMock
from tests.amqp_raw import (
    Outcome,
    RawPublisher,
    content_header,
    nested_table,
    table_field,
    table_value,
)
from tests.integration.conftest import SpawnWorker, WorkerProc, sealed_target
from tests.integration.test_fleet import collect, direct_text, mock_admin
from tests.producers import USER, reply_queue_name
from workers.crypto import Keyring

pytestmark = pytest.mark.integration

DeadLetters = Callable[..., Awaitable[list[AbstractIncomingMessage]]]
Answer = Final | Error


def chat_body(target: Target, rid: str, prompt: str = "x", **fields: Any) -> bytes:
    job = ChatJob(
        v=1,
        request_id=rid,
        target=target,
        messages=[Message(role="user", content=prompt)],
        **fields,
    )
    return encode_job(job)


class Replies:
    """Every frame arriving on one private reply queue, by request id."""

    def __init__(self, name: str) -> None:
        self.name = name
        self.frames: defaultdict[str, list[Frame]] = defaultdict(list)
        self.undecodable: list[bytes] = []
        self._arrived = asyncio.Event()

    async def on_message(self, message: AbstractIncomingMessage) -> None:
        try:
            frames = decode_frames(message.body)
        except ContractError:
            self.undecodable.append(message.body)
            return
        for frame in frames:
            self.frames[frame.request_id].append(frame)
        self._arrived.set()

    def answers(self, rid: str) -> list[Answer]:
        return [f for f in self.frames.get(rid, ()) if isinstance(f, Final | Error)]

    async def wait_for(self, rids: Iterable[str], within: float) -> None:
        """Until each of `rids` has an answer or `within` passes (the caller then asserts)."""
        wanted = list(rids)
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(within):
                while any(not self.answers(rid) for rid in wanted):
                    self._arrived.clear()
                    await self._arrived.wait()


@pytest.fixture
async def replies(amqp_url: str) -> AsyncIterator[Replies]:
    connection = await aio_pika.connect(amqp_url)
    try:
        channel = await connection.channel()
        queue = await channel.declare_queue(reply_queue_name(), exclusive=True)
        inbox = Replies(queue.name)
        await queue.consume(inbox.on_message, no_ack=True)
        yield inbox
    finally:
        await connection.close()


def dead_id(message: AbstractIncomingMessage) -> str:
    """Which job a dead-lettered copy is: its correlation id, else the request id in its body."""
    return message.correlation_id or peek_job(message.body)[0] or ""


async def read_dead(
    read: DeadLetters, wanted: set[str], within: float
) -> list[AbstractIncomingMessage]:
    """Everything in llm.dead once `wanted` are all there, plus whatever a duplicate adds."""
    got: list[AbstractIncomingMessage] = []
    give_up = time.monotonic() + within
    while not wanted <= {dead_id(m) for m in got} and time.monotonic() < give_up:
        got += await read(wait=0.2)
    got += await read(wait=0.5)  # a second copy of any of them would be there by now
    return got


def session_log(worker: WorkerProc) -> str:
    """How often the worker (re)opened and lost its broker session, and the lines saying so."""
    logs = worker.logs()
    lines = [
        line[:300]  # a traceback fills a line; its start says enough
        for line in logs.splitlines()
        if any(w in line for w in ("worker_ready", "broker_", "job_crashed", "Traceback"))
    ]
    ready, lost = logs.count('"worker_ready"'), logs.count('"broker_connection_lost"')
    head = "\n".join(lines[:12])
    return f"worker_ready x{ready}, broker_connection_lost x{lost}; first lines:\n{head}"


def assert_one_session(worker: WorkerProc) -> None:
    """The worker never lost (or dropped) its broker session while the bad input went by."""
    logs = worker.logs()
    assert logs.count('"worker_ready"') == 1, session_log(worker)
    for event in ("broker_connection_lost", "broker_session_failed", "job_crashed"):
        assert f'"{event}"' not in logs, session_log(worker)


async def valid_answers(
    chats: list[asyncio.Task[tuple[str, Final, int]]], worker: WorkerProc, within: float = 30
) -> list[tuple[str, Final, int]]:
    """The valid chats' results; if they stall, say what the worker's session was doing."""
    try:
        return await asyncio.wait_for(asyncio.gather(*chats), within)
    except (TimeoutError, FleetError) as exc:
        raise AssertionError(f"valid jobs not answered ({exc!r}); {session_log(worker)}") from exc


async def publish_job(
    publisher: RawPublisher, body: bytes, properties: dict[str, object]
) -> Outcome:
    outcome = await asyncio.wait_for(
        publisher.publish(t.JOBS_EXCHANGE, t.QUEUE_CHAT, body, properties, mandatory=True), 10
    )
    if outcome.status == "connection-closed":
        await publisher.connect()  # the broker refused the message; go on with a fresh one
    return outcome


# -- 1. one defect at a time --------------------------------------------------------------

# (case, the defect, the name the worker gives the property, the raw bytes it keeps)
POISON: list[tuple[str, dict[str, object], str, bytes | None]] = [
    ("content_type", {"content_type": b"\xff\xfe"}, "content_type", b"\xff\xfe"),
    ("content_encoding", {"content_encoding": b"gz\xffip"}, "content_encoding", b"gz\xffip"),
    ("correlation_id", {"correlation_id": b"job-\xc3("}, "correlation_id", b"job-\xc3("),
    ("message_id", {"message_id": b"\xed\xa0\x80id"}, "message_id", b"\xed\xa0\x80id"),
    ("type", {"type": b"\xc0\xafchat"}, "message_type", b"\xc0\xafchat"),
    ("app_id", {"app_id": b"\x80app"}, "app_id", b"\x80app"),
    ("cluster_id", {"cluster_id": b"\xfe"}, "cluster_id", b"\xfe"),
    ("header_key", {"headers": table_field(b"\xffkey", b"b", b"\x01")}, "headers", None),
    ("header_depth", {"headers": table_field(b"deep", b"F", nested_table(500))}, "headers", None),
    ("reply_to", {"reply_to": b"replies-\xff"}, "reply_to", b"replies-\xff"),
]


async def test_poison_properties_are_refused_once_and_valid_jobs_keep_flowing(
    spawn_worker: SpawnWorker,
    amqp_url: str,
    client: FleetClient,
    keyring: Keyring,
    mock: RunningMock,
    replies: Replies,
    dead_letters: DeadLetters,
) -> None:
    worker = await spawn_worker()
    target = sealed_target(keyring)
    rids = {case: f"poison-{case}-{uuid.uuid4().hex[:6]}" for case, *_ in POISON}
    prompts = [f"valid job {i}" for i in range(2 * len(POISON) + 1)]
    chats = [asyncio.create_task(collect(client, target, prompts[0]))]
    far_future = f"far-future-{uuid.uuid4().hex[:6]}"
    async with RawPublisher(amqp_url) as publisher:
        for i, (case, defect, _, _) in enumerate(POISON):
            properties: dict[str, object] = {
                "reply_to": replies.name,
                "user_id": USER,
                "correlation_id": rids[case],
                "content_type": "application/msgpack",
                "delivery_mode": 2,
                **defect,
            }
            body = chat_body(target, rids[case], f"poison {case}")
            outcome = await publish_job(publisher, body, properties)
            assert outcome == Outcome("ack"), (case, outcome)  # RabbitMQ relays all of these
            for prompt in prompts[2 * i + 1 : 2 * i + 3]:
                chats.append(asyncio.create_task(collect(client, target, prompt)))
        # Valid, though past what Python's datetime holds: read as absent, answered as usual.
        properties = {
            "reply_to": replies.name,
            "user_id": USER,
            "correlation_id": far_future,
            "timestamp": 2**63 - 1,
        }
        body = chat_body(target, far_future, "the far future")
        assert await publish_job(publisher, body, properties) == Outcome("ack")

    results = await valid_answers(chats, worker)
    for prompt, (text, final, restarts) in zip(prompts, results, strict=True):
        assert text == await direct_text(mock, prompt), prompt
        assert final.attempt == 1 and restarts == 0, prompt

    answered = [rids[case] for case, defect, *_ in POISON if "reply_to" not in defect]
    await replies.wait_for([*answered, far_future], within=20)
    await asyncio.sleep(0.3)  # time for a duplicate answer to show up
    (ok,) = replies.answers(far_future)
    assert isinstance(ok, Final) and ok.message is not None, ok
    assert ok.message.content == await direct_text(mock, "the far future")

    for case, defect, name, _ in POISON:
        frames = replies.frames.get(rids[case], [])
        if "reply_to" in defect:
            assert frames == [], (case, frames)  # nowhere to answer; the dead letter tells
            continue
        assert len(frames) == 1 and isinstance(frames[0], Error), (case, frames)
        assert frames[0].code == "bad_request", (case, frames[0])
        assert "cannot be read" in frames[0].message and name in frames[0].message, frames[0]
    assert set(replies.frames) == {*answered, far_future} and not replies.undecodable

    dead = await read_dead(dead_letters, set(rids.values()), within=15)
    assert Counter(dead_id(m) for m in dead) == Counter(rids.values())
    by_rid = {dead_id(m): m for m in dead}
    for case, _, name, raw in POISON:
        headers = by_rid[rids[case]].headers
        assert headers[t.HDR_DEAD_CODE] == "bad_request", (case, headers)
        assert name in str(headers[t.HDR_DEAD_REASON]), (case, headers)
        if raw is not None:
            kept = headers.get(f"x-fleet-raw-{name}")
            assert isinstance(kept, bytes | bytearray) and bytes(kept) == raw, (case, headers)
    assert_one_session(worker)


# -- 2. a seeded storm of malformed messages -------------------------------------------------

SEED = 20240515
NO_ANSWER: frozenset[str] = frozenset()
FINAL = frozenset({"final"})
BAD_REQUEST = frozenset({"bad_request"})
UNAUTHORIZED = frozenset({"unauthorized"})
# Short strings whose bytes can never be UTF-8, however the ASCII around them reads.
NEVER_UTF8 = (b"\xff", b"\xfe", b"\xc0\xaf", b"\xed\xa0\x80", b"\xf8\x88\x80\x80\x80", b"\x80")
SHORT_STRINGS = (
    "content_type",
    "content_encoding",
    "correlation_id",
    "message_id",
    "type",
    "app_id",
    "cluster_id",
    "reply_to",
)
# Header value types RabbitMQ relays, with a generator of their wire form.
_SCALARS: dict[bytes, Callable[[random.Random], bytes]] = {
    b"t": lambda r: bytes([r.randint(0, 1)]),
    b"b": lambda r: r.randbytes(1),
    b"B": lambda r: r.randbytes(1),
    b"s": lambda r: r.randbytes(2),
    b"u": lambda r: r.randbytes(2),
    b"I": lambda r: r.randbytes(4),
    b"i": lambda r: r.randbytes(4),
    b"l": lambda r: r.randbytes(8),
    b"f": lambda r: struct.pack(">f", r.uniform(-1e6, 1e6)),
    b"d": lambda r: struct.pack(">d", r.uniform(-1e300, 1e300)),
    b"D": lambda r: r.randbytes(5),
    b"S": lambda r: table_value(r.randbytes(r.randint(0, 40))),  # not UTF-8 is readable here
    b"T": lambda r: r.randbytes(8),  # mostly past datetime's range: read as absent
    b"V": lambda r: b"",
    b"x": lambda r: table_value(r.randbytes(r.randint(0, 40))),
}


@dataclass
class Fuzz:
    rid: str
    kind: str
    body: bytes
    properties: dict[str, object]
    answer: frozenset[str]  # allowed answers: "final" or error codes; empty = none expected
    dead: bool | None = False  # dead-lettered once (True), never (False), either (None)
    mentions: str = ""  # what the error message must name
    refused_by_broker: bool = False
    outcome: Outcome | None = field(default=None, repr=False)


@dataclass
class FuzzContext:
    rng: random.Random
    target: Target
    tripwire: Target  # a model the mock must never be asked for
    wrong_key: Target
    kid: str

    def job(self, rid: str, **fields: Any) -> dict[str, Any]:
        body: dict[str, Any] = msgspec.msgpack.decode(chat_body(self.target, rid, f"fuzz {rid}"))
        body.update(fields)
        return body

    def name(self) -> bytes:
        r = self.rng
        return "".join(r.choices(string.ascii_letters + "-_", k=r.randint(1, 12))).encode()

    def not_utf8(self) -> bytes:
        r = self.rng
        return self.name()[: r.randint(0, 12)] + r.choice(NEVER_UTF8) + self.name()


def _random_body(ctx: FuzzContext, rid: str) -> Fuzz:
    body = ctx.rng.randbytes(ctx.rng.randint(0, 300))
    return Fuzz(rid, "random body", body, {}, BAD_REQUEST, dead=True)


def _wrong_types(ctx: FuzzContext, rid: str) -> Fuzz:
    variant: dict[str, Any] = ctx.rng.choice(
        [
            {"request_id": 12345},
            {"messages": "hello"},
            {"messages": []},
            {"messages": [{"role": "wizard", "content": "x"}]},
            {"target": None},
            {"target": {"provider": "mock", "model": "mock-chat", "credential": {}}},
            {"v": "1"},
            {"submission": -1},
            {"deadline": "soon"},
            {"kind": "sing"},
        ]
    )
    body = ctx.job(rid, **variant)
    if variant == {"target": None}:
        del body["target"]
    return Fuzz(rid, f"wrong types {variant}", msgspec.msgpack.encode(body), {}, BAD_REQUEST, True)


def _deep(ctx: FuzzContext, rid: str) -> Fuzz:
    deep_array = b"\x91" * 10_000 + b"\xc0"
    deep_map = b"\x81\xa1k" * 10_000 + b"\xc0"
    shape, body = ctx.rng.choice(
        [
            ("whole body, arrays", deep_array),
            ("whole body, maps", deep_map),
            ("in options", msgspec.msgpack.encode(ctx.job(rid, options=msgspec.Raw(deep_map)))),
            (
                "in a message",
                msgspec.msgpack.encode(ctx.job(rid, messages=msgspec.Raw(deep_array))),
            ),
        ]
    )
    return Fuzz(rid, f"nested 10000 deep, {shape}", body, {}, BAD_REQUEST, dead=True)


def _oversize(ctx: FuzzContext, rid: str) -> Fuzz:
    body = chat_body(ctx.target, rid, "x" * 100_000)
    return Fuzz(rid, "oversize", body, {}, BAD_REQUEST, dead=True, mentions="limit")


def _bad_options(ctx: FuzzContext, rid: str) -> Fuzz:
    options = ctx.rng.choice(
        [
            {"temperature": math.nan},
            {"temperature": math.inf},
            {"top_p": -math.inf},
            {"model.temperature": "nan"},
            {"temperature": "1e999"},
            {"max_tokens": math.inf},
        ]
    )
    body = chat_body(ctx.tripwire, rid, "never sent", options=options)
    return Fuzz(rid, f"options {options}", body, {}, BAD_REQUEST, dead=True, mentions="options.")


def _sealed(ctx: FuzzContext, rid: str) -> Fuzz:
    junk = base64.urlsafe_b64encode(ctx.rng.randbytes(60)).decode().rstrip("=")
    envelopes = {
        "garbage": "!!!not-an-envelope!!!",
        "not base64": f"fleet1.{ctx.kid}.@@@@-not*base64",
        "random bytes": f"fleet1.{ctx.kid}.{junk}",
        "wrong key": "",
    }
    shape = ctx.rng.choice(sorted(envelopes))
    if shape == "wrong key":
        body = chat_body(ctx.wrong_key, rid, "wrong key")
    else:
        job = ctx.job(rid)
        job["target"]["credential"] = {"sealed": envelopes[shape]}
        body = msgspec.msgpack.encode(job)
    return Fuzz(rid, f"sealed credential, {shape}", body, {}, UNAUTHORIZED, dead=True)


def _delivery_count(ctx: FuzzContext, rid: str) -> Fuzz:
    count: object = ctx.rng.choice(["3", -1, 2**62])
    # A count past the crash limit is believed: refused (internal) after the release wait.
    allowed = frozenset({"final", "internal"}) if count == 2**62 else FINAL
    body = chat_body(ctx.target, rid, f"count {count!r}")
    headers = {t.HDR_DELIVERY_COUNT: count}
    return Fuzz(rid, f"x-delivery-count {count!r}", body, {"headers": headers}, allowed, None)


def _published_us(ctx: FuzzContext, rid: str) -> Fuzz:
    published: object = ctx.rng.choice(["1715000000000000", time.time() * 1e6, -1.5])
    body = chat_body(ctx.target, rid, f"published {published!r}")
    headers = {t.HDR_PUBLISHED_US: published}
    return Fuzz(rid, f"x-published-us {published!r}", body, {"headers": headers}, FINAL)


def _bad_short_string(ctx: FuzzContext, rid: str) -> Fuzz:
    prop = ctx.rng.choice(SHORT_STRINGS)
    raw = ctx.not_utf8()
    name = "message_type" if prop == "type" else prop
    answer = NO_ANSWER if prop == "reply_to" else BAD_REQUEST
    body = chat_body(ctx.target, rid, f"bad {prop}")
    return Fuzz(rid, f"{prop}={raw!r}", body, {prop: raw}, answer, dead=True, mentions=name)


def _random_table(ctx: FuzzContext, depth: int) -> tuple[bytes, bool]:
    """Content of a random, well-framed table; and whether the worker must find it unreadable."""
    r = ctx.rng
    content, unreadable = b"", False
    for _ in range(r.randint(1, 5)):
        key = ctx.name()
        if r.random() < 0.04:
            key, unreadable = ctx.not_utf8()[:255], True
        roll = r.random()
        if roll < 0.15 and depth < 3:
            inner, bad = _random_table(ctx, depth + 1)
            kind, value, unreadable = b"F", table_value(inner), unreadable or bad
        elif roll < 0.25:
            items = b"".join(k + _SCALARS[k](r) for k in r.choices(list(_SCALARS), k=3))
            kind, value = b"A", table_value(items)
        elif roll < 0.28:
            # beyond the 32 levels the guard reads: refused as unreadable
            kind, value, unreadable = b"F", nested_table(r.randint(40, 120)), True
        else:
            kind = r.choice(list(_SCALARS))
            value = _SCALARS[kind](r)
        content += table_field(key, kind, value)
    return content, unreadable


def _random_headers(ctx: FuzzContext, rid: str) -> Fuzz:
    content, unreadable = _random_table(ctx, 1)
    answer, dead = (BAD_REQUEST, True) if unreadable else (FINAL, False)
    body = chat_body(ctx.target, rid, "random headers")
    return Fuzz(rid, f"headers {content!r}", body, {"headers": content}, answer, dead)


def _broker_refuses(ctx: FuzzContext, rid: str) -> Fuzz:
    defect: dict[str, object] = ctx.rng.choice(
        [
            {"expiration": b"soon\xff"},
            {"expiration": b"-5"},
            {"user_id": b"someone-else"},
            {"headers": table_field(b"k", b"Z", b"\x01")},  # no such field type
            {"headers": table_field(b"k", b"d", struct.pack(">d", math.nan))},
        ]
    )
    body = chat_body(ctx.target, rid, "refused")
    # Should a broker take one after all, the job is answered like any other.
    answer = FINAL | BAD_REQUEST
    return Fuzz(rid, f"refused {defect}", body, defect, answer, None, refused_by_broker=True)


MIX: list[tuple[Callable[[FuzzContext, str], Fuzz], int]] = [
    (_random_body, 20),
    (_wrong_types, 16),
    (_deep, 6),
    (_oversize, 3),
    (_bad_options, 10),
    (_sealed, 8),
    (_delivery_count, 9),
    (_published_us, 6),
    (_bad_short_string, 36),
    (_random_headers, 30),
    (_broker_refuses, 6),
]


def fuzz_messages(ctx: FuzzContext) -> list[Fuzz]:
    makers = [maker for maker, n in MIX for _ in range(n)]
    ctx.rng.shuffle(makers)
    return [maker(ctx, f"fuzz-{i:03d}-{uuid.uuid4().hex[:4]}") for i, maker in enumerate(makers)]


def check_answers(messages: list[Fuzz], replies: Replies) -> list[str]:
    """What went wrong with the answers, one line per message."""
    problems = []
    for m in messages:
        answers = replies.answers(m.rid)
        expected = 0 if m.refused_by_broker or not m.answer else 1
        if len(answers) != expected:
            problems.append(f"{m.kind}: {len(answers)} answers, expected {expected}: {answers}")
            continue
        for a in answers:
            got = "final" if isinstance(a, Final) else a.code
            if got not in m.answer:
                problems.append(f"{m.kind}: answered {a!r}, expected one of {sorted(m.answer)}")
            elif isinstance(a, Error) and m.mentions not in a.message:
                problems.append(f"{m.kind}: error does not mention {m.mentions!r}: {a.message}")
    return problems


def check_dead(messages: list[Fuzz], dead: list[AbstractIncomingMessage]) -> list[str]:
    counts = Counter(dead_id(m) for m in dead)
    problems = []
    for m in messages:
        n = counts.pop(m.rid, 0)
        if m.refused_by_broker and n:
            problems.append(f"{m.kind}: dead-lettered {n}x although the broker refused it")
        elif m.dead is True and n != 1:
            problems.append(f"{m.kind}: dead-lettered {n}x, expected once")
        elif m.dead is False and n:
            problems.append(f"{m.kind}: dead-lettered {n}x, expected never")
        elif n > 1:
            problems.append(f"{m.kind}: dead-lettered {n}x")
    problems += [f"unexpected dead letter {rid!r} x{n}" for rid, n in counts.items()]
    return problems


async def test_fuzzed_messages_never_disturb_valid_jobs(
    spawn_worker: SpawnWorker,
    amqp_url: str,
    client: FleetClient,
    keyring: Keyring,
    mock: RunningMock,
    replies: Replies,
    dead_letters: DeadLetters,
) -> None:
    worker = await spawn_worker(env={"FLEET_MAX_JOB_BYTES": "65536"})
    tripwire_model = f"mock-never-asked-{uuid.uuid4().hex[:6]}"
    # If a bad-options job ever reached the mock, it would use up this fault (and get a 401).
    await mock_admin(
        mock, "POST", "/_mock/faults", {"spec": "401", "times": 1000, "model": tripwire_model}
    )
    other = Keyring.from_env({"INTEGRATION_CRYPTO_KEY": base64.b64encode(b"k" * 32).decode()})
    target = sealed_target(keyring)
    ctx = FuzzContext(
        rng=random.Random(SEED),
        target=target,
        tripwire=sealed_target(keyring, model=tripwire_model),
        wrong_key=sealed_target(other),
        kid=keyring.active_kid,
    )
    messages = fuzz_messages(ctx)
    prompts = [f"valid chat {i}" for i in range(30)]
    chats: list[asyncio.Task[tuple[str, Final, int]]] = []
    try:
        async with RawPublisher(amqp_url) as publisher:
            for i, m in enumerate(messages):
                if i % 5 == 0 and len(chats) < len(prompts):
                    chats.append(asyncio.create_task(collect(client, target, prompts[len(chats)])))
                properties: dict[str, object] = {
                    "reply_to": replies.name,
                    "user_id": USER,
                    "correlation_id": m.rid,
                    "content_type": "application/msgpack",
                    **m.properties,
                }
                m.outcome = await publish_job(publisher, m.body, properties)
        chats += [asyncio.create_task(collect(client, target, p)) for p in prompts[len(chats) :]]

        refusals = [m for m in messages if m.outcome != Outcome("ack")]
        unexpected = [m for m in refusals if not m.refused_by_broker]
        assert not unexpected, [(m.kind, m.outcome) for m in unexpected]
        for m in refusals:
            assert m.outcome is not None and m.outcome.reply_code in (406, 541), m.outcome
        for m in messages:
            if m.refused_by_broker and m.outcome == Outcome("ack"):
                m.refused_by_broker = False  # this broker took it: whatever came of it counts

        results = await valid_answers(chats, worker)
        for prompt, (text, final, restarts) in zip(prompts, results, strict=True):
            assert text == await direct_text(mock, prompt), prompt
            assert final.attempt == 1 and restarts == 0, prompt

        answerable = [m.rid for m in messages if m.answer and not m.refused_by_broker]
        await replies.wait_for(answerable, within=30)
        await asyncio.sleep(0.5)  # time for a duplicate answer to show up
        problems = check_answers(messages, replies)
        strays = set(replies.frames) - {m.rid for m in messages}
        problems += [f"frames for a request nobody sent: {rid!r}" for rid in sorted(strays)]
        problems += [f"undecodable reply: {body[:60]!r}" for body in replies.undecodable]
        wanted_dead = {m.rid for m in messages if m.dead and not m.refused_by_broker}
        problems += check_dead(messages, await read_dead(dead_letters, wanted_dead, within=15))
        assert not problems, "\n".join(problems)

        stats = await mock_admin(mock, "GET", "/_mock/stats")
        (tripwire,) = [q for q in stats["queued_faults"] if q["model"] == tripwire_model]
        assert tripwire["remaining"] == 1000, "a job with non-finite options reached the provider"
        assert_one_session(worker)
    finally:
        for task in chats:
            task.cancel()
        await mock_admin(mock, "DELETE", "/_mock/faults")


# -- 3. a refused job whose dead-letter copy outgrows the frame ---------------------------


def headers_near_frame_max(properties: dict[str, object], frame_max: int) -> bytes:
    """Header table content that leaves the content header 64 bytes under the frame limit."""
    filler = b"a" * 1024
    probe = {**properties, "headers": table_field(b"filler", b"x", table_value(filler))}
    # A frame spends 8 bytes on its own type, channel, size and end marker.
    size = len(filler) + frame_max - 8 - 64 - len(content_header(0, probe))
    return table_field(b"filler", b"x", table_value(b"a" * size))


# A refused job is copied to llm.dead with its headers and the reason added, so the
# copy can be larger than what the producer sent: a little (the reason, the raw
# bytes of unreadable properties) or a lot (each unreadable byte of a header key
# becomes three bytes of U+FFFD). Either way the copy must not cost the worker its
# connection, which would put the job back in the queue for the next worker.
OUTGROWN: list[tuple[str, Callable[[dict[str, object], int], bytes], bytes]] = [
    ("near_frame_max", headers_near_frame_max, b"\xc1 not msgpack"),
    (
        "unreadable_keys",
        lambda _, __: b"".join(
            table_field(b"\xff" * 42 + b"%03d" % i, b"b", b"\x01") for i in range(1000)
        ),
        b"",
    ),
]


@pytest.mark.parametrize(
    ("headers_for", "body"), [c[1:] for c in OUTGROWN], ids=[c[0] for c in OUTGROWN]
)
async def test_a_dead_letter_copy_larger_than_the_job_does_not_cost_the_connection(
    spawn_worker: SpawnWorker,
    amqp_url: str,
    client: FleetClient,
    keyring: Keyring,
    mock: RunningMock,
    replies: Replies,
    dead_letters: DeadLetters,
    headers_for: Callable[[dict[str, object], int], bytes],
    body: bytes,
) -> None:
    worker = await spawn_worker()
    target = sealed_target(keyring)
    rid = f"outgrown-{uuid.uuid4().hex[:6]}"
    properties: dict[str, object] = {
        "reply_to": replies.name,
        "user_id": USER,
        "correlation_id": rid,
    }
    async with RawPublisher(amqp_url) as publisher:
        properties["headers"] = headers_for(properties, publisher.frame_max)
        outcome = await publish_job(publisher, body or chat_body(target, rid), properties)
    assert outcome == Outcome("ack")  # the job itself fits the frame
    prompts = [f"after the big copy {i}" for i in range(5)]
    chats = [asyncio.create_task(collect(client, target, p)) for p in prompts]
    results = await valid_answers(chats, worker, within=15)
    for prompt, (text, _, _) in zip(prompts, results, strict=True):
        assert text == await direct_text(mock, prompt)

    await replies.wait_for([rid], within=10)
    await asyncio.sleep(0.5)  # time for a duplicate answer to show up
    assert_one_session(worker)
    answers = replies.answers(rid)
    attempts = [a.attempt for a in answers]
    assert len(answers) == 1, f"{len(answers)} answers (attempts {attempts}): {answers[:1]}"
    assert isinstance(answers[0], Error) and answers[0].code == "bad_request", answers[0]
    dead = await read_dead(dead_letters, {rid}, within=10)
    assert [dead_id(m) for m in dead] == [rid]
    assert dead[0].headers[t.HDR_DEAD_CODE] == "bad_request"
