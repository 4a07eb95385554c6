"""The request and result types adapters exchange with workers, and the opened credential."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, Final, TypeVar, cast

from contracts.frames import RerankItem, ToolCallDelta, Usage
from contracts.jobs import Message, Tool
from providers.options import ModelOptions

# Fields that say where and how to call, not who calls: their values turn up in
# ordinary text (an `api_version` of "v1", a region, a deployment name), so
# redacting them would garble messages without hiding anything.
PUBLIC_FIELDS: Final = frozenset(
    {
        "api_version",
        "deployment",
        "region",
        "location",
        "project",
        "project_id",
        "anthropic_version",
        "anthropic_beta",
        "type",
        "universe_domain",
        "scope",
        "token_uri",
        "auth_uri",
        "auth_provider_x509_cert_url",
        "safe_prompt",
        "bill_to",
    }
)
# A line of a multi-line secret (a PEM key) this long is redacted on its own too,
# so a message quoting part of the key does not carry it.
_SECRET_LINE: Final = 16

_T = TypeVar("_T")


class Secret:
    """Opened credential fields (api_key plus provider-specific ones such as base_url).

    Deliberately not a dataclass: repr/str never reveal values, so a Secret that
    slips into a log line or exception shows only its field names.
    """

    __slots__ = ("_derived", "_fields")

    def __init__(self, fields: Mapping[str, str]) -> None:
        self._fields = dict(fields)
        self._derived: dict[Callable[[Secret], Any], Any] = {}

    @property
    def api_key(self) -> str:
        return self._fields.get("api_key", "")

    def get(self, name: str, default: str | None = None) -> str | None:
        return self._fields.get(name, default)

    def values(self) -> list[str]:
        """Every secret value (public fields aside), and each long line of a
        multi-line one: what messages and logs are scrubbed of."""
        found: list[str] = []
        for name, value in self._fields.items():
            if not value or name in PUBLIC_FIELDS:
                continue
            found.append(value)
            if "\n" in value:
                lines = (line.strip() for line in value.splitlines())
                found.extend(line for line in lines if len(line) >= _SECRET_LINE)
        return found

    def derived(self, build: Callable[[Secret], _T]) -> _T:
        """`build(self)`, worked out on first use and kept with this secret.

        For what follows from the values alone (the forms messages are scrubbed
        of, `providers.core.http.scrub`): an error path scrubs several strings per
        error, and the result lives no longer than the plaintext it came from.
        """
        try:
            return cast(_T, self._derived[build])
        except KeyError:
            value = self._derived[build] = build(self)
            return value

    def __repr__(self) -> str:
        return f"Secret(fields={sorted(self._fields)})"

    __str__ = __repr__


@dataclass(frozen=True, slots=True)
class ChatRequest:
    model: str
    messages: list[Message]
    tools: list[Tool] = field(default_factory=list)
    options: ModelOptions = field(default_factory=ModelOptions)


@dataclass(frozen=True, slots=True)
class TextDelta:
    text: str


@dataclass(frozen=True, slots=True)
class ToolDelta:
    delta: ToolCallDelta


@dataclass(frozen=True, slots=True)
class StreamEnd:
    """Last event of a stream: why it stopped and what it cost."""

    finish_reason: str | None
    usage: Usage


@dataclass(frozen=True, slots=True)
class RefusalDelta:
    """A piece of the model's refusal to answer (kept apart from the answer text)."""

    text: str


StreamEvent = TextDelta | ToolDelta | RefusalDelta | StreamEnd


@dataclass(frozen=True, slots=True)
class ChatResult:
    message: Message
    finish_reason: str | None
    usage: Usage


@dataclass(frozen=True, slots=True)
class EmbedRequest:
    model: str
    inputs: list[str]
    input_type: str | None = None
    dimensions: int | None = None


@dataclass(frozen=True, slots=True)
class EmbedResult:
    data: bytes  # packed little-endian float32, count rows of dims
    dims: int
    count: int
    usage: Usage


@dataclass(frozen=True, slots=True)
class RerankRequest:
    model: str
    query: str
    documents: list[str]
    top_n: int | None = None


@dataclass(frozen=True, slots=True)
class RerankResult:
    items: list[RerankItem]
    usage: Usage


@dataclass(frozen=True, slots=True)
class VerifyResult:
    ok: bool
    detail: str = ""


# An empty parameter schema means "no arguments"; APIs want that said as a schema
# (some reject `{}` outright).
_NO_ARGUMENTS: dict[str, Any] = {"type": "object", "properties": {}}


def tool_schema(tool: Tool) -> dict[str, Any]:
    """The JSON schema of a tool's arguments, as every provider API wants it."""
    return tool.parameters or dict(_NO_ARGUMENTS)
