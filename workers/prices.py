"""What a provider call cost, in US dollars, from a dated price table kept as data.

The shipped table is `workers/prices.toml` (its header documents the format);
an operator's file named by FLEET_PRICES_FILE, in the same format, replaces or
adds entries per provider and model. Both are read once at start-up: a file that
does not parse stops the worker with a message naming the file and the field.

Finding a model's price, for a call answered by `provider`:

1. The provider's own section, then the one its `prices_from` names (Azure and
   Azure AI Foundry use OpenAI's, Vertex AI Gemini's), then for `mock` and any
   `<name>-mock` provider the `mock` section.
2. In each section the model id is tried as written, then with a `models/`
   prefix or an ARN path removed (`…:foundation-model/amazon.titan-embed-text-v2:0`
   is `amazon.titan-embed-text-v2:0`), then without a Bedrock geographic
   inference-profile prefix (`us.`, `eu.`, `apac.`, `jp.`, `au.`, `ca.`,
   `us-gov.`; `global.` is priced on its own), then without a dated-snapshot
   suffix (`-YYYY-MM-DD` as in `gpt-4o-2024-08-06`, or `-YYYYMMDD` as in
   `claude-sonnet-4-5-20250929`). An entry for the dated id itself wins, since it
   is tried first. Then the section's `"*"` entry (any model), if it has one.
   Nothing else matches: no prefix matching, no case folding, no nearest name.

What is billed (`PriceTable.cost`), usage as `contracts.frames.Usage` counts it:

* chat: uncached input at `input`, `cached_input_tokens` at `cached_input`,
  `cache_write_tokens` at `cache_write`, output (reasoning included, since it is
  part of `output_tokens`) at `output`. An entry with no `cached_input` or
  `cache_write` rate bills those tokens at its `input` rate: the provider's
  ordinary price for an input token, which is what it charges when it lists no
  other. A call whose input exceeds `long_context.above_input_tokens` is billed
  entirely at the `long_context` rates.
* embed: input tokens at `embed`; rerank: `search_units` at
  `rerank_search_units` (per 1,000) when both are there, else tokens at `rerank`.
* verify: 0.0 where the provider's section says `verify_free` (the check reads
  metadata the provider does not bill), else None.
* None ("unknown", never 0) for an unknown provider or model, an entry with no
  price for the job's kind, or usage the provider did not report (no tokens).

Costs are rounded to 1e-9 USD.
"""

from __future__ import annotations

import datetime
import math
import re
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Annotated, Literal, TypeVar

import msgspec

from contracts.frames import Usage
from workers.config import ConfigError

SHIPPED_FILE = "prices.toml"
MOCK_PROVIDER = "mock"
ANY_MODEL = "*"
PER_MILLION = 1_000_000
PER_THOUSAND = 1_000
DECIMALS = 9  # costs are rounded to 1e-9 USD

_GEO_PROFILE = re.compile(r"^(?:us|eu|apac|jp|au|ca|us-gov)\.")
_SNAPSHOT = re.compile(r"(?<=.)-(?:\d{4}-\d{2}-\d{2}|20\d{6})$")

Rate = Annotated[float, msgspec.Meta(ge=0)]
_S = TypeVar("_S", bound=msgspec.Struct)


class PriceTableError(ConfigError):
    """The shipped price table or the operator's file cannot be used (start-up only)."""


# -- the file format ---------------------------------------------------------------


