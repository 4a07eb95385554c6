"""What a producer sees: error frames that keep everything, token kinds, the catalog frame."""

from __future__ import annotations

import asyncio
from typing import Any

import msgspec
import pytest

from contracts.catalog import ProviderInfo
from contracts.client import _error_for_frame, _Inbox
from contracts.codec import decode_frames, encode
from contracts.errors import (
    BadRequest,
    FleetError,
    InternalError,
    ProviderUnavailable,
    RateLimited,
    error_for_code,
)
from contracts.frames import Answered, Catalog, Error, Final, RateLimit, Usage
from workers.config import CoalesceSettings
from workers.reply import ReplyPublisher, ReplyStream


def error_frame(**fields: Any) -> Error:
    return Error(request_id="r", attempt=1, seq=0, **fields)


class TestErrorFrames:
    def test_every_field_survives_the_wire(self) -> None:
        frame = error_frame(
            code="rate_limited",
            message="openai: HTTP 429: slow down",
            retryable=True,
            provider_status=429,
            retry_after=7.5,
            provider_request_id="req_abc123",
        )
        assert decode_frames(encode([frame])) == [frame]

    def test_absent_extras_stay_off_the_wire(self) -> None:
        """Older clients ignore unknown fields, but frames stay small when nothing is known."""
        body = encode([error_frame(code="internal", message="boom")])
        assert b"retry_after" not in body and b"provider_request_id" not in body
        (decoded,) = decode_frames(body)
        assert isinstance(decoded, Error)
        assert decoded.retry_after is None and decoded.provider_request_id is None

    def test_a_frame_from_an_older_worker_still_decodes(self) -> None:
        old = msgspec.msgpack.encode(
            [
                {
                    "type": "error",
                    "v": 1,
                    "request_id": "r",
                    "attempt": 1,
                    "seq": 0,
                    "code": "timeout",
                    "message": "slow",
                    "retryable": True,
                }
            ]
        )
        (frame,) = decode_frames(old)
        assert isinstance(frame, Error) and frame.retry_after is None


class TestClientRebuild:
    def test_the_workers_retryable_verdict_wins_over_the_class_default(self) -> None:
        permanent_limit = _error_for_frame(
            error_frame(code="rate_limited", message="m", retryable=False, provider_status=429)
        )
        retryable_bad_request = _error_for_frame(
            error_frame(code="bad_request", message="m", retryable=True, provider_status=400)
        )
        assert isinstance(permanent_limit, RateLimited) and permanent_limit.retryable is False
        assert isinstance(retryable_bad_request, BadRequest)
        assert retryable_bad_request.retryable is True

    def test_retry_after_status_and_request_id_are_kept(self) -> None:
        error = _error_for_frame(
            error_frame(
                code="provider_unavailable",
                message="overloaded",
                retryable=True,
                provider_status=529,
                retry_after=3.0,
                provider_request_id="req_9",
            )
        )
        assert isinstance(error, ProviderUnavailable)
        assert (error.provider_status, error.retry_after, error.provider_request_id) == (
            529,
            3.0,
            "req_9",
        )
        assert error.message == "overloaded"

    def test_the_providers_budget_reaches_the_exception(self) -> None:
        budget = RateLimit(limit_requests=60, remaining_requests=0, reset_requests=0.8)
        error = _error_for_frame(
            error_frame(code="rate_limited", message="m", retryable=True, rate_limit=budget)
        )
        assert error.rate_limit == budget
        assert _error_for_frame(error_frame(code="timeout", message="m")).rate_limit is None

    def test_a_frame_without_status_does_not_get_the_class_default(self) -> None:
        """RateLimited defaults to 429 when raised in a worker; a frame says what it says."""
        error = _error_for_frame(error_frame(code="rate_limited", message="m", retryable=True))
        assert error.provider_status is None

    def test_an_unknown_code_from_a_newer_worker_is_internal(self) -> None:
        error = error_for_code("brand_new_code", "m", retryable=True, retry_after=1.0)
        assert type(error) is InternalError and error.retryable and error.retry_after == 1.0

    def test_without_a_verdict_the_class_default_holds(self) -> None:
        assert error_for_code("rate_limited", "m").retryable is True
        assert error_for_code("bad_request", "m").retryable is False

    @pytest.mark.parametrize("cls", [BadRequest, InternalError, RateLimited, ProviderUnavailable])
    def test_every_error_has_the_attributes(self, cls: type[FleetError]) -> None:
        error = cls("m")
        assert error.retry_after is None and error.provider_request_id is None


