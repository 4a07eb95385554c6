"""named_metrics: the seed's metric names in the final frame, right for every provider."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest

from contracts.frames import Metrics, NamedMetric, Usage
from providers.anthropic.mapping import usage_of as anthropic_usage
from providers.azure.parse import parse_azure_chat
from providers.bedrock.mapping import usage_of as bedrock_usage
from providers.cohere.embed import embed as cohere_embed
from providers.cohere.parse import usage_of as cohere_usage
from providers.cohere.rerank import parse_rerank as cohere_rerank
from providers.core.types import EmbedRequest
from providers.gemini.parse import usage_of as gemini_usage
from providers.mistral.embed import embed_all as mistral_embed
from providers.mistral.parse import parse_mistral_chat
from providers.ollama.mapping import usage_of as ollama_usage
from providers.openai.parse import parse_chat_response, parse_embeddings
from providers.replicate.mapping import usage_of as replicate_usage
from workers.named_metrics import named_metrics

TIMES = Metrics(queue_ms=1.5, ttft_ms=234.5, provider_ms=900.0, total_ms=1234.567891)


def as_dict(entries: list[NamedMetric]) -> dict[str, str]:
    names = [e.name for e in entries]
    assert len(names) == len(set(names)), names
    return {e.name: e.value for e in entries}


def answered(usage: Usage | None, metrics: Metrics = TIMES, **kw: Any) -> dict[str, str]:
    return as_dict(
        named_metrics(
            status="ok",
            usage=usage,
            metrics=metrics,
            request_id="req-1",
            answered_provider="openai",
            **kw,
        )
    )


class TestBase:
    def test_an_answer(self) -> None:
        entries = named_metrics(
            status="ok",
            usage=Usage(input_tokens=11, output_tokens=7, total_tokens=18),
            metrics=Metrics(ttft_ms=234.5, total_ms=1234.567891, cost_usd=0.000123),
            request_id="req-1",
            answered_provider="openai",
        )
        assert [(e.name, e.value) for e in entries] == [
            ("TIME_TAKEN", "1234567891"),
            ("STATUS", "SUCCESS"),
            ("LLM_REQUEST_ID", "req-1"),
            ("INPUT_TOKEN", "11"),
            ("OUTPUT_TOKEN", "7"),
            ("TOTAL_TOKEN", "18"),
            ("TIME_TO_FIRST_TOKEN", "0.2345"),
            ("COST", "0.000123"),
        ]
        assert all(e.description for e in entries)

    def test_a_failure_says_failed_and_counts_no_tokens(self) -> None:
        got = as_dict(
            named_metrics(
                status="timeout",
                usage=None,
                metrics=Metrics(total_ms=30_000.0),
                request_id="req-2",
                answered_provider=None,
            )
        )
        assert got == {"TIME_TAKEN": "30000000000", "STATUS": "FAILED", "LLM_REQUEST_ID": "req-2"}

    def test_usage_without_an_answering_provider_is_not_sent(self) -> None:
        got = named_metrics(
            status="ok",
            usage=Usage(input_tokens=5),
            metrics=TIMES,
            request_id="r",
            answered_provider=None,
        )
        assert "INPUT_TOKEN" not in as_dict(got)

    def test_time_to_first_token_only_when_measured(self) -> None:
        assert "TIME_TO_FIRST_TOKEN" not in answered(Usage(), Metrics(total_ms=5.0))

    def test_total_is_input_plus_output_when_the_provider_gave_none(self) -> None:
        assert answered(Usage(input_tokens=11, output_tokens=7))["TOTAL_TOKEN"] == "18"

    @pytest.mark.parametrize("count", [None, 0])
    def test_cached_and_thoughts_only_when_above_zero(self, count: int | None) -> None:
        usage = Usage(input_tokens=9, cached_input_tokens=count, reasoning_tokens=count)
        got = answered(usage)
        assert "CACHED_CONTENT_TOKEN" not in got and "THOUGHTS_TOKEN" not in got

    def test_cached_and_thoughts(self) -> None:
        usage = Usage(
            input_tokens=90, output_tokens=30, cached_input_tokens=64, reasoning_tokens=12
        )
        got = answered(usage)
        assert (got["CACHED_CONTENT_TOKEN"], got["THOUGHTS_TOKEN"]) == ("64", "12")


class TestCost:
    def test_an_unknown_cost_is_left_out_not_zero(self) -> None:
        got = answered(Usage(input_tokens=1), Metrics(total_ms=1.0, cost_usd=None))
        assert not {"COST", "INPUT_COST", "OUTPUT_COST"} & set(got)

    def test_a_free_answer_costs_zero(self) -> None:
        assert answered(Usage(), Metrics(total_ms=1.0, cost_usd=0.0))["COST"] == "0"

    def test_small_costs_are_fixed_point_never_exponents(self) -> None:
        got = answered(Usage(), Metrics(total_ms=1.0, cost_usd=1.2e-05))
        assert got["COST"] == "0.000012"

    def test_the_split_when_the_caller_has_it(self) -> None:
        got = answered(
            Usage(),
            Metrics(total_ms=1.0, cost_usd=0.0035),
            input_cost_usd=0.0025,
            output_cost_usd=0.001,
        )
        assert (got["COST"], got["INPUT_COST"], got["OUTPUT_COST"]) == ("0.0035", "0.0025", "0.001")

    def test_a_broken_cost_is_left_out(self) -> None:
        got = answered(Usage(), Metrics(total_ms=1.0, cost_usd=float("nan")), input_cost_usd=-1)
        assert "COST" not in got and "INPUT_COST" not in got


# -- every provider family: usage as its adapter builds it from the provider's own body.
# The input and output counts differ (11 and 7) so that a swap cannot pass.


def _openai_chat() -> Usage:
    body = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": {
            "prompt_tokens": 11,
            "completion_tokens": 7,
            "total_tokens": 18,
            "prompt_tokens_details": {"cached_tokens": 4},
            "completion_tokens_details": {"reasoning_tokens": 3},
        },
    }
    return parse_chat_response("openai", body).usage


def _azure_chat() -> Usage:
    body = {
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}}],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }
    return parse_azure_chat("azure", body).usage


def _openai_embeddings() -> Usage:
    body = {
        "data": [{"index": 0, "embedding": [0.25, 0.5]}],
        "usage": {"prompt_tokens": 11, "total_tokens": 11},
    }
    return parse_embeddings("openai", body, expected=1).usage


def _mistral_chat() -> Usage:
    body = {
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": "stop"}
        ],
        "usage": {"prompt_tokens": 11, "completion_tokens": 7, "total_tokens": 18},
    }
    return parse_mistral_chat("mistral", body).usage


def _mistral_embeddings() -> Usage:
    async def send(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "data": [{"index": 0, "embedding": [0.25, 0.5]}],
            "usage": {"prompt_tokens": 11, "total_tokens": 11},
        }

    return asyncio.run(mistral_embed("mistral", EmbedRequest("mistral-embed", ["a"]), send)).usage


def _cohere_chat() -> Usage:
    return cohere_usage(
        {
            "billed_units": {"input_tokens": 11, "output_tokens": 7},
            "tokens": {"input_tokens": 11, "output_tokens": 7},
            "cached_tokens": 4,
        }
    )


def _cohere_embeddings() -> Usage:
    async def post(body: dict[str, Any]) -> dict[str, Any]:
        return {
            "embeddings": {"float": [[0.25, 0.5]]},
            "meta": {"billed_units": {"input_tokens": 11}},
        }

    req = EmbedRequest("embed-v4.0", ["a"], input_type="search_document")
    return asyncio.run(cohere_embed("cohere", req, post)).usage


def _anthropic() -> Usage:
    return anthropic_usage(
        {
            "input_tokens": 5,
            "cache_read_input_tokens": 4,
            "cache_creation_input_tokens": 2,
            "output_tokens": 7,
        }
    )


def _gemini() -> Usage:
    return gemini_usage(
        {
            "promptTokenCount": 11,
            "candidatesTokenCount": 4,
            "thoughtsTokenCount": 3,
            "cachedContentTokenCount": 4,
            "totalTokenCount": 18,
        }
    )


def _bedrock() -> Usage:
    return bedrock_usage(
        {"inputTokens": 7, "cacheReadInputTokens": 4, "outputTokens": 7, "totalTokens": 18}
    )


def _replicate() -> Usage:
    return replicate_usage({"input_token_count": 11, "output_token_count": 7, "predict_time": 1.2})


def _ollama() -> Usage:
    return ollama_usage({"prompt_eval_count": 11, "eval_count": 7, "done": True})


# (adapter, expected INPUT_TOKEN, OUTPUT_TOKEN, CACHED_CONTENT_TOKEN, THOUGHTS_TOKEN)
FAMILIES: dict[str, tuple[Callable[[], Usage], str, str, str | None, str | None]] = {
    "openai-chat": (_openai_chat, "11", "7", "4", "3"),
    "azure-chat": (_azure_chat, "11", "7", None, None),
    "openai-embeddings": (_openai_embeddings, "11", "0", None, None),
    "mistral-chat": (_mistral_chat, "11", "7", None, None),
    "mistral-embeddings": (_mistral_embeddings, "11", "0", None, None),
    "cohere-chat": (_cohere_chat, "11", "7", "4", None),
    "cohere-embeddings": (_cohere_embeddings, "11", "0", None, None),
    "anthropic": (_anthropic, "11", "7", "4", None),
    "gemini-and-vertex": (_gemini, "11", "7", "4", "3"),
    "bedrock": (_bedrock, "11", "7", "4", None),
    "replicate": (_replicate, "11", "7", None, None),
    "ollama": (_ollama, "11", "7", None, None),
}


@pytest.mark.parametrize("family", FAMILIES)
def test_each_provider_familys_usage_lands_under_the_right_names(family: str) -> None:
    build, inputs, outputs, cached, thoughts = FAMILIES[family]
    got = answered(build())
    assert (got["INPUT_TOKEN"], got["OUTPUT_TOKEN"]) == (inputs, outputs)
    assert got["TOTAL_TOKEN"] == str(int(inputs) + int(outputs))
    assert got.get("CACHED_CONTENT_TOKEN") == cached
    assert got.get("THOUGHTS_TOKEN") == thoughts
    # Integers as text, as the seed's parsers expect (Cohere and Replicate sent "%f").
    assert all(got[n].isdigit() for n in ("INPUT_TOKEN", "OUTPUT_TOKEN", "TOTAL_TOKEN"))


def test_a_rerank_billed_in_search_units_reports_zero_tokens() -> None:
    body = {
        "results": [{"index": 0, "relevance_score": 0.9}],
        "meta": {"billed_units": {"search_units": 1}},
    }
    got = answered(cohere_rerank("cohere", body).usage)
    assert (got["INPUT_TOKEN"], got["OUTPUT_TOKEN"], got["TOTAL_TOKEN"]) == ("0", "0", "0")
