"""What the Hub's `GET /api/whoami-v2` says about a token.

A credential check against the Hub rather than the router's `GET /v1/models`: the
model list answers any token (even none), while whoami refuses a wrong one (401)
and says whether a fine-grained token may call Inference Providers at all (its
`inference.serverless.write` permission, given globally or on the user's own
scope). Classic `read`/`write` tokens may. The answer names the account, never
the token.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Final

from providers.core.types import VerifyResult
from providers.huggingface.errors import NO_INFERENCE_PERMISSION

__all__ = ["INFERENCE_PERMISSION", "verdict"]

INFERENCE_PERMISSION: Final = "inference.serverless.write"
_FINE_GRAINED: Final = "fineGrained"


def verdict(payload: Mapping[str, Any]) -> VerifyResult:
    """`ok` unless the token is fine-grained without the inference permission."""
    name = payload.get("name")
    who = f"authenticated as {name}" if isinstance(name, str) and name else "authenticated"
    token = _access_token(payload)
    role = token.get("role")
    if role == _FINE_GRAINED and INFERENCE_PERMISSION not in _permissions(token):
        return VerifyResult(ok=False, detail=f"{who}, but {NO_INFERENCE_PERMISSION}")
    kind = f" ({role} token)" if isinstance(role, str) and role else ""
    return VerifyResult(ok=True, detail=who + kind)


def _access_token(payload: Mapping[str, Any]) -> Mapping[str, Any]:
    auth = payload.get("auth")
    token = auth.get("accessToken") if isinstance(auth, dict) else None
    return token if isinstance(token, dict) else {}


def _permissions(token: Mapping[str, Any]) -> set[str]:
    grained = token.get("fineGrained")
    if not isinstance(grained, dict):
        return set()
    found = {p for p in grained.get("global") or () if isinstance(p, str)}
    for scope in grained.get("scoped") or ():
        if isinstance(scope, dict):
            found.update(p for p in scope.get("permissions") or () if isinstance(p, str))
    return found
