"""Turn a job's credential reference into an opened `Secret`, in memory, per call."""

from __future__ import annotations

from typing import Protocol

from contracts.errors import NotFound
from contracts.jobs import Credential
from providers.core.types import Secret
from workers.crypto import Keyring, open_sealed


class StoredCredentials(Protocol):
    """The vault: opens stored credentials by id (see workers.vault)."""

    async def open(self, credential_id: str, provider: str) -> Secret: ...


class CredentialResolver:
    def __init__(self, keyring: Keyring, vault: StoredCredentials | None = None) -> None:
        self._keyring = keyring
        self._vault = vault

    async def open(self, provider: str, credential: Credential) -> Secret:
        if credential.sealed is not None:
            return open_sealed(self._keyring, provider, credential.sealed)
        assert credential.id is not None  # the contract guarantees exactly one is set
        if self._vault is None:
            raise NotFound(
                f"credential id {credential.id!r} given but this worker has no credential store"
            )
        return await self._vault.open(credential.id, provider)
