"""Validation of Cohere v2 requests for the mock, with the real API's rules.

The mock refuses what api.cohere.com refuses, in its words where they are known
(`invalid request: …`), so an adapter bug shows up as the 400 it would cause in
production: a field the endpoint does not know, a role outside system / user /
assistant / tool, a tool result answering no earlier tool call, a `tool_choice`
other than `REQUIRED`/`NONE` (or one without tools), `response_format` together
with tools, more than 96 texts to embed, an embed request without `input_type`
or `embedding_types`, an empty list of documents to rerank.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from providers.mock.faults import MockError

__all__ = [
    "ChatParams",
    "EmbedParams",
    "RerankParams",
    "invalid",
    "json_object",
    "parse_chat",
    "parse_embed",
    "parse_rerank",
]

_CHAT_FIELDS: Final = frozenset(
    {
        "model",
        "messages",
        "tools",
        "strict_tools",
        "documents",
        "citation_options",
        "response_format",
        "safety_mode",
        "max_tokens",
        "stop_sequences",
        "temperature",
        "seed",
        "frequency_penalty",
        "presence_penalty",
        "k",
        "p",
        "logprobs",
        "tool_choice",
        "thinking",
        "priority",
        "stream",
    }
)
_EMBED_FIELDS: Final = frozenset(
    {
        "model",
        "input_type",
        "texts",
        "images",
        "inputs",
        "max_tokens",
        "output_dimension",
        "embedding_types",
        "truncate",
        "priority",
    }
)
_RERANK_FIELDS: Final = frozenset(
    {"model", "query", "documents", "top_n", "max_tokens_per_doc", "relevant_spans", "priority"}
)
_ROLES: Final = ("system", "user", "assistant", "tool")
INPUT_TYPES: Final = ("search_document", "search_query", "classification", "clustering", "image")
EMBEDDING_TYPES: Final = ("float", "int8", "uint8", "binary", "ubinary", "base64")
MAX_TEXTS: Final = 96
MAX_STOP_SEQUENCES: Final = 5


def invalid(message: str) -> MockError:
    """A 400 as Cohere words its validation errors."""
    return MockError(400, f"invalid request: {message}", "invalid_request", kind="bad_request")


@dataclass(frozen=True, slots=True)
class ChatParams:
    """A validated chat request, reduced to what the mock's answer depends on."""

    model: str
    messages: list[dict[str, Any]]
    tools: list[dict[str, Any]]
    tool_choice: str | None  # "REQUIRED" / "NONE"; None is Cohere's auto
    max_tokens: int | None
    stop_sequences: tuple[str, ...]
    json_object: bool  # `response_format: json_object`
    json_schema: dict[str, Any] | None
    stream: bool


@dataclass(frozen=True, slots=True)
class EmbedParams:
    model: str
    texts: list[str]
    input_type: str
    embedding_types: tuple[str, ...]
    output_dimension: int | None


@dataclass(frozen=True, slots=True)
class RerankParams:
    model: str
    query: str
    documents: list[str]
    top_n: int | None


async def json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise MockError(400, "invalid json syntax", "invalid_request") from None
    if not isinstance(body, dict):
        raise invalid("the request body must be a JSON object")
    return body


def _no_extra_fields(body: Mapping[str, Any], allowed: frozenset[str]) -> None:
    for name in body:
        if name not in allowed:
            raise invalid(f"unknown field: parameter {name} is not a valid field")


def _model(body: Mapping[str, Any]) -> str:
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise MockError(400, "a model parameter is required for this endpoint.", "invalid_request")
    return model


def _number(body: Mapping[str, Any], name: str, low: float, high: float | None) -> None:
    value = body.get(name)
    if value is None:
        return
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise invalid(f"{name} must be a number")
    if value < low or (high is not None and value > high):
        bound = f"between {low} and {high} inclusive" if high is not None else f"at least {low}"
        raise invalid(f"{name} must be {bound}")


def _integer(body: Mapping[str, Any], name: str, low: int) -> int | None:
    value = body.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise invalid(f"{name} must be an integer of at least {low}")
    return value


# -- chat -----------------------------------------------------------------------------


