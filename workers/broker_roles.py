"""The RabbitMQ permissions of the fleet's three roles, as data.

One source for `llm-fleet tenants` (management HTTP API), the definitions file
operators import, and the README table (a test compares them). Every pattern is
built from the names in `contracts/topology.py` and anchored, because RabbitMQ
matches a permission regex anywhere in a resource name: `llm\\.dead` unanchored
would also grant `llm.dead.notify`, and `llm.reply.a.` would grant user `a.b`'s
queues.

What each AMQP operation checks (RabbitMQ's access-control table): declaring or
deleting a resource is *configure* on it; declaring a queue with a dead-letter
exchange is also *write* on that exchange and *read* on the queue; binding is
*write* on the queue and *read* on the exchange; publishing is *write* on the
exchange (the default exchange is `amq.default`); consuming, getting and
purging are *read* on the queue.
"""

from __future__ import annotations

import re
from collections.abc import Collection
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

from contracts import topology as t

# RabbitMQ's own names: the default exchange as permissions see it, and the
# prefix of server-named queues (each worker's exclusive control queue).
DEFAULT_EXCHANGE: Final = "amq.default"
SERVER_NAMED_PREFIX: Final = "amq.gen-"
# Every exchange and queue the fleet names starts with this (a unit test checks).
FLEET_PREFIX: Final = "llm."

# Broker users our tooling creates: no dots, so a user's reply-queue prefix can
# never be the start of another user's (`llm.reply.a.` vs `llm.reply.a.b.`).
USER_NAME_RE: Final = re.compile(r"[A-Za-z0-9_-]{1,64}")


class Role(StrEnum):
    PRODUCER = "producer"
    WORKER = "worker"
    OPERATOR = "operator"


@dataclass(frozen=True)
class Permission:
    """One user's regexes on one vhost, as `rabbitmqctl set_permissions` takes them."""

    configure: str
    write: str
    read: str


# Operators use the management HTTP API's queue views (llm.dead); nobody else
# needs a tag, and a producer with one could read the broker's state over HTTP.
ROLE_TAGS: Final[dict[Role, tuple[str, ...]]] = {
    Role.PRODUCER: (),
    Role.WORKER: (),
    Role.OPERATOR: ("management",),
}

FLEET_EXCHANGES: Final = (t.JOBS_EXCHANGE, t.CONTROL_EXCHANGE, t.DEAD_LETTER_EXCHANGE)
FLEET_QUEUES: Final = (
    *t.JOB_QUEUES,
    t.DEAD_QUEUE,
    t.DEAD_NOTIFY_QUEUE,
    t.CATALOG_QUEUE,
    t.RELEASES_QUEUE,
)


def literal(name: str) -> str:
    """`name` as a regex matching only itself (readable: only non-word characters escaped)."""
    return "".join(c if (c.isascii() and c.isalnum()) or c in "_-" else "\\" + c for c in name)


def _exactly(*alternatives: str) -> str:
    """A regex matching a whole name that is one of the (regex) alternatives."""
    return f"^({'|'.join(alternatives)})$"


def _names(*names: str) -> tuple[str, ...]:
    return tuple(literal(n) for n in names)


_SERVER_NAMED: Final = literal(SERVER_NAMED_PREFIX) + ".*"


def reply_queues_of(user: str) -> str:
    """Exactly `user`'s reply queues: its prefix, then one token (no dot)."""
    return f"^{literal(t.reply_queue_prefix(user))}{t.REPLY_TOKEN_RE.pattern}$"


def _producer(user: str) -> Permission:
    own_replies = reply_queues_of(user)
    return Permission(
        # Declare and delete its own reply queues; nothing of the fleet's topology.
        configure=own_replies,
        # Jobs, catalog requests (routed by llm.jobs) and cancels. Not amq.default:
        # it would let a producer write into another producer's reply queue.
        # Not llm.dlx: a forged dead-letter notice would reach another producer.
        write=_exactly(*_names(t.JOBS_EXCHANGE, t.CONTROL_EXCHANGE)),
        read=own_replies,
    )


_WORKER: Final = Permission(
    # Declares the whole topology (producers cannot) and its own control queue.
    configure=_exactly(*_names(*FLEET_EXCHANGES, *FLEET_QUEUES), _SERVER_NAMED),
    write=_exactly(
        # Replies, dead-letter copies and release notes go through the default exchange.
        *_names(DEFAULT_EXCHANGE),
        # Declaring the job queues with llm.dlx as their dead-letter exchange.
        *_names(t.DEAD_LETTER_EXCHANGE),
        # Every queue it binds to an exchange.
        *_names(*t.JOB_QUEUES, t.CATALOG_QUEUE, t.DEAD_QUEUE, t.DEAD_NOTIFY_QUEUE),
        _SERVER_NAMED,
    ),
    read=_exactly(
        # Exchanges it binds queues to.
        *_names(*FLEET_EXCHANGES),
        # Queues it consumes (job queues also: declared with a dead-letter exchange).
        # Not llm.dead: whole job bodies from every producer are for operators only.
        *_names(*t.JOB_QUEUES, t.DEAD_NOTIFY_QUEUE, t.CATALOG_QUEUE, t.RELEASES_QUEUE),
        _SERVER_NAMED,
    ),
)

# Reads llm.dead, publishes credential revocations on llm.control, and runs
# `creds add --verify` (a job and a reply queue of its own).
_OPERATOR_ALL: Final = _exactly(
    literal(FLEET_PREFIX) + ".*", *_names(DEFAULT_EXCHANGE), _SERVER_NAMED
)
_OPERATOR: Final = Permission(configure=_OPERATOR_ALL, write=_OPERATOR_ALL, read=_OPERATOR_ALL)


def permissions(role: Role, user: str) -> Permission:
    """The permissions `user` gets on its vhost in `role` (only producers' depend on the user)."""
    if role is Role.PRODUCER:
        return _producer(user)
    if role is Role.WORKER:
        return _WORKER
    return _OPERATOR


def role_of(user: str, permission: Permission, tags: Collection[str] | None = None) -> Role | None:
    """The role whose permissions (and, unless `tags` is None, tags) `user` has exactly;
    None for anything else (custom)."""
    for role in Role:
        if permissions(role, user) != permission:
            continue
        if tags is None or set(tags) == set(ROLE_TAGS[role]):
            return role
    return None


def valid_user_name(name: str) -> bool:
    return USER_NAME_RE.fullmatch(name) is not None
