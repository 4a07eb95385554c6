"""Contract round trips and hypothesis-generated garbage."""

from __future__ import annotations

import contextlib

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts import (
    Answered,
    ChatJob,
    ContentPart,
    ContractError,
    Credential,
    Delta,
    Embeddings,
    EmbedJob,
    Error,
    Final,
    Message,
    Metrics,
    RerankItem,
    RerankJob,
    Start,
    Target,
    Tool,
    ToolCall,
    ToolCallDelta,
    Usage,
    VerifyInfo,
    VerifyJob,
    decode_frame,
    decode_job,
    encode,
)

TARGET = Target(
    provider="openai", model="gpt-4o-mini", credential=Credential(sealed="fleet1.k.abc")
)


class TestJobRoundTrip:
    @pytest.mark.parametrize(
        "job",
        [
            ChatJob(
                v=1,
                request_id="r1",
                target=TARGET,
                messages=[
                    Message(role="system", content="be brief"),
                    Message(
                        role="user",
                        content=[
                            ContentPart(type="text", text="hi"),
                            ContentPart(type="image_url", image_url="http://x/y.png"),
                        ],
                    ),
                    Message(
                        role="assistant", tool_calls=[ToolCall(id="c1", name="f", arguments="{}")]
                    ),
                    Message(role="tool", tool_call_id="c1", content="42"),
                ],
                tools=[Tool(name="f", description="d", parameters={"type": "object"})],
                options={"model.temperature": "0.2", "max_tokens": 5},
                deadline=1_900_000_000_000,
                metadata={"tenant": "t1"},
                fallbacks=[TARGET],
                stream=False,
            ),
            EmbedJob(v=1, request_id="r2", target=TARGET, inputs=["a", "b"], dimensions=8),
            RerankJob(v=1, request_id="r3", target=TARGET, query="q", documents=["a"], top_n=1),
            VerifyJob(
                v=1,
                request_id="r4",
                target=Target(provider="openai", model="x", credential=Credential(id="c9")),
            ),
        ],
    )
    def test_round_trip(self, job: object) -> None:
        assert decode_job(encode(job)) == job

    def test_unknown_fields_are_ignored(self) -> None:
        raw = msgspec.msgpack.decode(
            encode(EmbedJob(v=1, request_id="r", target=TARGET, inputs=["a"]))
        )
        raw["from_the_future"] = {"x": 1}
        raw["target"]["also_new"] = True
        job = decode_job(msgspec.msgpack.encode(raw))
        assert isinstance(job, EmbedJob) and job.inputs == ["a"]


class TestJobValidation:
    def _raw(self) -> dict[str, object]:
        out: dict[str, object] = msgspec.msgpack.decode(
            encode(
                ChatJob(
                    v=1, request_id="r", target=TARGET, messages=[Message(role="user", content="x")]
                )
            )
        )
        return out

    @pytest.mark.parametrize(
        ("mutate", "field"),
        [
            (lambda r: r.pop("request_id"), "request_id"),
            (lambda r: r.pop("v"), "v"),
            (lambda r: r["target"].pop("credential"), "target.credential"),
            (lambda r: r["target"].update(credential={}), "target.credential"),
            (
                lambda r: r["target"].update(credential={"id": "a", "sealed": "b"}),
                "target.credential",
            ),
            (lambda r: r.update(kind="dance"), "kind"),
            (lambda r: r.update(messages=[]), "messages"),
            (lambda r: r.update(messages=[{"role": "robot", "content": "x"}]), "messages[0].role"),
            (lambda r: r.update(deadline="tomorrow"), "deadline"),
            (lambda r: r.update(metadata={"k": 1}), "metadata[...]"),
        ],
    )
    def test_bad_field_is_named(self, mutate: object, field: str) -> None:
        raw = self._raw()
        mutate(raw)  # type: ignore[operator]
        with pytest.raises(ContractError) as info:
            decode_job(msgspec.msgpack.encode(raw))
        assert info.value.field == field
        assert info.value.code.value == "bad_request"

    def test_oversize_payload(self) -> None:
        with pytest.raises(ContractError, match="exceeds"):
            decode_job(b"\x00" * 100, max_bytes=10)

    @given(st.binary(max_size=512))
    @settings(max_examples=500, deadline=None)
    def test_garbage_bytes_always_raise_contract_error(self, data: bytes) -> None:
        with contextlib.suppress(ContractError):
            decode_job(data)

    @given(
        st.recursive(
            st.none()
            | st.booleans()
            | st.integers(-(2**63), 2**64 - 1)
            | st.floats()
            | st.text(max_size=8)
            | st.binary(max_size=8),
            lambda kids: (
                st.lists(kids, max_size=4) | st.dictionaries(st.text(max_size=8), kids, max_size=4)
            ),
            max_leaves=20,
        )
    )
    @settings(max_examples=500, deadline=None)
    def test_garbage_structures_always_raise_contract_error(self, value: object) -> None:
        with contextlib.suppress(ContractError):
            decode_job(msgspec.msgpack.encode(value))

    @given(
        st.dictionaries(
            st.sampled_from(
                [
                    "v",
                    "kind",
                    "request_id",
                    "target",
                    "messages",
                    "inputs",
                    "deadline",
                    "options",
                    "stream",
                    "tools",
                ]
            ),
            st.none()
            | st.integers(-(2**63), 2**63)
            | st.text(max_size=5)
            | st.lists(st.integers(0, 9), max_size=2)
            | st.sampled_from(["chat", "embed", "verify", "rerank"]),
        )
    )
    @settings(max_examples=500, deadline=None)
    def test_plausible_but_wrong_jobs_raise_contract_error(self, value: dict[str, object]) -> None:
        with contextlib.suppress(ContractError):
            decode_job(msgspec.msgpack.encode(value))


class TestFrames:
    @pytest.mark.parametrize(
        "frame",
        [
            Start(request_id="r", attempt=1, seq=0, worker="w1"),
            Delta(
                request_id="r",
                attempt=1,
                seq=1,
                text="hel",
                tool_calls=[ToolCallDelta(index=0, id="c", name="f", arguments="{")],
            ),
            Final(
                request_id="r",
                attempt=2,
                seq=5,
                target=Answered(provider="p", model="m"),
                usage=Usage(input_tokens=1, output_tokens=2, total_tokens=3),
                metrics=Metrics(ttft_ms=1.5, total_ms=9.0, retries=1, frames=6),
                finish_reason="stop",
                message=Message(role="assistant", content="hello"),
                rerank=[RerankItem(index=0, score=0.5)],
                verify=VerifyInfo(ok=True, detail="d"),
            ),
            Error(
                request_id="r",
                attempt=1,
                seq=0,
                code="rate_limited",
                message="slow down",
                retryable=True,
                provider_status=429,
            ),
        ],
    )
    def test_round_trip(self, frame: object) -> None:
        assert decode_frame(encode(frame)) == frame

    def test_embeddings_travel_as_packed_float32(self) -> None:
        import struct

        data = struct.pack("<4f", 1.0, 2.0, 3.0, 4.0)
        e = Embeddings(dims=2, count=2, data=data)
        assert e.vectors() == [[1.0, 2.0], [3.0, 4.0]]
        frame = Final(
            request_id="r", attempt=1, seq=0, target=Answered(provider="p", model="m"), embeddings=e
        )
        blob = encode(frame)
        assert data in blob  # raw bytes, not a list of floats
        assert decode_frame(blob) == frame
