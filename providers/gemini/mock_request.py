"""Reading and checking `generateContent` bodies the way Google does, for the mock.

The mock refuses what the API refuses, so an adapter bug shows up as the 400 it
would cause in production: unknown fields ("Invalid JSON payload received. Unknown
name …"), a role other than `user`/`model`, a turn without parts, a function
response turn that does not follow its call turn or answers a different number
of calls, `allowedFunctionNames` without mode `ANY`, a schema without
`responseMimeType: application/json`. Field names are accepted in lowerCamelCase
and in snake_case, as Google's JSON parser accepts both.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

from aiohttp import web

from providers.gemini.mock_errors import GoogleError

__all__ = [
    "Declaration",
    "GenerateRequest",
    "bad_request",
    "json_object",
    "last_user_text",
    "parse_generate",
    "prompt_words",
]

_TOP_FIELDS: Final = frozenset(
    {
        "model",
        "contents",
        "systemInstruction",
        "tools",
        "toolConfig",
        "safetySettings",
        "generationConfig",
        "cachedContent",
        "labels",
    }
)
_GENERATION_FIELDS: Final = frozenset(
    {
        "stopSequences",
        "responseMimeType",
        "responseSchema",
        "responseJsonSchema",
        "_responseJsonSchema",
        "responseModalities",
        "candidateCount",
        "maxOutputTokens",
        "temperature",
        "topP",
        "topK",
        "seed",
        "presencePenalty",
        "frequencyPenalty",
        "responseLogprobs",
        "logprobs",
        "enableEnhancedCivicAnswers",
        "speechConfig",
        "thinkingConfig",
        "imageConfig",
        "mediaResolution",
        "routingConfig",
        "audioTimestamp",
    }
)
_PART_FIELDS: Final = frozenset(
    {
        "text",
        "inlineData",
        "fileData",
        "functionCall",
        "functionResponse",
        "executableCode",
        "codeExecutionResult",
        "thought",
        "thoughtSignature",
        "videoMetadata",
        "partMetadata",
        "mediaResolution",
    }
)
_MIME_TYPES: Final = frozenset({"text/plain", "application/json", "text/x.enum"})
_MODES: Final = frozenset({"AUTO", "ANY", "NONE", "VALIDATED", "MODE_UNSPECIFIED"})
_SNAKE: Final = re.compile(r"_([a-z])")


def bad_request(message: str) -> GoogleError:
    return GoogleError(400, message, "INVALID_ARGUMENT")


def _camel(name: str) -> str:
    return _SNAKE.sub(lambda m: m.group(1).upper(), name)


def _fields(raw: Any, allowed: frozenset[str], where: str) -> dict[str, Any]:
    """`raw` as an object with camelCase names, refusing names Google does not know."""
    if not isinstance(raw, Mapping):
        raise bad_request(f"Invalid value at '{where}', expected an object.")
    out: dict[str, Any] = {}
    for name, value in raw.items():
        key = _camel(name)
        if key not in allowed:
            at = f" at '{where}'" if where else ""
            raise bad_request(
                f'Invalid JSON payload received. Unknown name "{name}"{at}: Cannot find field.'
            )
        out[key] = value
    return out


@dataclass(frozen=True, slots=True)
class Declaration:
    name: str
    schema: Mapping[str, Any]  # JSON Schema of the arguments (Google's types lower-cased)


@dataclass(frozen=True, slots=True)
class GenerateRequest:
    """A checked request, reduced to what the mock's answer depends on."""

    contents: list[dict[str, Any]]
    system_text: str
    declarations: tuple[Declaration, ...]
    mode: str  # functionCallingConfig.mode, "AUTO" by default
    allowed: tuple[str, ...] | None
    max_output_tokens: int | None
    stop_sequences: tuple[str, ...]
    json_mode: bool
    schema: Mapping[str, Any] | None
    seed: int | None


async def json_object(request: web.Request) -> dict[str, Any]:
    try:
        body = await request.json()
    except ValueError:
        raise bad_request("Invalid JSON payload received. Unexpected token.") from None
    if not isinstance(body, dict):
        raise bad_request("Invalid JSON payload received. Expected an object.")
    return body


