"""Where a Vertex AI request goes: the location's host, then the model's path.

The host follows the location, as Google's SDK picks it: `global` is
`aiplatform.googleapis.com`, the multi-regions `us` and `eu` are
`aiplatform.{us,eu}.rep.googleapis.com`, and every region `{location}-aiplatform
.googleapis.com`. An operator's address (FLEET_PROVIDER_URLS) replaces the whole
host part, version included (`https://proxy.internal/v1`); a `{location}` in it is
filled in, for a proxy per region. The path is always
`/projects/{project}/locations/{location}/publishers/google/models/{model}:{method}`,
so the location still reaches Google when a proxy stands in front of it.
"""

from __future__ import annotations

from typing import Final
from urllib.parse import quote

from contracts.errors import BadRequest
from providers.vertex.account import ServiceAccount

__all__ = ["DEFAULT_BASE_URL", "base_url", "model_path"]

# The spec's default: a template, because the host depends on each credential's location.
DEFAULT_BASE_URL: Final = "https://{location}-aiplatform.googleapis.com/v1"
_MULTI_REGIONS: Final = frozenset({"us", "eu"})


def base_url(configured: str | None, location: str) -> str:
    """The API root for `location`, from the operator's address or Google's host rule."""
    if configured is None or configured == DEFAULT_BASE_URL:
        if location == "global":
            return "https://aiplatform.googleapis.com/v1"
        if location in _MULTI_REGIONS:
            return f"https://aiplatform.{location}.rep.googleapis.com/v1"
        return f"https://{location}-aiplatform.googleapis.com/v1"
    # `location` was checked to be URL-safe (`open_account`).
    return configured.replace("{location}", location).rstrip("/")


def model_path(provider: str, account: ServiceAccount, model: str, method: str) -> str:
    """`/projects/…/publishers/google/models/{model}:{method}`, the model quoted whole."""
    model = model.strip()
    if not model:
        raise BadRequest(f"{provider}: no model given")
    # A `/` in the name would reach another resource; quoted, it is the model's 404.
    name = quote(model, safe="@")
    return (
        f"/projects/{account.project}/locations/{account.location}"
        f"/publishers/google/models/{name}:{method}"
    )
