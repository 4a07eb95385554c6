"""The models the Cohere mock serves and describes (`GET /v1/models`).

Cohere's own names, with the endpoints each serves and its embedding sizes, plus
every name the shared `MockConfig.models` lists and every "mock-…" name (each of
those serves every endpoint, so tests can use one name throughout).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Final

from providers.mock.app import MockShared

__all__ = ["CATALOG", "CohereModel", "describe", "find", "listed"]

_ALL_ENDPOINTS: Final = ("chat", "embed", "rerank")


@dataclass(frozen=True, slots=True)
class CohereModel:
    name: str
    endpoints: tuple[str, ...]
    context_length: int = 128_000
    # Embedding models: the size answered without `output_dimension`, and the
    # sizes `output_dimension` may ask for (none: it is refused).
    dims: int | None = None
    output_dimensions: tuple[int, ...] = ()
    any_dimension: bool = False  # the mock's own models: any size up to `dims`

    def accepts_dimension(self, size: int) -> bool:
        if self.any_dimension and self.dims is not None:
            return 1 <= size <= self.dims
        return size in self.output_dimensions


_EMBED_V4_SIZES: Final = (256, 512, 1024, 1536)

CATALOG: Final[Mapping[str, CohereModel]] = {
    model.name: model
    for model in (
        CohereModel("command-a-03-2025", ("chat",), 256_000),
        CohereModel("command-r-plus-08-2024", ("chat",)),
        CohereModel("command-r-08-2024", ("chat",)),
        CohereModel("command-r7b-12-2024", ("chat",)),
        CohereModel("embed-v4.0", ("embed",), 128_000, 1536, _EMBED_V4_SIZES),
        CohereModel("embed-english-v3.0", ("embed",), 512, 1024),
        CohereModel("embed-multilingual-v3.0", ("embed",), 512, 1024),
        CohereModel("embed-english-light-v3.0", ("embed",), 512, 384),
        CohereModel("rerank-v3.5", ("rerank",), 4096),
        CohereModel("rerank-english-v3.0", ("rerank",), 4096),
        CohereModel("rerank-multilingual-v3.0", ("rerank",), 4096),
    )
}


def find(state: MockShared, name: str) -> CohereModel | None:
    """The model `name`, or None when the mock does not serve it (Cohere's 404)."""
    known = CATALOG.get(name)
    if known is not None:
        return known
    if state.knows_model(name):
        config = state.config
        return CohereModel(
            name, _ALL_ENDPOINTS, config.context_window, config.embed_dims, any_dimension=True
        )
    return None


def listed(state: MockShared) -> list[CohereModel]:
    """Every model `GET /v1/models` lists, Cohere's first."""
    shared = [find(state, name) for name in state.config.models if name not in CATALOG]
    return [*CATALOG.values(), *(m for m in shared if m is not None)]


def describe(model: CohereModel) -> dict[str, Any]:
    """A `GetModelResponse` as the API sends it."""
    return {
        "name": model.name,
        "endpoints": list(model.endpoints),
        "finetuned": False,
        "context_length": model.context_length,
        "tokenizer_url": f"https://storage.googleapis.com/cohere-public/tokenizers/{model.name}.json",
        "default_endpoints": [],
        "features": ["tools", "json_mode"] if "chat" in model.endpoints else [],
        "is_deprecated": False,
    }