def parse_generate(body: Mapping[str, Any]) -> GenerateRequest:
    """A `generateContent` body, checked; raises Google's 400s."""
    top = _fields(body, _TOP_FIELDS, "")
    contents = _contents(top.get("contents"))
    declarations = _tools(top.get("tools"))
    mode, allowed = _tool_config(top.get("toolConfig"), declarations)
    config = _fields(top.get("generationConfig") or {}, _GENERATION_FIELDS, "generation_config")
    max_tokens = config.get("maxOutputTokens")
    if max_tokens is not None and (
        not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1
    ):
        raise bad_request(
            "Invalid value at 'generation_config.max_output_tokens', must be a positive integer."
        )
    for name, high in (("temperature", 2.0), ("topP", 1.0)):
        value = config.get(name)
        if value is not None and (
            isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= high
        ):
            raise bad_request(f"{name} must be in the range [0.0, {high}].")
    stops = config.get("stopSequences") or []
    if not isinstance(stops, list) or not all(isinstance(s, str) for s in stops):
        raise bad_request("Invalid value at 'generation_config.stop_sequences'.")
    if len(stops) > 5:
        raise bad_request("The number of stop sequences must be at most 5.")
    mime = config.get("responseMimeType") or "text/plain"
    if mime not in _MIME_TYPES:
        raise bad_request(
            f"* GenerateContentRequest.generation_config.response_mime_type: allowed mimetypes "
            f"are `text/plain`, `application/json`, and `text/x.enum`. Got: {mime}"
        )
    schema = config.get("responseJsonSchema") or config.get("_responseJsonSchema")
    legacy = config.get("responseSchema")
    if (schema is not None or legacy is not None) and mime == "text/plain":
        raise bad_request(
            "* GenerateContentRequest.generation_config.response_mime_type: response_mime_type "
            "must be application/json or text/x.enum when response_schema is set."
        )
    if schema is not None and legacy is not None:
        raise bad_request("responseJsonSchema and responseSchema cannot both be set.")
    if schema is not None and not isinstance(schema, Mapping):
        raise bad_request("Invalid value at 'generation_config.response_json_schema'.")
    seed = config.get("seed")
    return GenerateRequest(
        contents=contents,
        system_text=_system_text(top.get("systemInstruction")),
        declarations=declarations,
        mode=mode,
        allowed=allowed,
        max_output_tokens=max_tokens,
        stop_sequences=tuple(s for s in stops if s),
        json_mode=mime == "application/json",
        schema=schema if schema is not None else _json_schema(legacy),
        seed=seed if isinstance(seed, int) and not isinstance(seed, bool) else None,
    )


def _system_text(raw: Any) -> str:
    if raw is None:
        return ""
    if isinstance(raw, str):
        return raw
    parts = raw.get("parts") if isinstance(raw, Mapping) else None
    if not isinstance(parts, list):
        raise bad_request("Invalid value at 'system_instruction', expected a Content.")
    return " ".join(p["text"] for p in parts if isinstance(p, Mapping) and "text" in p)


def _contents(raw: Any) -> list[dict[str, Any]]:
    if raw is None or raw == []:
        raise bad_request("* GenerateContentRequest.contents: contents is not specified")
    if not isinstance(raw, list) or not all(isinstance(c, Mapping) for c in raw):
        raise bad_request("Invalid value at 'contents', expected a list of Content.")
    contents: list[dict[str, Any]] = []
    for i, content in enumerate(raw):
        fields = _fields(content, frozenset({"role", "parts"}), f"contents[{i}]")
        role = fields.get("role", "user")
        if role not in ("user", "model"):
            raise bad_request("Please use a valid role: user, model.")
        parts = fields.get("parts")
        if not isinstance(parts, list) or not parts:
            raise bad_request(
                f"* GenerateContentRequest.contents[{i}].parts: contents.parts must not be empty."
            )
        contents.append(
            {
                "role": role,
                "parts": [_part(p, f"contents[{i}].parts[{j}]") for j, p in enumerate(parts)],
            }
        )
    _function_turns(contents)
    return contents


def _part(raw: Any, where: str) -> dict[str, Any]:
    part = _fields(raw, _PART_FIELDS, where)
    data = [
        k
        for k in part
        if k
        not in ("thought", "thoughtSignature", "partMetadata", "videoMetadata", "mediaResolution")
    ]
    if len(data) != 1:
        raise bad_request(
            f"* GenerateContentRequest.{where}.data: required oneof field 'data' must have "
            "one initialized field"
        )
    call = part.get("functionCall")
    if call is not None and not (isinstance(call, Mapping) and isinstance(call.get("name"), str)):
        raise bad_request(
            f"* GenerateContentRequest.{where}.function_call.name: Name cannot be empty."
        )
    if call is not None and not isinstance(call.get("args", {}), Mapping):
        raise bad_request(f"Invalid value at '{where}.function_call.args', expected an object.")
    response = part.get("functionResponse")
    if response is not None:
        if not isinstance(response, Mapping) or not isinstance(response.get("name"), str):
            raise bad_request(
                f"* GenerateContentRequest.{where}.function_response.name: Name cannot be empty."
            )
        if not isinstance(response.get("response"), Mapping):
            raise bad_request(
                f"Invalid value at '{where}.function_response.response', expected an object."
            )
    for key in ("inlineData", "fileData"):
        blob = part.get(key)
        if blob is not None and not (
            isinstance(blob, Mapping) and blob.get("mimeType", blob.get("mime_type"))
        ):
            raise bad_request(
                f"* GenerateContentRequest.{where}.{key}.mime_type: mime_type must be set."
            )
    return part


def _kinds(content: Mapping[str, Any], key: str) -> int:
    return sum(1 for p in content["parts"] if key in p)


