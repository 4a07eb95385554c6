"""Log redaction and the seed's `model.*` option mapping."""

from __future__ import annotations

import io
import json
import logging

import pytest
import structlog

from contracts.errors import ContractError
from providers.options import ModelOptions
from workers.logs import LIVE_SECRETS, configure_logging


class TestRedaction:
    def test_secret_values_and_sensitive_keys_are_redacted(self) -> None:
        out = io.StringIO()
        configure_logging("json", "DEBUG", stream=out)
        log = structlog.get_logger("t")
        with LIVE_SECRETS.holding(["sk-live-canary-42"]):
            log.info(
                "calling",
                api_key="sk-anything",
                detail="provider said sk-live-canary-42 is bad",
                nested={"authorization": "Bearer x", "ok": ["sk-live-canary-42"]},
            )
            logging.getLogger("thirdparty").warning("raw line with sk-live-canary-42")
        log.info("after", detail="sk-live-canary-42")  # no longer open: nothing to scrub
        lines = [json.loads(line) for line in out.getvalue().splitlines()]
        assert lines[0]["api_key"] == "[redacted]"
        assert "sk-live-canary-42" not in json.dumps(lines[:2])
        assert lines[0]["nested"]["authorization"] == "[redacted]"
        assert "[redacted]" in lines[1]["event"]
        assert lines[2]["detail"] == "sk-live-canary-42"

    def test_context_is_bound_per_job(self) -> None:
        out = io.StringIO()
        configure_logging("json", "INFO", stream=out)
        structlog.contextvars.bind_contextvars(
            request_id="r1", provider="openai", model="m", attempt=2
        )
        try:
            structlog.get_logger("t").info("x")
        finally:
            structlog.contextvars.clear_contextvars()
        line = json.loads(out.getvalue())
        assert (line["request_id"], line["provider"], line["model"], line["attempt"]) == (
            "r1",
            "openai",
            "m",
            2,
        )


class TestModelOptions:
    def test_seed_keys_with_loose_types(self) -> None:
        o = ModelOptions.from_mapping(
            {
                "model.name": "gpt",
                "model.temperature": "0.5",
                "model.max_completion_tokens": "12",
                "model.stop": "a,b",
                "top_p": 1,
                "model.seed": 7.0,
                "model.tool_choice": "auto",
                "model.response_format": '{"type": "json_object"}',
                "model.reasoning_effort": "high",
            }
        )
        assert (o.temperature, o.max_tokens, o.stop, o.top_p, o.seed) == (
            0.5,
            12,
            ("a", "b"),
            1.0,
            7,
        )
        assert o.response_format == {"type": "json_object"} and o.tool_choice == "auto"
        assert o.reasoning_effort == "high"

    @pytest.mark.parametrize("kind", ["json_object", "json_schema", "text", " json_object "])
    def test_response_format_as_a_bare_type_name(self, kind: str) -> None:
        o = ModelOptions.from_mapping({"model.response_format": kind})
        assert o.response_format == {"type": kind.strip()}

    def test_the_rest_of_the_seeds_openai_keys(self) -> None:
        schema = {"type": "object", "properties": {"a": {"type": "string"}}}
        o = ModelOptions.from_mapping(
            {
                "model.user": "user-7",
                "model.service_tier": "flex",
                "model.top_logprobs": "3",
                "model.metadata": '{"team": "search", "run": "7"}',
                "model.response_format": {
                    "type": "json_schema",
                    "json_schema": json.dumps({"name": "a", "schema": schema}),
                },
            }
        )
        assert (o.user, o.service_tier, o.top_logprobs) == ("user-7", "flex", 3)
        assert o.metadata == {"team": "search", "run": "7"}
        assert o.response_format == {
            "type": "json_schema",
            "json_schema": {"name": "a", "schema": schema},
        }

    @pytest.mark.parametrize(
        ("raw", "field"),
        [
            ({"model.metadata": '{"n": 1}'}, "options.model.metadata"),
            ({"model.response_format": "xml"}, "options.model.response_format"),
            ({"model.top_logprobs": "many"}, "options.model.top_logprobs"),
        ],
    )
    def test_bad_seed_values_name_the_field(self, raw: dict[str, object], field: str) -> None:
        with pytest.raises(ContractError) as info:
            ModelOptions.from_mapping(raw)
        assert info.value.field == field

    @pytest.mark.parametrize(
        ("raw", "field"),
        [
            ({"model.temperature": "hot"}, "options.model.temperature"),
            ({"max_tokens": True}, "options.max_tokens"),
            ({"stop": [1]}, "options.stop"),
        ],
    )
    def test_bad_values_name_the_field(self, raw: dict[str, object], field: str) -> None:
        with pytest.raises(ContractError) as info:
            ModelOptions.from_mapping(raw)
        assert info.value.field == field

    @pytest.mark.parametrize(
        ("raw", "field"),
        [
            ({"model.temperature": float("nan")}, "options.model.temperature"),
            ({"top_p": float("inf")}, "options.top_p"),
            ({"frequency_penalty": float("-inf")}, "options.frequency_penalty"),
            # Strings that float() turns into non-finite numbers.
            ({"model.temperature": "NaN"}, "options.model.temperature"),
            ({"presence_penalty": "-Infinity"}, "options.presence_penalty"),
            ({"top_p": "1e999"}, "options.top_p"),
            ({"max_tokens": float("nan")}, "options.max_tokens"),
            ({"model.seed": float("inf")}, "options.model.seed"),
            (
                {"model.response_format": {"json_schema": {"schema": {"maximum": float("inf")}}}},
                "options.model.response_format.json_schema.schema.maximum",
            ),
            # json.loads accepts these non-JSON literals; they must not get through either.
            (
                {"response_format": '{"type": "json_object", "x": [1, NaN]}'},
                "options.response_format.x[1]",
            ),
            (
                {"tool_choice": {"type": "function", "function": {"name": "f", "w": -1e999}}},
                "options.tool_choice.function.w",
            ),
            ({"tool_choice": {"type": "function", float("nan"): 1}}, "options.tool_choice[nan]"),
        ],
    )
    def test_non_finite_values_name_the_field(self, raw: dict[str, object], field: str) -> None:
        with pytest.raises(ContractError) as info:
            ModelOptions.from_mapping(raw)
        assert info.value.field == field
        assert info.value.code.value == "bad_request"

    def test_non_finite_reason_is_spelled_out(self) -> None:
        with pytest.raises(ContractError) as info:
            ModelOptions.from_mapping({"model.temperature": float("nan")})
        assert info.value.message == (
            "invalid field 'options.model.temperature': nan is not a finite number "
            "(JSON has no NaN or Infinity)"
        )

    def test_finite_extremes_still_pass(self) -> None:
        o = ModelOptions.from_mapping(
            {"temperature": 1e308, "top_p": -0.0, "response_format": {"x": [1.5, -2, 10**18]}}
        )
        assert (o.temperature, o.top_p) == (1e308, -0.0)
        assert o.response_format == {"x": [1.5, -2, 10**18]}