def parse_chat(body: Mapping[str, Any]) -> ChatParams:
    """`POST /v2/chat`; raises a 400 `MockError` where the real API would."""
    _no_extra_fields(body, _CHAT_FIELDS)
    model = _model(body)
    messages = _messages(body.get("messages"))
    tools = _tools(body.get("tools"))
    for name, low, high in (
        ("temperature", 0.0, None),
        ("p", 0.01, 0.99),
        ("frequency_penalty", 0.0, 1.0),
        ("presence_penalty", 0.0, 1.0),
    ):
        _number(body, name, low, high)
    _integer(body, "k", 0)
    _integer(body, "seed", 0)
    max_tokens = _integer(body, "max_tokens", 1)
    stream = body.get("stream", False)
    if not isinstance(stream, bool):
        raise invalid("stream must be a boolean")
    json_mode, schema = _response_format(body.get("response_format"), tools)
    return ChatParams(
        model=model,
        messages=messages,
        tools=tools,
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
        max_tokens=max_tokens,
        stop_sequences=_stop_sequences(body.get("stop_sequences")),
        json_object=json_mode,
        json_schema=schema,
        stream=stream,
    )


def _messages(raw: Any) -> list[dict[str, Any]]:
    if not isinstance(raw, list) or not raw or not all(isinstance(m, dict) for m in raw):
        raise invalid("messages must be a non-empty list of message objects")
    asked: set[str] = set()
    for i, message in enumerate(raw):
        role = message.get("role")
        if role not in _ROLES:
            raise invalid(
                f"invalid role {role!r} in messages at index {i}. "
                "Role must be one of the following: system, user, assistant, tool"
            )
        if role == "assistant":
            asked.update(_assistant(message, i))
        elif role == "tool":
            call_id = message.get("tool_call_id")
            if not isinstance(call_id, str) or not call_id:
                raise invalid(f"messages[{i}]: tool messages require a tool_call_id")
            if call_id not in asked:
                raise invalid(
                    f"messages[{i}]: tool_call_id {call_id!r} does not match any tool call "
                    "in a previous assistant message"
                )
            _content(message.get("content"), i, ("text", "document"), required=True)
        else:
            allowed = ("text", "image_url") if role == "user" else ("text",)
            _content(message.get("content"), i, allowed, required=True)
    return raw


def _assistant(message: Mapping[str, Any], i: int) -> list[str]:
    calls = message.get("tool_calls")
    if calls is None:
        calls = []
    if not isinstance(calls, list):
        raise invalid(f"messages[{i}].tool_calls must be a list")
    ids: list[str] = []
    for j, call in enumerate(calls):
        function = call.get("function") if isinstance(call, dict) else None
        if (
            not isinstance(call, dict)
            or not isinstance(call.get("id"), str)
            or call.get("type", "function") != "function"
            or not isinstance(function, dict)
            or not isinstance(function.get("name"), str)
            or not isinstance(function.get("arguments"), str)
        ):
            raise invalid(
                f"messages[{i}].tool_calls[{j}] must have an id and a function "
                "with a name and arguments (a JSON string)"
            )
        ids.append(call["id"])
    plan = message.get("tool_plan")
    if plan is not None and not isinstance(plan, str):
        raise invalid(f"messages[{i}].tool_plan must be a string")
    if not calls:
        _content(message.get("content"), i, ("text", "thinking"), required=True)
    elif message.get("content") is not None:
        _content(message.get("content"), i, ("text", "thinking"), required=False)
    return ids


def _content(content: Any, i: int, kinds: Sequence[str], *, required: bool) -> None:
    if isinstance(content, str):
        return
    if content is None:
        if required:
            raise invalid(f"messages[{i}].content is required")
        return
    if not isinstance(content, list) or not all(isinstance(p, dict) for p in content):
        raise invalid(f"messages[{i}].content must be a string or a list of content items")
    for j, part in enumerate(content):
        kind = part.get("type")
        if kind not in kinds:
            raise invalid(f"messages[{i}].content[{j}]: type {kind!r} is not allowed here")
        if kind == "text" and not isinstance(part.get("text"), str):
            raise invalid(f"messages[{i}].content[{j}].text must be a string")
        if kind == "image_url":
            image = part.get("image_url")
            if not isinstance(image, dict) or not isinstance(image.get("url"), str):
                raise invalid(f"messages[{i}].content[{j}].image_url.url is required")