def _function_turns(contents: Sequence[Mapping[str, Any]]) -> None:
    """Each function response turn follows a call turn, answering as many calls."""
    for i, content in enumerate(contents):
        responses = _kinds(content, "functionResponse")
        if not responses:
            continue
        previous = contents[i - 1] if i else None
        calls = _kinds(previous, "functionCall") if previous is not None else 0
        if previous is None or previous["role"] != "model" or not calls:
            raise bad_request(
                "Please ensure that function response turn comes immediately after a function "
                "call turn."
            )
        if calls != responses:
            raise bad_request(
                "Please ensure that the number of function response parts is equal to the "
                "number of function call parts of the function call turn."
            )


def _lower_types(schema: Any) -> Any:
    """Google's OpenAPI subset (`type: "OBJECT"`) as JSON Schema (`type: "object"`)."""
    if isinstance(schema, Mapping):
        return {
            k: (v.lower() if k == "type" and isinstance(v, str) else _lower_types(v))
            for k, v in schema.items()
        }
    if isinstance(schema, list):
        return [_lower_types(v) for v in schema]
    return schema


def _json_schema(schema: Any) -> Mapping[str, Any] | None:
    return _lower_types(schema) if isinstance(schema, Mapping) else None


def _tools(raw: Any) -> tuple[Declaration, ...]:
    if raw is None:
        return ()
    if not isinstance(raw, list):
        raise bad_request("Invalid value at 'tools', expected a list of Tool.")
    found: list[Declaration] = []
    for i, tool in enumerate(raw):
        if not isinstance(tool, Mapping):
            raise bad_request(f"Invalid value at 'tools[{i}]', expected a Tool.")
        tool = {_camel(k): v for k, v in tool.items()}
        for j, function in enumerate(tool.get("functionDeclarations") or ()):
            where = f"tools[{i}].function_declarations[{j}]"
            fields = _fields(
                function,
                frozenset(
                    {
                        "name",
                        "description",
                        "parameters",
                        "parametersJsonSchema",
                        "response",
                        "responseJsonSchema",
                        "behavior",
                    }
                ),
                where,
            )
            name = fields.get("name")
            if not isinstance(name, str) or not name:
                raise bad_request(f"* GenerateContentRequest.{where}.name: Name cannot be empty.")
            if "parameters" in fields and "parametersJsonSchema" in fields:
                raise bad_request(
                    f"* GenerateContentRequest.{where}: parameters and parameters_json_schema "
                    "cannot both be set."
                )
            schema = fields.get("parametersJsonSchema") or _json_schema(fields.get("parameters"))
            found.append(Declaration(name, schema if isinstance(schema, Mapping) else {}))
    return tuple(found)


def _tool_config(
    raw: Any, declarations: Sequence[Declaration]
) -> tuple[str, tuple[str, ...] | None]:
    if raw is None:
        return "AUTO", None
    config = _fields(raw, frozenset({"functionCallingConfig", "retrievalConfig"}), "tool_config")
    calling = config.get("functionCallingConfig")
    if calling is None:
        return "AUTO", None
    fields = _fields(
        calling, frozenset({"mode", "allowedFunctionNames"}), "tool_config.function_calling_config"
    )
    mode = fields.get("mode", "AUTO")
    if mode not in _MODES:
        raise bad_request(
            "Invalid value at 'tool_config.function_calling_config.mode' (type.googleapis.com/"
            f'google.ai.generativelanguage.v1beta.FunctionCallingConfig.Mode), "{mode}"'
        )
    names = fields.get("allowedFunctionNames")
    if names is None:
        return mode, None
    if mode not in ("ANY", "VALIDATED"):
        raise bad_request(
            "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
            "allowed_function_names is only allowed when mode is ANY."
        )
    known = {d.name for d in declarations}
    if not isinstance(names, list) or not all(isinstance(n, str) and n in known for n in names):
        raise bad_request(
            "* GenerateContentRequest.tool_config.function_calling_config.allowed_function_names: "
            "each name must be the name of a function declared in tools."
        )
    return mode, tuple(names)


def prompt_words(req: GenerateRequest) -> int:
    """Prompt tokens: words of the system text, text parts and function responses
    (the same text the other dialects' mocks count)."""
    words = len(req.system_text.split())
    for content in req.contents:
        for part in content["parts"]:
            if isinstance(part.get("text"), str):
                words += len(part["text"].split())
            response = part.get("functionResponse")
            if isinstance(response, Mapping):
                words += len(str(response.get("response")).split())
    return max(words, 1)


def last_user_text(contents: Sequence[Mapping[str, Any]]) -> str:
    """The newest user text, skipping turns that only carry function responses."""
    for content in reversed(contents):
        if content["role"] == "user":
            texts = [p["text"] for p in content["parts"] if isinstance(p.get("text"), str)]
            if texts:
                return " ".join(texts)
    return ""
