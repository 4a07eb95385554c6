"""RabbitMQ definitions (users, vhost, permissions) for the fleet's roles.

For operators who manage RabbitMQ as code: the output of `llm-fleet tenants
definitions` goes to `rabbitmqctl import_definitions FILE` or the
`load_definitions` setting. It carries password hashes, never passwords, made
as RabbitMQ's `rabbit_password_hashing_sha256` does, so the broker checks a
login against it exactly as against a password set through rabbitmqctl.
"""

from __future__ import annotations

import base64
import hashlib
import secrets
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from workers.broker_roles import ROLE_TAGS, Role, permissions

HASHING_ALGORITHM: Final = "rabbit_password_hashing_sha256"
_SALT_BYTES: Final = 4  # what RabbitMQ itself uses


def password_hash(password: str, salt: bytes | None = None) -> str:
    """base64(salt + sha256(salt + password)), RabbitMQ's stored form of a password."""
    salt = secrets.token_bytes(_SALT_BYTES) if salt is None else salt
    digest = hashlib.sha256(salt + password.encode()).digest()
    return base64.b64encode(salt + digest).decode("ascii")


def password_matches(password: str, stored: str) -> bool:
    """Whether `stored` (a `password_hash` value) was made from `password`."""
    raw = base64.b64decode(stored)
    salt = raw[:_SALT_BYTES]
    return secrets.compare_digest(password_hash(password, salt), stored)


@dataclass(frozen=True)
class RoleUser:
    """One broker user to define: its name, role and (plaintext, never output) password."""

    name: str
    role: Role
    password: str

    def __repr__(self) -> str:
        return f"RoleUser({self.name!r}, {self.role.value})"


def definitions(users: Sequence[RoleUser], vhost: str) -> dict[str, Any]:
    """The definitions document: the vhost, each user (hashed) and its permissions on it."""
    return {
        "users": [
            {
                "name": u.name,
                "password_hash": password_hash(u.password),
                "hashing_algorithm": HASHING_ALGORITHM,
                "tags": list(ROLE_TAGS[u.role]),
            }
            for u in users
        ],
        "vhosts": [{"name": vhost}],
        "permissions": [
            {
                "user": u.name,
                "vhost": vhost,
                "configure": p.configure,
                "write": p.write,
                "read": p.read,
            }
            for u in users
            for p in (permissions(u.role, u.name),)
        ],
    }
