"""Vertex's `:predict` (text embeddings) and `:countTokens`, for the mock.

`:predict` takes `{instances:[{content, task_type?, title?}], parameters:{
autoTruncate?, outputDimensionality?}}` and answers `{predictions:[{embeddings:{
values, statistics:{token_count, truncated}}}], metadata:{billableCharacterCount}}`,
one prediction per instance in order, as the text-embedding models do; Google's
limits are kept (250 instances a request, one for `gemini-embedding-001`), and so
are its 400s for fields it does not know. Vectors come from the shared text engine,
so equal texts embed equally in every dialect.

`:countTokens` answers `{totalTokens, totalBillableCharacters}` for a
`generateContent`-shaped body, counting as the generate mock does.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final, NoReturn

from aiohttp import web

from providers.gemini.adapter import TASK_TYPES
from providers.gemini.mock_request import bad_request, json_object, parse_generate, prompt_words
from providers.mock.text import embedding_floats

__all__ = ["MAX_INSTANCES", "count_tokens", "predict"]

MAX_INSTANCES: Final = 250
_SINGLE_INSTANCE: Final = ("gemini-embedding-001",)
_MAX_DIMENSIONS: Final = 3072
_INSTANCE_FIELDS: Final = frozenset({"content", "task_type", "title", "mimeType"})
_PARAMETER_FIELDS: Final = frozenset({"autoTruncate", "outputDimensionality"})
_TASK_TYPES: Final = TASK_TYPES
# Tokens a text-embedding model reads of one input; past that, `autoTruncate` decides.
_INPUT_LIMIT: Final = 2048


def _unknown(name: str, where: str) -> NoReturn:
    raise bad_request(
        f"Invalid JSON payload received. Unknown name \"{name}\" at '{where}': Cannot find field."
    )


def _instances(body: Mapping[str, Any], model: str) -> list[tuple[str, str | None]]:
    raw = body.get("instances")
    if not isinstance(raw, list) or not raw:
        raise bad_request("The request must contain at least one instance.")
    limit = 1 if model.startswith(_SINGLE_INSTANCE) else MAX_INSTANCES
    if len(raw) > limit:
        raise bad_request(
            f"Unable to submit request because the number of instances ({len(raw)}) exceeds "
            f"the limit for {model} ({limit})."
        )
    instances: list[tuple[str, str | None]] = []
    for index, instance in enumerate(raw):
        where = f"instances[{index}]"
        if not isinstance(instance, Mapping):
            raise bad_request(f"Invalid value at '{where}', expected an object.")
        for name in instance:
            if name not in _INSTANCE_FIELDS:
                _unknown(name, where)
        content = instance.get("content")
        if not isinstance(content, str):
            raise bad_request(f"{where}.content: a string is required.")
        task = instance.get("task_type")
        if task is not None and task not in _TASK_TYPES:
            raise bad_request(f"{where}.task_type: unsupported task type {task!r}.")
        instances.append((content, task))
    return instances


def _parameters(body: Mapping[str, Any], default_dims: int) -> tuple[int, bool]:
    raw = body.get("parameters") or {}
    if not isinstance(raw, Mapping):
        raise bad_request("Invalid value at 'parameters', expected an object.")
    for name in raw:
        if name not in _PARAMETER_FIELDS:
            _unknown(name, "parameters")
    dims = raw.get("outputDimensionality", default_dims)
    if not isinstance(dims, int) or isinstance(dims, bool) or not 1 <= dims <= _MAX_DIMENSIONS:
        raise bad_request(
            f"parameters.outputDimensionality must be between 1 and {_MAX_DIMENSIONS}."
        )
    truncate = raw.get("autoTruncate", True)
    if not isinstance(truncate, bool):
        raise bad_request("parameters.autoTruncate must be a boolean.")
    return dims, truncate


def _tokens(text: str) -> int:
    return max(len(text.split()), 1)


async def predict(
    request: web.Request, model: str, default_dims: int
) -> tuple[int, dict[str, Any]]:
    """The checked request's answer, and the input tokens it costs."""
    body = await json_object(request)
    for name in body:
        if name not in ("instances", "parameters"):
            _unknown(name, "")
    instances = _instances(body, model)
    dims, truncate = _parameters(body, default_dims)
    counts = [_tokens(text) for text, _ in instances]
    for index, count in enumerate(counts):
        if count > _INPUT_LIMIT and not truncate:
            raise bad_request(
                f"Unable to submit request because the input token count of instance {index} "
                f"is {count} but the model supports up to {_INPUT_LIMIT}. Reduce the input "
                "token count and try again."
            )
    predictions = [
        {
            "embeddings": {
                "statistics": {
                    "truncated": count > _INPUT_LIMIT,
                    "token_count": min(count, _INPUT_LIMIT),
                },
                "values": embedding_floats(text, dims),
            }
        }
        for (text, _), count in zip(instances, counts, strict=True)
    ]
    characters = sum(len(text) for text, _ in instances)
    answer = {"predictions": predictions, "metadata": {"billableCharacterCount": characters}}
    return sum(min(c, _INPUT_LIMIT) for c in counts), answer


async def count_tokens(request: web.Request) -> dict[str, Any]:
    """A `:countTokens` answer for a `generateContent`-shaped body."""
    body = await json_object(request)
    req = parse_generate(body)
    words = prompt_words(req)
    characters = sum(
        len(part["text"].replace(" ", ""))
        for content in req.contents
        for part in content["parts"]
        if isinstance(part.get("text"), str)
    )
    return {
        "totalTokens": words,
        "totalBillableCharacters": characters,
        "promptTokensDetails": [{"modality": "TEXT", "tokenCount": words}],
    }
