"""A Vertex AI credential: a service-account key file, plus where to send requests.

The credential is the JSON key file Google hands out, its fields as they are
(`type`, `project_id`, `private_key_id`, `private_key`, `client_email`,
`token_uri`, ...), with two optional fields of the fleet's: `location` (default
`us-central1`) and `project` (default: the key file's `project_id`, for an account
that calls Vertex in another project). `quota_project_id`, when present, is sent
as `x-goog-user-project`, as Google's own libraries do.

Nothing here echoes a field's value: a key file pasted into the wrong field
would otherwise end up in an error message.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Final

from contracts.errors import BadRequest
from providers.core.auth import header_value
from providers.core.tokens import credential_key
from providers.core.types import Secret

__all__ = ["DEFAULT_LOCATION", "ServiceAccount", "open_account"]

DEFAULT_LOCATION: Final = "us-central1"

# The fields that make up the key: a change to any of them is another credential.
_KEY_FIELDS: Final = ("client_email", "private_key_id", "private_key", "token_uri")
_REQUIRED: Final = ("private_key", "client_email")
# Project ids (`my-project`), numbers (`1234`) and the legacy domain-scoped ids
# (`example.com:my-project`); all travel in the URL path unquoted.
_PROJECT: Final = re.compile(r"[a-z0-9](?:[a-z0-9.:-]{0,98}[a-z0-9])?")
# Regions (`us-central1`), multi-regions (`us`, `eu`) and `global`.
_LOCATION: Final = re.compile(r"[a-z][a-z0-9-]{0,62}")
# Lines of a PEM body are 64 characters (the last one shorter); shorter pieces are
# the armour's words ("PRIVATE", "KEY"), which are no secret.
_MIN_REDACTED_LINE: Final = 16


@dataclass(frozen=True, slots=True)
class ServiceAccount:
    """The parts of an opened credential the adapter uses."""

    client_email: str
    private_key: str
    private_key_id: str | None
    token_uri: str | None
    project: str
    location: str
    quota_project: str | None
    cache_key: str  # the token cache's key for this credential: a digest, never the key
    # What messages must never show. The project, location and account name are
    # not secrets, and a message naming them is the useful one.
    redact: Secret

    def __repr__(self) -> str:  # the private key is a secret
        return f"ServiceAccount({self.client_email!r}, project={self.project!r})"


def open_account(provider: str, secret: Secret) -> ServiceAccount:
    """The service account `secret` holds; BadRequest naming what is missing or malformed."""
    missing = [name for name in _REQUIRED if not (secret.get(name) or "").strip()]
    if missing:
        raise BadRequest(
            f"{provider}: the credential is not a service account key: missing {', '.join(missing)}"
        )
    kind = (secret.get("type") or "service_account").strip()
    if kind != "service_account":
        # Only the field's name: its value is not ours to echo.
        raise BadRequest(f"{provider}: the credential's 'type' must be 'service_account'")
    project = _field(secret, "project") or _field(secret, "project_id")
    if not project:
        raise BadRequest(f"{provider}: the credential names no project (project_id or project)")
    if not _PROJECT.fullmatch(project):
        raise BadRequest(f"{provider}: credential field 'project' is not a Google Cloud project id")
    location = _field(secret, "location") or DEFAULT_LOCATION
    if not _LOCATION.fullmatch(location):
        raise BadRequest(f"{provider}: credential field 'location' is not a Google Cloud location")
    quota_project = _field(secret, "quota_project_id")
    if quota_project:
        quota_project = header_value(provider, "quota_project_id", quota_project)
    private_key = secret.get("private_key") or ""
    private_key_id = _field(secret, "private_key_id")
    return ServiceAccount(
        client_email=(secret.get("client_email") or "").strip(),
        private_key=private_key,
        private_key_id=private_key_id,
        token_uri=_field(secret, "token_uri"),
        project=project,
        location=location,
        quota_project=quota_project,
        cache_key=credential_key(secret, _KEY_FIELDS),
        redact=_KeyRedaction(private_key, private_key_id),
    )


class _KeyRedaction(Secret):
    """What to scrub from messages for a private key: the key as it is, as one line
    (error messages have their whitespace collapsed before they are scrubbed), and
    each of its lines, so a provider echoing part of it shows none of it. Worked
    out only when a message is scrubbed: most requests never need it."""

    __slots__ = ("_key", "_key_id")

    def __init__(self, private_key: str, private_key_id: str | None) -> None:
        super().__init__({})
        self._key = private_key
        self._key_id = private_key_id

    def values(self) -> list[str]:
        lines = self._key.split()
        values = [self._key, " ".join(lines), self._key_id or ""]
        values.extend(
            line
            for line in lines
            if len(line) >= _MIN_REDACTED_LINE and not line.startswith("-----")
        )
        return [value for value in values if value]


def _field(secret: Secret, name: str) -> str | None:
    return (secret.get(name) or "").strip() or None
