"""The price table: lookups, the snapshot rule, cost arithmetic, the operator's file."""

from __future__ import annotations

import datetime
import json
import math
import tomllib
from pathlib import Path

import pytest
from click.testing import CliRunner

from contracts.frames import Usage
from workers.cli import main
from workers.config import ConfigError, Settings
from workers.prices import (
    MOCK_PROVIDER,
    PriceTable,
    PriceTableError,
    load_price_table,
    model_candidates,
    parse_price_file,
    shipped_price_file,
)

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def table() -> PriceTable:
    return load_price_table()


def chat(input_tokens: int, output_tokens: int, **details: int) -> Usage:
    return Usage(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        total_tokens=input_tokens + output_tokens,
        **details,
    )


# -- the shipped file ------------------------------------------------------------


def test_shipped_file_is_dated_in_dollars_and_loads() -> None:
    shipped = shipped_price_file()
    assert isinstance(shipped.as_of, datetime.date)
    assert shipped.as_of >= datetime.date(2026, 1, 1)
    assert shipped.currency == "USD"
    assert load_price_table().as_of == shipped.as_of


def test_every_shipped_entry_names_its_source_and_prices_are_non_negative(
    table: PriceTable,
) -> None:
    entries = table.entries()
    assert len(entries) > 50
    for entry in entries:
        assert entry.source, f"{entry.provider}/{entry.model} names no source"
        if entry.provider != MOCK_PROVIDER:
            assert entry.source.startswith("https://"), entry
        assert entry.origin == "shipped"
        assert entry.price.prices_anything()
        for name, value in entry.price.numbers():
            assert value is None or (math.isfinite(value) and value >= 0), (entry, name)


def test_the_shipped_file_is_packaged() -> None:
    """setuptools installs only the data files package-data names."""
    pyproject = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))
    assert "prices.toml" in pyproject["tool"]["setuptools"]["package-data"]["workers"]


# -- finding a model's price -----------------------------------------------------


def test_exact_ids_are_found(table: PriceTable) -> None:
    found = table.lookup("openai", "gpt-4o")
    assert found is not None
    assert (found.provider, found.model, found.price.input) == ("openai", "gpt-4o", 2.50)


