"""Chaos under streamed load, sized for `make test` (`make chaos` runs the full version).

Every request must be answered exactly once with the mock's exact text while
workers are killed with SIGKILL, one is stopped with SIGTERM, the broker is
restarted (a single node) or the node leading `llm.chat` is stopped (a
three-node cluster), and the credential store is restarted; afterwards no
provider stream may stay open.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.brokers import BrokerCluster, BrokerNode, PrivatePostgres
from tests.chaos import ChaosPlan, run_chaos

pytestmark = pytest.mark.integration


async def test_single_node_restart_kills_and_store_restart_lose_nothing(
    private_broker: BrokerNode, private_postgres: PrivatePostgres, tmp_path: Path
) -> None:
    plan = ChaosPlan(
        requests=60,
        inflight=20,
        tokens=30,
        kill_every=2.5,
        broker_restart_at=2.0,
        pg_restart_at=1.0,
        sigterm_at=3.0,
    )
    report = await run_chaos(plan, private_broker, pg=private_postgres, logdir=tmp_path)
    print(report.summary(), report.events)
    events = [e for _, e in report.events]
    assert "PostgreSQL restart done" in events and any(e.startswith("kill -9") for e in events)
    assert report.in_flight_across("broker down", "broker up") > 0, report.events
    assert report.ok, (report.summary(), report.problems[:5], str(tmp_path))


async def test_losing_the_node_leading_the_job_queue_loses_nothing(
    broker_cluster: BrokerCluster, tmp_path: Path
) -> None:
    plan = ChaosPlan(
        requests=60, inflight=20, tokens=30, kill_every=3.0, node_stop_at=1.5, node_down_for=5.0
    )
    report = await run_chaos(plan, broker_cluster, logdir=tmp_path)
    print(report.summary(), report.events)
    assert report.in_flight_across("node down", "node down") > 0, report.events
    assert report.ok, (report.summary(), report.problems[:5], str(tmp_path))