def _tools(raw: Any) -> list[dict[str, Any]]:
    if raw is None:
        return []
    if not isinstance(raw, list) or not all(isinstance(t, dict) for t in raw):
        raise invalid("tools must be a list of tool objects")
    for i, tool in enumerate(raw):
        function = tool.get("function")
        if tool.get("type", "function") != "function" or not isinstance(function, dict):
            raise invalid(f"tools[{i}] must be of type function with a function object")
        name = function.get("name")
        if not isinstance(name, str) or not name or name[0].isdigit():
            raise invalid(
                "tool names can only contain certain characters (A-Za-z0-9_) and can't "
                f"begin with a digit (provided name: {name!r})."
            )
        if not isinstance(function.get("parameters"), dict):
            raise invalid(f"tools[{i}].function.parameters must be a JSON schema object")
    return raw


def _tool_choice(raw: Any, tools: Sequence[Mapping[str, Any]]) -> str | None:
    if raw is None:
        return None
    if raw not in ("REQUIRED", "NONE"):
        raise invalid(f"tool_choice must be one of REQUIRED, NONE - received {raw!r}")
    if not tools:
        raise invalid("tool_choice can only be specified together with tools")
    return str(raw)


def _stop_sequences(raw: Any) -> tuple[str, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list) or not all(isinstance(s, str) for s in raw):
        raise invalid("stop_sequences must be a list of strings")
    if len(raw) > MAX_STOP_SEQUENCES:
        raise invalid(f"stop_sequences can hold at most {MAX_STOP_SEQUENCES} strings")
    return tuple(s for s in raw if s)


def _response_format(
    raw: Any, tools: Sequence[Mapping[str, Any]]
) -> tuple[bool, dict[str, Any] | None]:
    if raw is None:
        return False, None
    kind = raw.get("type") if isinstance(raw, dict) else None
    if kind == "text":
        if raw.get("json_schema") is not None:
            raise invalid("json_schema must not be specified when the type is 'text'")
        return False, None
    if kind != "json_object":
        raise invalid("response_format.type must be one of text, json_object")
    if tools:
        raise invalid("response_format is not supported with tools")
    schema = raw.get("json_schema")
    if schema is not None and not isinstance(schema, dict):
        raise invalid("response_format.json_schema must be a JSON schema object")
    return True, schema


# -- embed and rerank -----------------------------------------------------------------


def parse_embed(body: Mapping[str, Any]) -> EmbedParams:
    """`POST /v2/embed` with `texts` (images and mixed `inputs` are not served)."""
    _no_extra_fields(body, _EMBED_FIELDS)
    model = _model(body)
    texts = body.get("texts")
    if not isinstance(texts, list) or not all(isinstance(t, str) for t in texts):
        raise invalid("texts must be a list of strings")
    if not texts:
        raise invalid("texts must not be empty")
    if len(texts) > MAX_TEXTS:
        raise invalid(f"total number of texts must be at most {MAX_TEXTS} - received {len(texts)}")
    input_type = body.get("input_type")
    if input_type not in INPUT_TYPES:
        raise invalid("valid input_type must be provided with the provided model")
    types = body.get("embedding_types")
    if types is None:
        raise MockError(400, "embedding_types parameter is required", "invalid_request")
    if not isinstance(types, list) or not types or any(t not in EMBEDDING_TYPES for t in types):
        raise invalid(f"embedding_types must be a list of: {', '.join(EMBEDDING_TYPES)}")
    truncate = body.get("truncate")
    if truncate is not None and truncate not in ("NONE", "START", "END"):
        raise invalid("truncate must be one of NONE, START, END")
    return EmbedParams(
        model=model,
        texts=texts,
        input_type=str(input_type),
        embedding_types=tuple(types),
        output_dimension=_integer(body, "output_dimension", 1),
    )


def parse_rerank(body: Mapping[str, Any]) -> RerankParams:
    """`POST /v2/rerank`: v2 takes documents as plain strings."""
    _no_extra_fields(body, _RERANK_FIELDS)
    model = _model(body)
    query = body.get("query")
    if not isinstance(query, str) or not query:
        raise invalid("query must be a non-empty string")
    documents = body.get("documents")
    if not isinstance(documents, list) or not all(isinstance(d, str) for d in documents):
        raise invalid("documents must be a list of strings")
    if not documents:
        raise invalid("list of documents must not be empty")
    _integer(body, "max_tokens_per_doc", 1)
    return RerankParams(model, query, documents, _integer(body, "top_n", 1))
