"""What a producer that publishes by hand (no FleetClient) must do to be answered.

The broker validates `user_id` against the login, and workers answer only into
`llm.reply.<login>.<token>` queues of that login.
"""

from __future__ import annotations

import uuid

from contracts import topology as t

# The login of the machine's broker and of the private test nodes.
USER = "guest"


def reply_queue_name(user: str = USER) -> str:
    return t.reply_queue_prefix(user) + uuid.uuid4().hex[:16]
