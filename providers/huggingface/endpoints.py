"""Where a Hugging Face request goes, and which model names the router takes.

Three places serve one token:

* the router's OpenAI-compatible API, `https://router.huggingface.co/v1`
  (`/chat/completions`, `/models`);
* the HF Inference pipelines behind the same router, outside `/v1`:
  `https://router.huggingface.co/hf-inference/models/{model}/pipeline/feature-extraction`;
* the Hub itself, another host: `https://huggingface.co/api/whoami-v2`.

The address rule:

* The base is the credential's `base_url`, else the operator's
  (`FLEET_PROVIDER_URLS`), else the spec's default `https://router.huggingface.co/v1`.
  Chat and the model list are under the base.
* The router root is the base without a trailing `/v1` (the base itself when it has
  none). Pipelines are under the root: an override such as the mock's
  `http://127.0.0.1:8900/huggingface/v1` serves them at
  `http://127.0.0.1:8900/huggingface/hf-inference/models/...`.
* The Hub is `https://huggingface.co` when the root is the public router's
  (`router.huggingface.co`); any other root is an override and serves the Hub's
  `/api/whoami-v2` itself, as a private Hub or the mock does.

Model names go to the router verbatim: a Hub repo id (`org/name`), optionally with
one suffix naming a provider or a policy (`org/name:together`, `org/name:fastest`,
`org/name:cheapest`). A name the router could only refuse (spaces, an empty part,
two suffixes) is refused here, before a call is spent on it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final
from urllib.parse import quote, urlsplit

from contracts.errors import BadRequest
from providers.core.types import Secret

__all__ = [
    "DEFAULT_BASE_URL",
    "HUB_URL",
    "PIPELINE_PROVIDER",
    "Endpoints",
    "pipeline_model",
    "resolve",
    "router_model",
]

DEFAULT_BASE_URL: Final = "https://router.huggingface.co/v1"
HUB_URL: Final = "https://huggingface.co"
ROUTER_HOST: Final = "router.huggingface.co"
# The provider serving pipelines (feature extraction) behind the router.
PIPELINE_PROVIDER: Final = "hf-inference"

# A Hub repo id: an optional namespace, then a name (the Hub's own grammar, less
# its 96-character cap, which is the Hub's to enforce).
_REPO_ID: Final = re.compile(r"[\w.-]+(?:/[\w.-]+)?")
# A provider (`together`, `fireworks-ai`) or a policy (`fastest`, `cheapest`).
_SUFFIX: Final = re.compile(r"[A-Za-z0-9][\w-]*")


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Absolute addresses (no trailing slash) for one credential's requests."""

    base: str  # the OpenAI-compatible API: `{base}/chat/completions`
    root: str  # the router's root: `{root}/hf-inference/models/...`
    hub: str  # the Hub: `{hub}/api/whoami-v2`

    @property
    def chat(self) -> str:
        return f"{self.base}/chat/completions"

    @property
    def whoami(self) -> str:
        return f"{self.hub}/api/whoami-v2"

    def feature_extraction(self, model: str) -> str:
        # `/` separates the namespace and stays literal: it is part of the path.
        return f"{self.root}/{PIPELINE_PROVIDER}/models/{quote(model)}/pipeline/feature-extraction"


def resolve(base_url: str | None, secret: Secret) -> Endpoints:
    """The addresses for `secret` (see the module docstring for the rule)."""
    base = (secret.get("base_url") or "").strip() or base_url or DEFAULT_BASE_URL
    base = base.rstrip("/")
    root = base.removesuffix("/v1")
    hub = HUB_URL if urlsplit(root).hostname == ROUTER_HOST else root
    return Endpoints(base=base, root=root, hub=hub)


def router_model(provider: str, model: str) -> str:
    """`model` as the router takes it (unchanged), once checked."""
    repo, colon, suffix = model.partition(":")
    if not _REPO_ID.fullmatch(repo):
        raise BadRequest(
            f"{provider}: model {model!r} is not a Hub model id (org/name, optionally "
            "with :provider, :fastest or :cheapest)"
        )
    if colon and not _SUFFIX.fullmatch(suffix):
        raise BadRequest(
            f"{provider}: model {model!r} has an empty or malformed suffix after ':' "
            "(expected a provider such as :together, or :fastest / :cheapest)"
        )
    return model


def pipeline_model(provider: str, model: str) -> str:
    """The repo id for an HF Inference pipeline: the path names the provider already,
    so a suffix may only repeat it (`org/name:hf-inference`)."""
    repo, colon, suffix = router_model(provider, model).partition(":")
    if colon and suffix != PIPELINE_PROVIDER:
        raise BadRequest(
            f"{provider}: embeddings run on the {PIPELINE_PROVIDER} pipeline; "
            f"model {model!r} asks for provider {suffix!r}"
        )
    return repo
