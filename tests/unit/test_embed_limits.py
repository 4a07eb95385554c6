"""Embedding limits: the lookup by model, and what each provider declares."""

from __future__ import annotations

import pytest

from providers.core.limits import EmbedLimits
from providers.core.spec import Capability, ProviderSpec
from providers.registry import builtin_specs

SPECS = {spec.name: spec for spec in builtin_specs()}
ARN_V4 = "arn:aws:bedrock:eu-west-1::foundation-model/cohere.embed-v4:0"


def limits_of(provider: str, model: str) -> EmbedLimits:
    declared = SPECS[provider].embed_limits
    assert declared is not None
    return declared.for_model(model)


class TestLookup:
    SMALL = EmbedLimits(max_inputs=1, max_input_tokens=512)
    LIMITS = EmbedLimits(max_inputs=100, max_request_tokens=20_000, by_model={"small-1": SMALL})

    def test_a_listed_model_gets_its_own(self) -> None:
        assert self.LIMITS.for_model("small-1") is self.SMALL

    def test_any_other_gets_the_providers(self) -> None:
        assert self.LIMITS.for_model("big-2") is self.LIMITS
        # Exact names only: a longer name is another model.
        assert self.LIMITS.for_model("small-1-large") is self.LIMITS

    def test_a_name_with_a_path_is_looked_up_by_its_last_part(self) -> None:
        assert self.LIMITS.for_model("models/small-1") is self.SMALL
        arn = "arn:aws:bedrock:us-east-1::foundation-model/small-1"
        assert self.LIMITS.for_model(arn) is self.SMALL

    @pytest.mark.parametrize(
        ("inputs", "per_input", "per_request"), [(0, None, None), (8, 0, None), (8, None, -5)]
    )
    def test_limits_below_one_are_refused(
        self, inputs: int, per_input: int | None, per_request: int | None
    ) -> None:
        with pytest.raises(ValueError, match="at least 1"):
            EmbedLimits(inputs, per_input, per_request)


def test_every_provider_with_embeddings_declares_its_limits() -> None:
    missing = [
        name
        for name, spec in SPECS.items()
        if Capability.EMBED in spec.capabilities and spec.embed_limits is None
    ]
    assert missing == []


def test_only_providers_with_embeddings_declare_them() -> None:
    stray = [
        name
        for name, spec in SPECS.items()
        if Capability.EMBED not in spec.capabilities and spec.embed_limits is not None
    ]
    assert stray == []


def test_a_custom_spec_declares_none() -> None:
    assert ProviderSpec.custom("mine", Capability.EMBED).embed_limits is None


@pytest.mark.parametrize(
    ("provider", "model", "inputs", "per_input", "per_request"),
    [
        ("openai", "text-embedding-3-small", 2048, 8192, 300_000),
        ("azure", "my-embedding-deployment", 2048, 8192, 300_000),
        ("mock", "text-embedding-3-small", 2048, 8192, 300_000),
        ("mistral", "mistral-embed", 512, 8192, 16_384),
        ("cohere", "embed-v4.0", 96, None, None),
        ("gemini", "gemini-embedding-001", 100, 2048, None),
        ("vertex", "text-embedding-005", 250, None, 20_000),
        ("vertex", "gemini-embedding-001", 1, None, None),
        ("bedrock", "amazon.titan-embed-text-v2:0", 1, 8192, None),
        ("bedrock", "cohere.embed-english-v3", 96, 512, None),
        ("bedrock", "us.cohere.embed-v4:0", 96, 128_000, None),
        (
            "bedrock",
            "arn:aws:bedrock:eu-west-1::foundation-model/cohere.embed-v4:0",
            96,
            128_000,
            None,
        ),
        ("bedrock", "some-custom-model", 1, None, None),
        ("voyage", "voyage-3.5-lite", 1000, None, 1_000_000),
        ("voyage", "voyage-3.5", 1000, None, 320_000),
        ("voyage", "voyage-3-large", 1000, None, 120_000),
        ("voyage", "voyage-code-3", 1000, None, 120_000),
        ("tei", "BAAI/bge-small-en-v1.5", 32, None, None),
        ("huggingface", "intfloat/multilingual-e5-large", 32, None, None),
        ("ollama", "nomic-embed-text", 2048, None, None),
        ("vllm", "BAAI/bge-m3", 2048, None, None),
    ],
)
def test_declared_limits(
    provider: str, model: str, inputs: int, per_input: int | None, per_request: int | None
) -> None:
    limits = limits_of(provider, model)
    assert (limits.max_inputs, limits.max_input_tokens, limits.max_request_tokens) == (
        inputs,
        per_input,
        per_request,
    )