@pytest.mark.parametrize(
    ("provider", "model", "entry"),
    [
        ("openai", "gpt-4o-2024-08-06", "gpt-4o"),
        ("openai", "gpt-4.1-mini-2025-04-14", "gpt-4.1-mini"),
        ("openai", "o4-mini-2025-04-16", "o4-mini"),
        ("anthropic", "claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("anthropic", "claude-haiku-4-5-20251001", "claude-haiku-4-5"),
        ("gemini", "models/gemini-2.5-pro", "gemini-2.5-pro"),
        # A dated snapshot with a price of its own keeps it.
        ("openai", "gpt-4o-2024-05-13", "gpt-4o-2024-05-13"),
    ],
)
def test_dated_snapshots_fall_back_to_their_model(
    table: PriceTable, provider: str, model: str, entry: str
) -> None:
    found = table.lookup(provider, model)
    assert found is not None and found.model == entry


def test_a_snapshot_priced_on_its_own_is_not_billed_as_its_family(table: PriceTable) -> None:
    usage = chat(1_000_000, 1_000_000)
    assert table.cost("openai", "gpt-4o-2024-05-13", usage, "chat") == 20.0
    assert table.cost("openai", "gpt-4o-2024-11-20", usage, "chat") == 12.5


@pytest.mark.parametrize(
    "model",
    [
        "gpt-4",  # a prefix of a known model
        "gpt-4o-mini-search",  # a known model plus more
        "GPT-4O",  # case matters
        "gpt-4o-2024-08",  # not a whole date
        "gpt-4o-latest",  # aliases move: not priced
        "ft:gpt-4o-mini:acme::abc123",  # a fine-tune is billed differently
        " gpt-4o",
        "",
    ],
)
def test_nothing_fuzzier_than_the_documented_rules_matches(table: PriceTable, model: str) -> None:
    assert table.lookup("openai", model) is None
    assert table.cost("openai", model, chat(100, 10), "chat") is None


def test_model_candidates_in_order() -> None:
    assert model_candidates("gpt-4o") == ["gpt-4o"]
    assert model_candidates("arn:aws:bedrock:us-east-1:1:inference-profile/eu.x.y-20250101") == [
        "arn:aws:bedrock:us-east-1:1:inference-profile/eu.x.y-20250101",
        "eu.x.y-20250101",
        "x.y-20250101",
        "x.y",
    ]
    assert model_candidates("-20250101") == ["-20250101"]  # a suffix alone is no model


def test_bedrock_profiles_and_arns(table: PriceTable) -> None:
    million_in = chat(1_000_000, 0)
    base = "anthropic.claude-sonnet-4-5-20250929-v1:0"
    assert table.cost("bedrock", base, million_in, "chat") == 3.30
    assert table.cost("bedrock", f"us.{base}", million_in, "chat") == 3.30
    assert table.cost("bedrock", f"eu.{base}", million_in, "chat") == 3.30
    assert table.cost("bedrock", f"global.{base}", million_in, "chat") == 3.00
    arn = f"arn:aws:bedrock:us-east-1:123456789012:inference-profile/global.{base}"
    assert table.cost("bedrock", arn, million_in, "chat") == 3.00
    titan = "arn:aws:bedrock:us-east-1::foundation-model/amazon.titan-embed-text-v2:0"
    assert table.cost("bedrock", titan, Usage(input_tokens=1_000_000), "embed") == 0.02


def test_provider_families(table: PriceTable) -> None:
    usage = chat(1_000_000, 1_000_000)
    # Azure and Foundry: OpenAI's prices, only under an OpenAI model's name.
    assert table.cost("azure", "gpt-4o", usage, "chat") == 12.5
    assert table.cost("azure-foundry", "gpt-4.1-mini", usage, "chat") == 2.0
    assert table.cost("azure", "prod-chat-deployment", usage, "chat") is None
    # Vertex AI: the Gemini API's.
    assert table.cost("vertex", "gemini-2.5-flash", usage, "chat") == 2.8
    # Self-hosted and per-deployment providers: unknown unless the operator prices them.
    for provider in ("vllm", "ollama", "ollama-openai", "tei", "openai-compatible"):
        assert table.cost(provider, "gpt-4o", usage, "chat") is None
    assert table.cost("huggingface", "meta-llama/Llama-3.1-8B-Instruct", usage, "chat") is None
    assert table.cost("no-such-provider", "gpt-4o", usage, "chat") is None


def test_mock_providers_get_the_fake_price(table: PriceTable) -> None:
    usage = chat(1_000_000, 1_000_000)
    for provider in ("mock", "openai-mock", "anthropic-mock", "vllm-mock"):
        assert table.cost(provider, "mock-chat-1", usage, "chat") == 3.0
    # A mock answering under a real model's name is still the mock: not Anthropic's price.
    assert table.cost("anthropic-mock", "claude-sonnet-4-5", usage, "chat") == 3.0
    assert table.cost("cohere-mock", "rerank-v3.5", Usage(search_units=2), "rerank") == 0.002
    assert table.cost("voyage-mock", "any", Usage(input_tokens=1_000_000), "embed") == 0.1
    assert table.cost("gemini-mock", "any", Usage(), "verify") == 0.0


# -- arithmetic, checked by hand -------------------------------------------------


def test_anthropic_with_cache_writes_and_reads(table: PriceTable) -> None:
    # Usage counts cache reads and writes inside input_tokens (contracts.frames.Usage):
    # 1,000 fresh + 2,000 read + 3,000 written; 500 out, of which 200 were thinking.
    usage = chat(
        6_000, 500, cached_input_tokens=2_000, cache_write_tokens=3_000, reasoning_tokens=200
    )
    # 1000*3 + 2000*0.30 + 3000*3.75 + 500*15 = 3000 + 600 + 11250 + 7500 = 22350 per 1M
    assert table.cost("anthropic", "claude-sonnet-4-5-20250929", usage, "chat") == 0.02235
    # Haiku 4.5: 1000*1 + 2000*0.10 + 3000*1.25 + 500*5 = 1000 + 200 + 3750 + 2500
    assert table.cost("anthropic", "claude-haiku-4-5", usage, "chat") == 0.00745


def test_openai_with_cached_input_and_reasoning(table: PriceTable) -> None:
    # 10,000 in of which 4,000 cached; 3,000 out of which 2,500 reasoning (billed as output).
    usage = chat(10_000, 3_000, cached_input_tokens=4_000, reasoning_tokens=2_500)
    # 6000*1.10 + 4000*0.275 + 3000*4.40 = 6600 + 1100 + 13200 = 20900 per 1M
    assert table.cost("openai", "o4-mini", usage, "chat") == 0.0209
    # gpt-4.1: 6000*2 + 4000*0.5 + 3000*8 = 12000 + 2000 + 24000
    assert table.cost("openai", "gpt-4.1-2025-04-14", usage, "chat") == 0.038


def test_long_context_rates_apply_to_the_whole_call(table: PriceTable) -> None:
    at_threshold = chat(200_000, 1_000)
    above = chat(250_000, 1_000)
    # 200000*3 + 1000*15 = 615000 per 1M: the threshold itself is the ordinary tier.
    assert table.cost("anthropic", "claude-sonnet-4-5", at_threshold, "chat") == 0.615
    # 250000*6 + 1000*22.5 = 1,522,500 per 1M
    assert table.cost("anthropic", "claude-sonnet-4-5", above, "chat") == 1.5225
    # Gemini 2.5 Pro over 200K: 200000*2.5 fresh + 100000*0.25 cached + 10000*15 out.
    gemini = chat(300_000, 10_000, cached_input_tokens=100_000)
    assert table.cost("gemini", "gemini-2.5-pro", gemini, "chat") == 0.675


def test_an_entry_without_a_cache_rate_bills_those_tokens_as_input(table: PriceTable) -> None:
    # Mistral lists no cache rates: 1000 tokens at 2.00, cached or not, + 100 out at 6.00.
    usage = chat(1_000, 100, cached_input_tokens=400, cache_write_tokens=100)
    assert table.cost("mistral", "mistral-large-2411", usage, "chat") == 0.0026


def test_embeddings_and_reranks(table: PriceTable) -> None:
    tokens = Usage(input_tokens=1_000_000, total_tokens=1_000_000)
    assert table.cost("openai", "text-embedding-3-small", tokens, "embed") == 0.02
    assert table.cost("gemini", "gemini-embedding-001", tokens, "embed") == 0.15
    assert table.cost("cohere", "rerank-v3.5", Usage(search_units=3), "rerank") == 0.006
    assert table.cost("voyage", "rerank-2.5", Usage(input_tokens=20_000), "rerank") == 0.001
    # A price for another kind of call is no price for this one.
    assert table.cost("openai", "text-embedding-3-small", chat(10, 10), "chat") is None
    assert table.cost("openai", "gpt-4o", tokens, "embed") is None
    assert table.cost("cohere", "rerank-v3.5", Usage(input_tokens=100), "rerank") is None
    assert table.cost("openai", "gpt-4o", chat(10, 10), "transcribe") is None


def test_unreported_usage_is_unknown_not_free(table: PriceTable) -> None:
    assert table.cost("openai", "gpt-4o", Usage(), "chat") is None
    assert table.cost("openai", "text-embedding-3-small", Usage(), "embed") is None
    assert table.cost("voyage", "rerank-2.5", Usage(), "rerank") is None


def test_verify_costs_nothing_only_where_the_check_is_free(table: PriceTable) -> None:
    for provider in ("openai", "anthropic", "azure", "bedrock", "vertex", "cohere", "vllm"):
        assert table.cost(provider, "", Usage(), "verify") == 0.0
    assert table.cost("voyage", "", Usage(), "verify") is None  # it embeds a word
    assert table.cost("no-such-provider", "", Usage(), "verify") is None


def test_costs_are_rounded_to_a_nano_dollar(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(
        'as_of = 2026-11-01\ncurrency = "USD"\n'
        '[providers.vllm.models."tiny"]\ninput = 1.23456\noutput = 0\n'
    )
    table = load_price_table(str(path))
    # 1 token at $1.23456 per 1M = $0.00000123456 → $0.000001235
    assert table.cost("vllm", "tiny", chat(1, 0), "chat") == 1.235e-6


# -- the operator's file ---------------------------------------------------------

OVERRIDE = """
as_of = 2026-12-01
currency = "USD"

[providers.openai.models."gpt-4o"]
source = "contract 2026-17"
input = 1.00
output = 4.00

[providers.vllm.models."*"]
note = "our GPU nodes, amortised"
input = 0.05
output = 0.10

[providers.azure.models."prod-chat"]
input = 2.75
output = 11.00
"""


def test_the_operators_file_replaces_and_adds(tmp_path: Path) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(OVERRIDE)
    table = load_price_table(str(path))
    million = chat(1_000_000, 1_000_000)
    replaced = table.lookup("openai", "gpt-4o")
    assert replaced is not None
    assert (replaced.origin, replaced.source) == (str(path), "contract 2026-17")
    assert replaced.price.cached_input is None  # the whole entry is replaced, not merged
    assert table.cost("openai", "gpt-4o-2024-08-06", million, "chat") == 5.0
    assert table.cost("openai", "gpt-4o-mini", million, "chat") == 0.75  # untouched
    assert table.cost("vllm", "meta-llama/Llama-3.1-8B-Instruct", million, "chat") == 0.15
    assert table.cost("azure", "prod-chat", million, "chat") == 13.75
    assert table.cost("azure", "gpt-4.1", million, "chat") == 10.0  # still OpenAI's
    assert table.verify_free("vllm") is True  # the shipped section's settings stay
    assert [s.origin for s in table.sources] == ["shipped", str(path)]
    assert table.sources[1].as_of == datetime.date(2026, 12, 1)


@pytest.mark.parametrize(
    ("text", "complaint"),
    [
        ('as_of = 2026-12-01\ncurrency = "USD"\n[providers.openai\n', "not valid TOML"),
        ('currency = "USD"\n', "as_of"),
        ("as_of = 2026-12-01\n", "currency"),
        ('as_of = 2026-12-01\ncurrency = "EUR"\n', "currency"),
        ('as_of = "last week"\ncurrency = "USD"\n', "as_of"),
        (
            'as_of = 2026-12-01\ncurrency = "USD"\n[providers.openai.models.x]\ninptu = 1.0\n',
            'providers.openai.models."x": Object contains unknown field `inptu`',
        ),
        (
            'as_of = 2026-12-01\ncurrency = "USD"\n[providers.openai.models.x]\ninput = -1.0\n',
            'providers.openai.models."x": Expected `float` >= 0.0 - at `$.input`',
        ),
        (
            'as_of = 2026-12-01\ncurrency = "USD"\n[providers.openai.models.x]\ninput = "1.0"\n',
            'providers.openai.models."x": Expected `float | null`, got `str` - at `$.input`',
        ),
        (
            'as_of = 2026-12-01\ncurrency = "USD"\n[providers.openai.models.x]\noutput = inf\n',
            "finite",
        ),
        (
            'as_of = 2026-12-01\ncurrency = "USD"\n[providers.openai.models.x]\nsource = "s"\n',
            "gives no price",
        ),
        (
            'as_of = 2026-12-01\ncurrency = "USD"\n[providers.openai.models.x]\ninput = 1.0\n'
            "output = 2.0\nlong_context = { input = 2.0, output = 4.0 }\n",
            "above_input_tokens",
        ),
        (
            'as_of = 2026-12-01\ncurrency = "USD"\n[providers.openai.models.x]\ninput = 1.0\n',
            'providers.openai.models."x" must give both input and output',
        ),
        (
            'as_of = 2026-12-01\ncurrency = "USD"\n[providers.openai.models.x]\ninput = 1.0\n'
            "output = 2.0\nlong_context = { above_input_tokens = 10, output = 4.0 }\n",
            "long_context must give both input and output",
        ),
        ('as_of = 2026-12-01\ncurrency = "USD"\nproviders = 3\n', "providers must hold tables"),
        (
            'as_of = 2026-12-01\ncurrency = "USD"\n[providers.openai]\nmodels = [1]\n',
            "providers.openai.models must hold tables",
        ),
        (
            'as_of = 2026-12-01\ncurrency = "USD"\n[providers.openai]\nverify_free = "yes"\n',
            "providers.openai: Expected `bool | null`",
        ),
        (
            'as_of = 2026-12-01\ncurrency = "USD"\n[providers.mine]\nprices_from = "nobody"\n',
            "prices_from",
        ),
        (
            'as_of = 2026-12-01\ncurrency = "USD"\n[providers.mine]\nprices_from = "azure"\n',
            "prices_from",
        ),
    ],
)
def test_a_malformed_operators_file_stops_start_up(
    tmp_path: Path, text: str, complaint: str
) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(text)
    with pytest.raises(PriceTableError) as raised:
        load_price_table(str(path))
    assert isinstance(raised.value, ConfigError)  # the CLI's start-up errors
    message = str(raised.value)
    assert complaint in message
    assert f"FLEET_PRICES_FILE {path}" in message


def test_a_missing_operators_file_stops_start_up(tmp_path: Path) -> None:
    with pytest.raises(PriceTableError, match="cannot be read"):
        load_price_table(str(tmp_path / "absent.toml"))


def test_parse_names_the_file() -> None:
    with pytest.raises(PriceTableError, match=r"^somewhere: "):
        parse_price_file("as_of = 1", "somewhere")


def test_settings_name_the_operators_file() -> None:
    assert Settings.from_env({}).prices_file == ""
    env = {"FLEET_PRICES_FILE": "/etc/llm-fleet/prices.toml"}
    assert Settings.from_env(env).prices_file == "/etc/llm-fleet/prices.toml"


# -- llm-fleet prices ------------------------------------------------------------


def test_prices_command_lists_the_table(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FLEET_PRICES_FILE", raising=False)
    result = CliRunner().invoke(main, ["prices"])
    assert result.exit_code == 0, result.output
    assert "as of 2026-11-22 (shipped)" in result.output
    assert "https://developers.openai.com/api/docs/pricing" in result.output
    assert "gpt-4o-mini" in result.output
    assert "FAKE" in result.output  # the mock's price says what it is


def test_prices_command_json_with_an_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "prices.toml"
    path.write_text(OVERRIDE)
    monkeypatch.setenv("FLEET_PRICES_FILE", str(path))
    result = CliRunner().invoke(main, ["prices", "--json"])
    assert result.exit_code == 0, result.output
    doc = json.loads(result.output)
    assert doc["currency"] == "USD"
    assert doc["sources"] == [
        {"origin": "shipped", "as_of": doc["as_of"]},
        {"origin": str(path), "as_of": "2026-12-01"},
    ]
    providers = {p["name"]: p for p in doc["providers"]}
    assert providers["azure"]["prices_from"] == "openai"
    models = {m["model"]: m for m in providers["openai"]["models"]}
    assert models["gpt-4o"] == {
        "model": "gpt-4o",
        "input": 1.0,
        "output": 4.0,
        "source": "contract 2026-17",
        "origin": str(path),
    }
    assert models["gpt-4o-mini"]["origin"] == "shipped"
    assert models["gpt-4o-mini"]["cached_input"] == 0.075


def test_prices_command_refuses_a_malformed_file(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "prices.toml"
    path.write_text('as_of = 2026-12-01\ncurrency = "USD"\n[providers.x.models.y]\ninput = -2\n')
    monkeypatch.setenv("FLEET_PRICES_FILE", str(path))
    result = CliRunner().invoke(main, ["prices"])
    assert result.exit_code != 0
    assert 'providers.x.models."y"' in result.output
