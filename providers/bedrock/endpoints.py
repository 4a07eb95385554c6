"""Where a Bedrock request goes: the region, the three hosts, the model's path.

Bedrock is three services behind one signing name (`bedrock`): the runtime
(`bedrock-runtime.{region}…`: Converse, InvokeModel), the control plane
(`bedrock.{region}…`: ListFoundationModels, used to verify a credential) and the
agent runtime (`bedrock-agent-runtime.{region}…`: Rerank).

The address rule:

* The base is the credential's `base_url`, else the operator's
  (`FLEET_PROVIDER_URLS`), else the spec's default
  `https://bedrock-runtime.{region}.amazonaws.com`. A `{region}` in it is
  replaced by the credential's region, which must look like an AWS region
  (`us-east-1`, `us-gov-west-1`, `cn-north-1`) before it gets near a URL.
* When the result is a standard runtime host (`bedrock-runtime[-fips].{region}.`
  plus an AWS DNS suffix, with no path), the control plane and the agent runtime
  are its siblings: `bedrock[-fips].{region}.…` and
  `bedrock-agent-runtime[-fips].{region}.…`. The default address follows the
  region's partition (`amazonaws.com.cn` for `cn-*` regions).
* Any other base (a VPC endpoint, a proxy, the mock server) is an override:
  every path goes to it unchanged, as `endpoint_url` does for boto3.

Model ids go into the path percent-encoded, `/` included (ARNs of inference
profiles contain one), but `:` and the other characters RFC 3986 allows in a path
segment are left as they are: the aiohttp transport (yarl) decodes `%3A` back to
`:` before sending, so a path holding `%3A` would go out different from the one
signed. Left literal, the path is sent byte for byte as signed on every
transport, and AWS, which canonicalises the path it receives, computes the same
signature (`…v1:0` is signed as `…v1%3A0`, as boto3's `…v1%3A0` is as `%253A0`).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass
from typing import Any, Final
from urllib.parse import quote, urlsplit

from botocore.loaders import create_loader

from contracts.errors import BadRequest
from providers.core.types import Secret

__all__ = [
    "DEFAULT_BASE_URL",
    "Endpoints",
    "foundation_model_arn",
    "is_known_region",
    "model_path",
    "region_of",
    "resolve",
]

DEFAULT_BASE_URL: Final = "https://bedrock-runtime.{region}.amazonaws.com"

# Region-shaped: letters, dash-separated words, a number (`us-isob-east-1`).
_REGION: Final = re.compile(r"[a-z]{2}(?:-[a-z]+){1,3}-\d{1,2}")
_STANDARD_HOST: Final = re.compile(
    r"bedrock-runtime(?P<fips>-fips)?\.(?P<region>[a-z0-9-]+)\.(?P<suffix>[a-z0-9.-]+)"
)
# Characters a path segment may carry literally (RFC 3986 `pchar` minus unreserved,
# which `quote` keeps anyway): what neither httpx nor yarl re-encodes or decodes.
_SEGMENT_SAFE: Final = ":@!$&'()*,;="


@dataclass(frozen=True, slots=True)
class Endpoints:
    """Base URLs (no trailing slash) for one credential's requests."""

    region: str
    runtime: str
    control: str
    agent: str


def region_of(provider: str, secret: Secret) -> str:
    region = (secret.get("region") or "").strip()
    if not region:
        raise BadRequest(f"{provider}: the credential has no region (e.g. us-east-1)")
    if not _REGION.fullmatch(region):
        raise BadRequest(f"{provider}: credential region {region!r} is not an AWS region name")
    return region


def resolve(provider: str, base_url: str | None, secret: Secret) -> Endpoints:
    """The three bases for `secret` (see the module docstring for the rule)."""
    region = region_of(provider, secret)
    base = (secret.get("base_url") or "").strip() or base_url or DEFAULT_BASE_URL
    if base == DEFAULT_BASE_URL:
        base = f"https://bedrock-runtime.{region}.{_dns_suffix(region)}"
    base = base.replace("{region}", region).rstrip("/")
    parts = urlsplit(base)
    host = _STANDARD_HOST.fullmatch(parts.hostname or "")
    if host is None or parts.path or parts.port or not _is_aws_suffix(host["suffix"]):
        return Endpoints(region, base, base, base)
    if host["region"] != region:
        raise BadRequest(
            f"{provider}: base_url is in region {host['region']!r} but the credential "
            f"is for {region!r}"
        )
    fips = host["fips"] or ""
    tail = f"{region}.{host['suffix']}"
    scheme = parts.scheme or "https"
    return Endpoints(
        region,
        runtime=base,
        control=f"{scheme}://bedrock{fips}.{tail}",
        agent=f"{scheme}://bedrock-agent-runtime{fips}.{tail}",
    )


def model_path(model: str, action: str) -> str:
    """`/model/{id}/{action}` with the id encoded as one path segment."""
    if not model:
        raise BadRequest("bedrock: empty model id")
    return f"/model/{quote(model, safe=_SEGMENT_SAFE)}/{action}"


def foundation_model_arn(model: str, region: str) -> str:
    """An ARN for `model` (Rerank wants one); an ARN is kept as it is."""
    if model.startswith("arn:"):
        return model
    return f"arn:aws:bedrock:{region}::foundation-model/{model}"


# -- partitions (botocore's data, so new regions arrive with botocore upgrades) ------


@functools.cache
def _partitions() -> list[dict[str, Any]]:
    data: dict[str, Any] = create_loader().load_data("partitions")
    partitions: list[dict[str, Any]] = data["partitions"]
    return partitions


def _partition_of(region: str) -> dict[str, Any] | None:
    for partition in _partitions():
        if region in partition.get("regions", {}):
            return partition
    for partition in _partitions():
        if re.match(partition.get("regionRegex", "$^"), region):
            return partition
    return None


def _dns_suffix(region: str) -> str:
    partition = _partition_of(region)
    suffix = partition["outputs"]["dnsSuffix"] if partition is not None else None
    return suffix if isinstance(suffix, str) else "amazonaws.com"


def _is_aws_suffix(suffix: str) -> bool:
    return any(suffix == p["outputs"].get("dnsSuffix") for p in _partitions())


def is_known_region(region: str) -> bool:
    """Whether botocore's partition data lists `region` (it lags new regions)."""
    return any(region in p.get("regions", {}) for p in _partitions())
