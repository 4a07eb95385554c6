"""Adapter for the OpenAI Chat Completions / Embeddings API and compatible servers.

One class serves OpenAI, Azure, vLLM, Ollama's `/v1`, the HF router, the local
mock and anything else speaking the same dialect; instances differ only in name
and default base URL (see `providers.registry`). The streaming path decodes each
SSE event once and touches plain dicts only.

What real servers send, and what the adapter makes of it (checked against the
recordings in shared/reference/transcripts/openai):

* Choices are told apart by their `index`: the fleet answers with choice 0, and
  the chunks of other choices (`n > 1`, interleaved one choice per chunk) are
  skipped rather than mixed into its text.
* Refusals (`message.refusal`, or streamed `delta.refusal` fragments with
  `content: null`) reach the caller as `Message.refusal` (and `RefusalDelta`s,
  which workers send as the `refusal` of delta frames), apart from the text.
* A `content_filter` finish reason (OpenAI, Azure) and a 400 with code
  `content_filter` both raise `ContentFiltered`.
* Azure's filter-only first chunk (`choices: []`, `prompt_filter_results`, empty
  id and model) and chunks without usage are taken in stride; vLLM's tool-call
  header without `arguments` and Ollama's whole tool call per chunk (each with
  its own `index`, `role` repeated) assemble like OpenAI's fragments.
* Usage details become `Usage.cached_input_tokens` (`prompt_tokens_details.
  cached_tokens`) and `Usage.reasoning_tokens` (`completion_tokens_details.
  reasoning_tokens`); None when the server does not report them.
* Errors are classified from `type` and `code` together, as OpenAI has spelled
  them over the years (`ERRORS`).
* `max_tokens` is sent as `max_completion_tokens` to OpenAI's reasoning models,
  which refuse the old name; other servers get `max_tokens`, which they all know.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator
from typing import Any

import httpx

from contracts.errors import BadRequest
from contracts.jobs import ContentPart, Message, Tool
from providers.core.api import ApiClient, sse_chat_stream
from providers.core.auth import HeaderAuth, header_value
from providers.core.spec import ProviderContext
from providers.core.types import (
    ChatRequest,
    ChatResult,
    EmbedRequest,
    EmbedResult,
    Secret,
    StreamEvent,
    VerifyResult,
    tool_schema,
)
from providers.openai.errors import ERRORS
from providers.openai.models import is_reasoning_model
from providers.openai.parse import StreamState, parse_chat_response, parse_embeddings
from providers.options import ModelOptions

__all__ = ["ERRORS", "OpenAICompatible", "chat_body", "parse_chat_response"]

# Options copied verbatim when set; `max_tokens`, `stop`, `tool_choice` and
# `top_logprobs` need reshaping.
_PLAIN_OPTIONS = (
    "temperature",
    "top_p",
    "frequency_penalty",
    "presence_penalty",
    "seed",
    "response_format",
    "user",
    "reasoning_effort",
    "service_tier",
    "metadata",
)
# Providers that are OpenAI itself (the mock plays it), where reasoning models
# refuse `max_tokens`; servers copying the API may not know the newer name.
_OPENAI_ITSELF = frozenset({"openai", "mock"})


class OpenAICompatible:
    """Adapter for OpenAI-compatible HTTP APIs (chat, stream, tools, embed, verify).

    Credential fields: `api_key` (sent as a Bearer token when non-empty),
    optional `base_url` (overrides the operator's address), `organization`, `project`.

        adapter = OpenAICompatible(ProviderContext("vllm", pool, "http://localhost:8000/v1"))
        async with contextlib.aclosing(adapter.stream_chat(request, secret)) as events:
            async for event in events: ...
    """

    def __init__(self, context: ProviderContext) -> None:
        self.name = context.name
        self._api = ApiClient(context.name, context.http, context.base_url, self._auth, ERRORS)

    def _auth(self, secret: Secret) -> httpx.Auth:
        headers: dict[str, str] = {}
        for header, field, template in _AUTH_HEADERS:
            value = secret.get(field) or ""
            if value.strip():
                headers[header] = template.format(header_value(self.name, field, value))
        return HeaderAuth(headers)

    async def chat(self, req: ChatRequest, secret: Secret) -> ChatResult:
        body = chat_body(self.name, req, stream=False)
        payload = await self._api.json("POST", "/chat/completions", secret, body)
        if payload.get("error"):
            raise ERRORS.from_payload(self.name, payload["error"], secret, context="error body")
        return parse_chat_response(self.name, payload)

    def stream_chat(self, req: ChatRequest, secret: Secret) -> AsyncGenerator[StreamEvent, None]:
        return sse_chat_stream(
            self._api,
            "/chat/completions",
            secret,
            lambda: chat_body(self.name, req, stream=True),
            StreamState(self.name, secret),
            end_marker="[DONE]",
        )

    async def embed(self, req: EmbedRequest, secret: Secret) -> EmbedResult:
        body: dict[str, Any] = {
            "model": req.model,
            "input": req.inputs,
            "encoding_format": "base64",
        }
        if req.dimensions is not None:
            body["dimensions"] = req.dimensions
        payload = await self._api.json("POST", "/embeddings", secret, body)
        return parse_embeddings(self.name, payload, expected=len(req.inputs))

    async def verify(self, secret: Secret) -> VerifyResult:
        return await self._api.verify("/models", secret, _models_visible)


def _models_visible(payload: dict[str, Any]) -> str:
    data = payload.get("data")
    return f"{len(data) if isinstance(data, list) else 0} models visible"


_AUTH_HEADERS = (
    ("Authorization", "api_key", "Bearer {}"),
    ("OpenAI-Organization", "organization", "{}"),
    ("OpenAI-Project", "project", "{}"),
)


# -- request mapping -----------------------------------------------------------


def chat_body(provider: str, req: ChatRequest, *, stream: bool) -> dict[str, Any]:
    """The JSON body for `POST /chat/completions`; unset options are omitted."""
    body: dict[str, Any] = {
        "model": req.model,
        "messages": [_message(provider, m) for m in req.messages],
    }
    if req.tools:
        body["tools"] = [_tool(t) for t in req.tools]
    body.update(_options(provider, req.model, req.options))
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _message(provider: str, msg: Message) -> dict[str, Any]:
    out: dict[str, Any] = {"role": msg.role}
    content = msg.content
    if isinstance(content, list):
        out["content"] = [_part(provider, p) for p in content]
    elif content is not None:
        out["content"] = content
    else:
        # OpenAI wants null beside tool_calls; elsewhere some servers reject null.
        out["content"] = None if msg.tool_calls else ""
    if msg.tool_calls:
        out["tool_calls"] = [
            {"id": c.id, "type": "function", "function": {"name": c.name, "arguments": c.arguments}}
            for c in msg.tool_calls
        ]
    if msg.tool_call_id is not None:
        out["tool_call_id"] = msg.tool_call_id
    if msg.name is not None:
        out["name"] = msg.name
    return out


def _part(provider: str, part: ContentPart) -> dict[str, Any]:
    if part.type == "text":
        return {"type": "text", "text": part.text or ""}
    if not part.image_url:
        raise BadRequest(f"{provider}: image_url content part without a url")
    return {"type": "image_url", "image_url": {"url": part.image_url}}


def _tool(tool: Tool) -> dict[str, Any]:
    function: dict[str, Any] = {
        "name": tool.name,
        "parameters": tool_schema(tool),
    }
    if tool.description:
        function["description"] = tool.description
    if tool.strict is not None:
        function["strict"] = tool.strict
    return {"type": "function", "function": function}


def _options(provider: str, model: str, options: ModelOptions) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for name in _PLAIN_OPTIONS:
        value = getattr(options, name)
        if value is not None:
            out[name] = value
    openai_reasoning = provider in _OPENAI_ITSELF and is_reasoning_model(model)
    if options.max_tokens is not None:
        # OpenAI's reasoning models refuse the old name; other servers may not know
        # the new one.
        name = "max_completion_tokens" if openai_reasoning else "max_tokens"
        out[name] = options.max_tokens
    if provider in _OPENAI_ITSELF and not openai_reasoning:
        # OpenAI answers a 400 to reasoning_effort on a model that does not reason.
        out.pop("reasoning_effort", None)
    if options.top_logprobs is not None:
        # OpenAI refuses top_logprobs unless logprobs are asked for too.
        out["logprobs"] = True
        out["top_logprobs"] = options.top_logprobs
    if options.stop is not None:
        out["stop"] = list(options.stop)
    if options.tool_choice is not None:
        out["tool_choice"] = _tool_choice(provider, options.tool_choice)
    return out


def _tool_choice(provider: str, choice: str | dict[str, Any]) -> str | dict[str, Any]:
    if isinstance(choice, str) or "type" in choice:
        return choice
    if "name" in choice:
        return {"type": "function", "function": {"name": choice["name"]}}
    if "function" in choice:
        return {"type": "function", "function": choice["function"]}
    raise BadRequest(f"{provider}: unsupported tool_choice {sorted(choice)!r}")
