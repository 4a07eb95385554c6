"""The chat request as a prediction's input, and the prediction as a result."""

from __future__ import annotations

from typing import Any

import pytest

from contracts.errors import BadRequest
from contracts.frames import Usage
from contracts.jobs import ContentPart, Message, Tool, ToolCall
from providers.core.types import ChatRequest
from providers.options import ModelOptions
from providers.replicate.mapping import (
    Target,
    finish_reason,
    output_text,
    prediction_input,
    render_prompt,
    target_of,
    usage_of,
)

P = "replicate"


def req(*messages: Message, **options: Any) -> ChatRequest:
    return ChatRequest(
        model="meta/llama",
        messages=list(messages) or [Message(role="user", content="hi")],
        options=ModelOptions.from_mapping(options),
    )


@pytest.mark.parametrize(
    ("model", "target"),
    [
        (
            "meta/meta-llama-3-8b-instruct",
            Target("/models/meta/meta-llama-3-8b-instruct/predictions"),
        ),
        ("meta/llama:0123abc", Target("/predictions", "0123abc")),
        ("0123abcdef", Target("/predictions", "0123abcdef")),
        ("owner.name/model_v2", Target("/models/owner.name/model_v2/predictions")),
    ],
)
def test_targets(model: str, target: Target) -> None:
    assert target_of(P, model) == target


@pytest.mark.parametrize(
    "model", ["", "a/b/c", "../x", "a/..", "a/b:c:d", "a/%2e", "é/x", "a/b?x=1"]
)
def test_bad_models(model: str) -> None:
    with pytest.raises(BadRequest):
        target_of(P, model)


def test_a_lone_user_message_is_the_prompt() -> None:
    body = prediction_input(P, req(Message(role="user", content="Tell me a joke")))
    assert body == {"prompt": "Tell me a joke"}


def test_a_conversation_is_a_transcript_and_systems_join() -> None:
    body = prediction_input(
        P,
        req(
            Message(role="system", content="Be brief."),
            Message(role="user", content="Hi"),
            Message(role="assistant", content="Hello!"),
            Message(role="developer", content="Use English."),
            Message(role="user", content=[ContentPart(type="text", text="And you?")]),
        ),
    )
    assert body == {
        "prompt": "User: Hi\n\nAssistant: Hello!\n\nUser: And you?",
        "system_prompt": "Be brief.\n\nUse English.",
    }


def test_options_map_to_the_usual_inputs() -> None:
    body = prediction_input(
        P,
        req(
            **{
                "model.max_completion_tokens": "20",
                "model.temperature": 0.3,
                "model.top_p": 0.9,
                "model.presence_penalty": 0.1,
                "model.frequency_penalty": 0.2,
                "model.seed": 7,
                "model.stop": "END,STOP",
                "model.reasoning_effort": "low",
                "model.user": "u1",
                "model.metadata": {"a": "b"},
                "model.service_tier": "flex",
                "model.response_format": "text",
            }
        ),
    )
    assert body == {
        "prompt": "hi",
        "max_tokens": 20,
        "temperature": 0.3,
        "top_p": 0.9,
        "presence_penalty": 0.1,
        "frequency_penalty": 0.2,
        "seed": 7,
        "reasoning_effort": "low",
        "stop_sequences": "END,STOP",
    }


@pytest.mark.parametrize(
    ("request_", "words"),
    [
        (ChatRequest(model="m/x", messages=[], tools=[Tool(name="t")]), "no tools"),
        (req(Message(role="tool", content="{}", tool_call_id="c1")), "tool turns"),
        (
            req(
                Message(
                    role="assistant",
                    content="",
                    tool_calls=[ToolCall(id="c1", name="t", arguments="{}")],
                )
            ),
            "tool turns",
        ),
        (
            req(
                Message(
                    role="user",
                    content=[ContentPart(type="image_url", image_url="https://x/y.png")],
                )
            ),
            "only text",
        ),
        (req(**{"model.response_format": "json_object"}), "JSON"),
        (req(**{"model.top_logprobs": 3}), "log probabilities"),
        (req(**{"model.stop": ["a,b"]}), "comma"),
    ],
)
def test_what_cannot_be_said_is_refused(request_: ChatRequest, words: str) -> None:
    with pytest.raises(BadRequest, match=words):
        prediction_input(P, request_)


def test_a_prefilled_assistant_turn_stays_in_the_transcript() -> None:
    prompt = render_prompt(
        P, [Message(role="user", content="Count"), Message(role="assistant", content="1, 2,")]
    )
    assert prompt == "User: Count\n\nAssistant: 1, 2,"


@pytest.mark.parametrize(
    ("output", "text"),
    [(None, ""), ("whole", "whole"), (["a", "b ", "c"], "ab c"), ([], "")],
)
def test_output_text(output: Any, text: str) -> None:
    assert output_text(P, output) == text


@pytest.mark.parametrize("output", [{"text": "x"}, ["a", 1], 3])
def test_output_that_is_not_text(output: Any) -> None:
    with pytest.raises(BadRequest):
        output_text(P, output)


def test_usage_and_finish() -> None:
    usage = usage_of({"input_token_count": 12, "output_token_count": 5, "predict_time": 1.0})
    assert usage == Usage(input_tokens=12, output_tokens=5, total_tokens=17)
    assert usage_of(None) == Usage()
    assert usage_of({"input_token_count": "12", "output_token_count": True}) == Usage()
    assert finish_reason(5, usage) == "length"
    assert finish_reason(6, usage) == "stop"
    assert finish_reason(None, usage) == "stop"
