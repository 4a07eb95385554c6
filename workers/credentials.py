"""Turn a job's credential reference into an opened `Secret`, in memory, per call.

Both kinds open only for the job's tenant (the broker user that published it): a
sealed envelope names its tenant, and a stored credential must be the tenant's
own or shared with it.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Protocol

from contracts.errors import NotFound
from contracts.jobs import Credential
from providers.core.types import Secret
from workers.crypto import Keyring, open_sealed


class StoredCredentials(Protocol):
    """The vault: opens stored credentials by id for a tenant (see workers.vault)."""

    async def open(self, credential_id: str, provider: str, tenant: str) -> Secret: ...


class CredentialResolver:
    def __init__(
        self,
        keyring: Keyring,
        vault: StoredCredentials | None = None,
        *,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._keyring = keyring
        self._vault = vault
        self._clock = clock  # wall clock: envelopes expire at a unix time

    async def open(self, provider: str, credential: Credential, tenant: str) -> Secret:
        if credential.sealed is not None:
            return open_sealed(self._keyring, provider, credential.sealed, tenant, self._clock())
        assert credential.id is not None  # the contract guarantees exactly one is set
        if self._vault is None:
            raise NotFound(
                f"credential id {credential.id!r} given but this worker has no credential store"
            )
        return await self._vault.open(credential.id, provider, tenant)