class TokenRates(msgspec.Struct, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """USD per 1,000,000 tokens."""

    input: Rate | None = None
    cached_input: Rate | None = None
    cache_write: Rate | None = None
    output: Rate | None = None


class LongContext(TokenRates, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    """The rates of every token of a call whose input exceeds `above_input_tokens`."""

    above_input_tokens: Annotated[int, msgspec.Meta(gt=0)]


class ModelPrice(TokenRates, kw_only=True, forbid_unknown_fields=True, omit_defaults=True):
    embed: Rate | None = None  # per 1,000,000 input tokens
    rerank: Rate | None = None  # per 1,000,000 tokens
    rerank_search_units: Rate | None = None  # per 1,000 search units
    long_context: LongContext | None = None
    source: str | None = None
    note: str | None = None

    def rates_for(self, input_tokens: int) -> TokenRates:
        tier = self.long_context
        return tier if tier is not None and input_tokens > tier.above_input_tokens else self

    def prices_anything(self) -> bool:
        rates = (self.input, self.output, self.embed, self.rerank, self.rerank_search_units)
        return any(rate is not None for rate in rates)

    def numbers(self) -> Iterator[tuple[str, float | None]]:
        for name in ("input", "cached_input", "cache_write", "output", "embed", "rerank"):
            yield name, getattr(self, name)
        yield "rerank_search_units", self.rerank_search_units
        if self.long_context is not None:
            for name in ("input", "cached_input", "cache_write", "output"):
                yield f"long_context.{name}", getattr(self.long_context, name)


class ProviderPrices(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    source: str | None = None  # for entries that name none
    note: str | None = None
    prices_from: str | None = None
    verify_free: bool | None = None
    models: dict[str, ModelPrice] = msgspec.field(default_factory=dict)


class PriceFile(msgspec.Struct, kw_only=True, forbid_unknown_fields=True):
    as_of: datetime.date
    currency: Literal["USD"]
    note: str | None = None
    providers: dict[str, ProviderPrices] = msgspec.field(default_factory=dict)


def parse_price_file(text: str, origin: str) -> PriceFile:
    """A price file's text, checked; errors name `origin` and the entry at fault."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise PriceTableError(f"{origin}: not valid TOML: {exc}") from None
    # Converted piece by piece so that an error names the provider and model (msgspec
    # shows dictionary keys as `[...]`).
    sections = _tables(raw.pop("providers", {}), f"{origin}: providers")
    head = _convert(raw, PriceFile, origin)
    providers: dict[str, ProviderPrices] = {}
    for name, section_raw in sections.items():
        where = f"{origin}: providers.{name}"
        models_raw = _tables(section_raw.pop("models", {}), f"{where}.models")
        section = _convert(section_raw, ProviderPrices, where)
        models = {
            model: _model_price(value, f'{where}.models."{model}"')
            for model, value in models_raw.items()
        }
        providers[name] = msgspec.structs.replace(section, models=models)
    return msgspec.structs.replace(head, providers=providers)


def _tables(value: object, where: str) -> dict[str, dict[str, object]]:
    if not isinstance(value, dict) or not all(isinstance(v, dict) for v in value.values()):
        raise PriceTableError(f"{where} must hold tables, one per name")
    return value


def _convert(value: object, kind: type[_S], where: str) -> _S:
    try:
        return msgspec.convert(value, kind)
    except msgspec.ValidationError as exc:
        raise PriceTableError(f"{where}: {exc}") from None


def _model_price(value: dict[str, object], where: str) -> ModelPrice:
    price = _convert(value, ModelPrice, where)
    for name, number in price.numbers():
        if number is not None and not math.isfinite(number):
            raise PriceTableError(f"{where}: {name} must be a finite number")
    if not price.prices_anything():
        raise PriceTableError(
            f"{where} gives no price (input and output, embed, rerank or rerank_search_units)"
        )
    # One without the other would leave every chat of the model unknown, silently.
    for rates, name in ((price, where), (price.long_context, f"{where}: long_context")):
        if rates is not None and (rates.input is None) != (rates.output is None):
            raise PriceTableError(f"{name} must give both input and output (0 is a price)")
    return price


# -- the table in effect -----------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PricedModel:
    """One entry of the table in effect, as `llm-fleet prices` lists it."""

    provider: str
    model: str
    price: ModelPrice
    source: str | None  # the entry's, else its provider section's
    origin: str  # "shipped" or the operator file's path


@dataclass(slots=True)
class _Section:
    source: str | None
    note: str | None
    prices_from: str | None
    verify_free: bool | None
    models: dict[str, PricedModel]


@dataclass(frozen=True, slots=True)
class PriceSource:
    origin: str  # "shipped" or a path
    as_of: datetime.date


class PriceTable:
    """The shipped price table with the operator's entries over it."""

    def __init__(self, shipped: PriceFile, override: PriceFile | None = None, origin: str = ""):
        self.sources = [PriceSource("shipped", shipped.as_of)]
        self._sections: dict[str, _Section] = {}
        self._merge(shipped, "shipped")
        if override is not None:
            self.sources.append(PriceSource(origin, override.as_of))
            self._merge(override, origin)
        self._check_aliases()

    @property
    def as_of(self) -> datetime.date:
        """The shipped table's date (an override's own date is in `sources`)."""
        return self.sources[0].as_of

    def _merge(self, file: PriceFile, origin: str) -> None:
        for name, given in file.providers.items():
            section = self._sections.setdefault(name, _Section(None, None, None, None, {}))
            # What the file says replaces what was there; what it leaves out stays.
            section.source = given.source or section.source
            section.note = given.note or section.note
            section.prices_from = given.prices_from or section.prices_from
            if given.verify_free is not None:
                section.verify_free = given.verify_free
            for model, price in given.models.items():
                # Never the shipped section's page for an operator's own price.
                source = price.source or given.source
                section.models[model] = PricedModel(name, model, price, source, origin)

    def _check_aliases(self) -> None:
        for name, section in self._sections.items():
            target = section.prices_from
            if target is None:
                continue
            if target == name or target not in self._sections:
                raise PriceTableError(
                    f"providers.{name}.prices_from names {target!r}, which is not another "
                    "provider of the price table"
                )
            if self._sections[target].prices_from is not None:
                raise PriceTableError(
                    f"providers.{name}.prices_from names {target!r}, which takes its own "
                    "prices from another provider: name that one instead"
                )

    # -- lookups ---------------------------------------------------------------

    def _chain(self, provider: str) -> list[_Section]:
        """The sections whose entries apply to `provider`, in the order they are tried."""
        chain: list[_Section] = []
        section = self._sections.get(provider)
        if section is not None:
            chain.append(section)
            if section.prices_from is not None:
                chain.append(self._sections[section.prices_from])
        if provider.endswith("-mock") and MOCK_PROVIDER in self._sections:
            chain.append(self._sections[MOCK_PROVIDER])
        return chain

    def lookup(self, provider: str, model: str) -> PricedModel | None:
        """The entry pricing `model` as answered by `provider` (see the module's rules)."""
        candidates = model_candidates(model)
        for section in self._chain(provider):
            for candidate in candidates:
                found = section.models.get(candidate)
                if found is not None:
                    return found
            if ANY_MODEL in section.models:
                return section.models[ANY_MODEL]
        return None

    def verify_free(self, provider: str) -> bool | None:
        for section in self._chain(provider):
            if section.verify_free is not None:
                return section.verify_free
        return None

    def cost(self, provider: str, model: str, usage: Usage, kind: str) -> float | None:
        """USD for one answered call, or None when it is not known (never 0 for that)."""
        if kind == "verify":
            return 0.0 if self.verify_free(provider) else None
        found = self.lookup(provider, model)
        if found is None:
            return None
        usd = _BILLS.get(kind, _unknown)(found.price, usage)
        return None if usd is None else round(usd, DECIMALS)

    # -- listing -----------------------------------------------------------------

    def entries(self) -> list[PricedModel]:
        return [
            entry
            for name in sorted(self._sections)
            for _, entry in sorted(self._sections[name].models.items())
        ]

    def providers(self) -> list[ProviderSummary]:
        return [
            ProviderSummary(
                name,
                section.source,
                section.note,
                section.prices_from,
                section.verify_free,
            )
            for name, section in sorted(self._sections.items())
        ]


@dataclass(frozen=True, slots=True)
class ProviderSummary:
    name: str
    source: str | None
    note: str | None
    prices_from: str | None
    verify_free: bool | None


def model_candidates(model: str) -> list[str]:
    """The ids a model is looked up under, in order (the module docstring's step 2)."""
    out: list[str] = []
    for name in _spellings(model):
        if name and name not in out:
            out.append(name)
    return out


def _spellings(model: str) -> Iterator[str]:
    yield model
    if model.startswith("arn:"):
        model = model.rsplit("/", 1)[-1]
    model = model.removeprefix("models/")
    yield model
    model = _GEO_PROFILE.sub("", model, count=1)
    yield model
    yield _SNAPSHOT.sub("", model)


# -- what a call cost ----------------------------------------------------------------


def _chat(price: ModelPrice, usage: Usage) -> float | None:
    if usage.input_tokens <= 0 and usage.output_tokens <= 0:
        return None  # the provider reported no usage: unknown, not free
    rates = price.rates_for(usage.input_tokens)
    if rates.input is None or rates.output is None:
        return None
    cached = max(usage.cached_input_tokens or 0, 0)
    written = max(usage.cache_write_tokens or 0, 0)
    fresh = max(usage.input_tokens - cached - written, 0)
    cached_rate = rates.input if rates.cached_input is None else rates.cached_input
    write_rate = rates.input if rates.cache_write is None else rates.cache_write
    per_million = (
        fresh * rates.input
        + cached * cached_rate
        + written * write_rate
        + max(usage.output_tokens, 0) * rates.output
    )
    return per_million / PER_MILLION


def _embed(price: ModelPrice, usage: Usage) -> float | None:
    if price.embed is None or usage.input_tokens <= 0:
        return None
    return usage.input_tokens * price.embed / PER_MILLION


def _rerank(price: ModelPrice, usage: Usage) -> float | None:
    if price.rerank_search_units is not None and usage.search_units is not None:
        return max(usage.search_units, 0) * price.rerank_search_units / PER_THOUSAND
    if price.rerank is not None and usage.input_tokens > 0:
        return usage.input_tokens * price.rerank / PER_MILLION
    return None


def _unknown(price: ModelPrice, usage: Usage) -> float | None:
    return None


_BILLS = {"chat": _chat, "embed": _embed, "rerank": _rerank}


# -- loading ---------------------------------------------------------------------


def shipped_price_file() -> PriceFile:
    text = resources.files("workers").joinpath(SHIPPED_FILE).read_text(encoding="utf-8")
    return parse_price_file(text, f"the shipped {SHIPPED_FILE}")


def load_price_table(override_path: str = "") -> PriceTable:
    """The table in effect: the shipped one, with FLEET_PRICES_FILE's entries over it.

    Raises `PriceTableError` (a `ConfigError`) naming the file and field at fault.
    """
    shipped = shipped_price_file()
    if not override_path:
        return PriceTable(shipped)
    origin = f"FLEET_PRICES_FILE {override_path}"
    try:
        text = Path(override_path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc)
        raise PriceTableError(f"{origin}: cannot be read ({reason})") from None
    override = parse_price_file(text, origin)
    try:
        return PriceTable(shipped, override, override_path)
    except PriceTableError as exc:
        raise PriceTableError(f"{origin}: {exc}") from None