class Channel:
    """Records what would be published; confirms at once."""

    def __init__(self) -> None:
        self.bodies: list[bytes] = []

    async def basic_publish(self, body: bytes, **_: Any) -> None:
        self.bodies.append(body)


def stream_on(channel: Channel) -> ReplyStream:
    publisher = ReplyPublisher(
        channel, CoalesceSettings(interval=0.0, start_hold=0.0), user="llm-fleet-worker"
    )  # type: ignore[arg-type]
    return ReplyStream(publisher, reply_to="q", request_id="r", attempt=1)


class TestWorkerErrorFrames:
    async def test_the_frame_carries_what_the_exception_knows(self) -> None:
        channel = Channel()
        stream = stream_on(channel)
        exc = RateLimited("slow down", retry_after=12.0, provider_request_id="req_1")
        await stream.fail_with(exc)
        (frame,) = decode_frames(channel.bodies[0])
        assert isinstance(frame, Error)
        assert (frame.code, frame.retryable, frame.provider_status) == ("rate_limited", True, 429)
        assert (frame.retry_after, frame.provider_request_id) == (12.0, "req_1")
        stream.close()

    async def test_a_refused_job_is_marked_not_retryable(self) -> None:
        channel = Channel()
        stream = stream_on(channel)
        await stream.fail_with(ProviderUnavailable("store down"), retryable=False)
        (frame,) = decode_frames(channel.bodies[0])
        assert isinstance(frame, Error) and frame.retryable is False
        stream.close()

    async def test_worker_frame_to_client_exception(self) -> None:
        """The whole way: exception in the worker → frame → the producer's exception."""
        channel = Channel()
        stream = stream_on(channel)
        original = BadRequest(
            "try again", provider_status=400, retryable=True, provider_request_id="req_x"
        )
        await stream.fail_with(original)
        (frame,) = decode_frames(channel.bodies[0])
        assert isinstance(frame, Error)
        rebuilt = _error_for_frame(frame)
        assert type(rebuilt) is BadRequest
        for attr in ("message", "retryable", "provider_status", "retry_after"):
            assert getattr(rebuilt, attr) == getattr(original, attr)
        assert rebuilt.provider_request_id == "req_x"
        stream.close()


class TestUsage:
    def test_token_kinds_round_trip_in_a_final_frame(self) -> None:
        usage = Usage(
            input_tokens=100,
            output_tokens=50,
            total_tokens=150,
            cached_input_tokens=80,
            cache_write_tokens=20,
            reasoning_tokens=30,
        )
        final = Final(
            request_id="r", attempt=1, seq=3, target=Answered(provider="p", model="m"), usage=usage
        )
        (decoded,) = decode_frames(encode([final]))
        assert isinstance(decoded, Final) and decoded.usage == usage

    def test_unreported_kinds_are_none_not_zero(self) -> None:
        final = Final(
            request_id="r", attempt=1, seq=0, target=Answered(provider="p", model="m"),
            usage=Usage(input_tokens=3, output_tokens=4, total_tokens=7, cached_input_tokens=0),
        )  # fmt: skip
        (decoded,) = decode_frames(encode([final]))
        assert isinstance(decoded, Final)
        assert decoded.usage.cached_input_tokens == 0  # reported: none were cached
        assert decoded.usage.reasoning_tokens is None  # not reported at all


class TestCatalogFrame:
    def test_round_trip(self) -> None:
        providers = [
            ProviderInfo(
                name="openai",
                capabilities=["chat", "stream", "embed"],
                default_base_url="https://api.openai.com/v1",
                credential_fields=["api_key", "base_url"],
            ),
            ProviderInfo(name="vllm", capabilities=["chat"]),
        ]
        frame = Catalog(request_id="c", attempt=1, seq=0, providers=providers)
        assert decode_frames(encode([frame])) == [frame]

    async def test_the_client_inbox_hands_it_over(self) -> None:
        inbox = _Inbox()
        inbox.push(Catalog(request_id="c", attempt=1, seq=0, providers=[]))
        item = await asyncio.wait_for(inbox.queue.get(), 1)
        assert isinstance(item, Catalog)
