"""Where an Azure OpenAI call goes: endpoint, API form, deployment and paths.

Azure serves OpenAI's dialect in two URL forms:

* the dated form, `{endpoint}/openai/deployments/{deployment}/chat/completions
  ?api-version=2024-10-21`: the deployment is in the path, and the query names
  the API version (without it Azure answers 404 "Resource not found");
* the v1 form (`api_version` "v1"), `{endpoint}/openai/v1/chat/completions`:
  OpenAI's own paths, the deployment as the body's `model`, no version query.
  Azure AI Foundry resources (`*.services.ai.azure.com`) serve it too.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote

from contracts.errors import BadRequest
from providers.core.types import Secret

__all__ = ["DEFAULT_API_VERSION", "V1", "Route", "route_for"]

DEFAULT_API_VERSION: Final = "2024-10-21"
V1: Final = "v1"
# Dated versions from this one on take `max_completion_tokens`, which o-series
# deployments require (they refuse `max_tokens`); older ones know only `max_tokens`.
_COMPLETION_TOKENS_SINCE: Final = "2024-09-01"
_DATED: Final = re.compile(r"\d{4}-\d{2}-\d{2}(?:-preview)?")
# What operators paste as "the endpoint": the resource root, or the API root
# the portal shows (`…/openai/`, `…/openai/v1/`).
_API_ROOTS: Final = (("/openai/v1", True), ("/openai", False))


@dataclass(frozen=True, slots=True)
class Route:
    """One credential's endpoint and API form (the deployment is per request)."""

    endpoint: str  # scheme://host[/proxy-prefix], without `/openai`
    api_version: str  # a dated version, or "v1"
    deployment: str | None  # the credential's; None: the job's model names it

    @property
    def v1(self) -> bool:
        return self.api_version == V1

    @property
    def completion_tokens(self) -> bool:
        """Whether the answer's token limit goes as `max_completion_tokens`."""
        return self.v1 or self.api_version >= _COMPLETION_TOKENS_SINCE

    def deployment_for(self, provider: str, model: str) -> str:
        deployment = (self.deployment or model).strip()
        if not deployment:
            raise BadRequest(f"{provider}: no deployment: name it as the job's model")
        return deployment

    def chat_path(self, deployment: str) -> str:
        return self._path(deployment, "/chat/completions")

    def embeddings_path(self, deployment: str) -> str:
        return self._path(deployment, "/embeddings")

    def models_path(self) -> str:
        return "/openai/v1/models" if self.v1 else f"/openai/models{self._query}"

    def not_found_hint(self, deployment: str | None) -> str:
        """What a 404 most likely means here, for the error message."""
        if deployment is None:
            return (
                f"(api-version {self.api_version}: check that the endpoint is an Azure "
                "OpenAI resource and that it serves this version)"
            )
        if self.v1:
            return f"(v1 API: check that a deployment named {deployment!r} exists)"
        return (
            f"(deployment {deployment!r}, api-version {self.api_version}: check that the "
            "deployment exists on this resource and that it serves this version)"
        )

    @property
    def _query(self) -> str:
        return f"?api-version={quote(self.api_version, safe='')}"

    def _path(self, deployment: str, operation: str) -> str:
        if self.v1:
            return f"/openai/v1{operation}"
        # Quoted whole: a deployment name is one path segment, whatever it holds.
        return f"/openai/deployments/{quote(deployment, safe='')}{operation}{self._query}"


def route_for(
    provider: str, secret: Secret, operator_endpoint: str | None, default_version: str
) -> Route:
    """The route a credential names; its `endpoint` (or `base_url`) wins over the
    operator's address. Raises `BadRequest` for a missing endpoint, a malformed
    `api_version`, or an endpoint and version that contradict each other."""
    raw = (secret.get("endpoint") or secret.get("base_url") or operator_endpoint or "").strip()
    if not raw:
        raise BadRequest(
            f"{provider}: no endpoint: set the credential's endpoint "
            "(https://<resource>.openai.azure.com) or the operator's FLEET_PROVIDER_URLS"
        )
    endpoint, names_v1 = _split_api_root(raw)
    asked = (secret.get("api_version") or "").strip()
    if names_v1 and asked and asked != V1:
        raise BadRequest(
            f"{provider}: the endpoint names the v1 API (…/openai/v1) but api_version "
            f"is {asked!r}; drop one of the two"
        )
    version = asked or (V1 if names_v1 else default_version)
    if version != V1 and not _DATED.fullmatch(version):
        raise BadRequest(
            f"{provider}: api_version {version!r} is neither 'v1' nor a dated version "
            f"such as {DEFAULT_API_VERSION}"
        )
    deployment = (secret.get("deployment") or "").strip() or None
    return Route(endpoint=endpoint, api_version=version, deployment=deployment)


def _split_api_root(raw: str) -> tuple[str, bool]:
    endpoint = raw.rstrip("/")
    lowered = endpoint.lower()
    for suffix, v1 in _API_ROOTS:
        if lowered.endswith(suffix):
            return endpoint[: -len(suffix)], v1
    return endpoint, False
