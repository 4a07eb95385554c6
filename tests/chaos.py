"""Chaos runs: streamed load through real workers while things are broken on purpose.

A run publishes `requests` streamed chats, `inflight` at a time, through worker
processes on private RabbitMQ nodes, while a schedule kills workers with
SIGKILL, stops one gracefully, restarts the broker (one node) or stops the node
leading `llm.chat` (a cluster), and restarts the credential store. Every answer
is checked against the mock's deterministic text: each request must end with
exactly one final frame carrying exactly that text.

Used by tests/integration/test_chaos.py (sized for `make test`) and by
`python -m tests.chaos` (`make chaos`: the full 300-request runs, three in a
row, results in bench/results/chaos.json).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import random
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.harness import MOCK_KEY, MockSpec, Proc, free_port, mock_args, spawn, wait_ready
from contracts.brokers import BrokerRing
from contracts.client import FleetClient, Restart
from contracts.frames import Delta, Final
from contracts.jobs import Credential, Message, Target
from providers.mock.config import MockConfig
from providers.mock.server import start_mock
from tests.brokers import BrokerCluster, BrokerNode, PrivatePostgres
from workers.crypto import Keyring, seal
from workers.migrate import migrate, with_database
from workers.vault import Vault

ROOT = Path(__file__).resolve().parents[1]
JOB_QUEUE = "llm.chat"


@dataclass
class ChaosPlan:
    requests: int = 300
    inflight: int = 40
    workers: int = 3
    tokens: int = 40  # per answer
    ttft_ms: float = 300.0
    tokens_per_sec: float = 40.0
    kill_every: float = 3.0  # SIGKILL a random worker this often (a new one replaces it)
    broker_restart_at: float | None = None  # seconds into the run: restart the single node
    node_restart_at: float | None = None  # cluster: restart a node not leading llm.chat
    node_stop_at: float | None = None  # cluster: then stop the node leading llm.chat
    node_down_for: float = 8.0
    pg_restart_at: float | None = None
    sigterm_at: float | None = None  # a graceful stop of one worker (replaced at once)
    timeout: float = 240.0  # per request


@dataclass
class ChaosReport:
    plan: dict[str, Any]
    requests: int = 0
    correct: int = 0
    wrong: int = 0
    lost: int = 0
    duplicated: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    restarts_seen: int = 0
    attempts_over_1: int = 0
    resubmitted: int = 0
    seconds: float = 0.0
    latency_p50_s: float = 0.0
    latency_p99_s: float = 0.0
    latency_max_s: float = 0.0
    # For each fault: the longest any caller in flight at that moment waited for its answer.
    waits_after_fault_s: dict[str, float] = field(default_factory=dict)
    events: list[tuple[float, str]] = field(default_factory=list)
    open_streams_after: int = -1
    problems: list[str] = field(default_factory=list)
    spans: list[tuple[float, float]] = field(default_factory=list)  # (start, end) per request

    def in_flight_across(self, first: str, last: str) -> int:
        """Requests started before event `first` and answered after event `last`."""
        times = {e: t for t, e in self.events}
        if first not in times or last not in times:
            return 0
        return sum(1 for s, e in self.spans if s < times[first] and e > times[last])

    @property
    def ok(self) -> bool:
        return (
            self.correct == self.requests
            and not (self.wrong or self.lost or self.duplicated or self.errors)
            and self.open_streams_after == 0
        )

    def record(self) -> dict[str, Any]:
        """What the JSON results keep (per-request spans are too many to be useful there)."""
        return {k: v for k, v in asdict(self).items() if k != "spans"}

    def summary(self) -> str:
        return (
            f"{self.correct}/{self.requests} correct, {self.lost} lost, {self.duplicated} "
            f"duplicated, {self.wrong} wrong, errors {self.errors}; {self.restarts_seen} restarts "
            f"seen, {self.attempts_over_1} answered by a later attempt; latency p50 "
            f"{self.latency_p50_s:.2f}s p99 {self.latency_p99_s:.2f}s max "
            f"{self.latency_max_s:.2f}s; waits after faults {self.waits_after_fault_s}; "
            f"open provider streams after: {self.open_streams_after}"
        )


Brokers = BrokerNode | BrokerCluster


def _urls(brokers: Brokers) -> list[str]:
    return brokers.urls if isinstance(brokers, BrokerCluster) else [brokers.url]


@dataclass
class _Outcome:
    text: str = ""
    finals: int = 0
    restarts: int = 0
    attempt: int = 0
    error: str | None = None
    started: float = 0.0
    ended: float = 0.0


class _Fleet:
    """Worker processes, replaced as the schedule kills them."""

    def __init__(self, env: dict[str, str], logdir: Path) -> None:
        self._env = env
        self._logdir = logdir
        self.procs: list[Proc] = []
        self.ready: list[Proc] = []
        self._n = 0

    async def add(self) -> Proc:
        self._n += 1
        port = free_port()
        env = {**self._env, "FLEET_HEALTH_PORT": str(port), "FLEET_WORKER_ID": f"chaos-{self._n}"}
        args = ["worker", "--queues", "llm.chat", "--concurrency", "32", "--grace", "10"]
        proc = spawn(f"chaos-worker-{self._n}", args, env, self._logdir)
        self.procs.append(proc)
        await wait_ready(f"http://127.0.0.1:{port}/healthz/", proc, within=60)
        self.ready.append(proc)
        return proc

    def live(self) -> list[Proc]:
        """Workers that started and still run (the victims to choose from)."""
        return [p for p in self.ready if p.popen.poll() is None]

    async def close(self) -> None:
        for p in self.procs:
            if p.popen.poll() is None:
                p.popen.send_signal(signal.SIGKILL)
        for p in self.procs:
            await asyncio.to_thread(p.popen.wait, 10)

    def logs(self) -> str:
        return "\n".join(p.tail(10_000) for p in self.procs)


async def _stored_target(pg: PrivatePostgres, keyring: Keyring, tenant: str) -> tuple[Target, str]:
    url = with_database(pg.url, f"chaos_{uuid.uuid4().hex[:8]}")
    await migrate(url)
    vault = Vault(url, keyring, cache_ttl=0)
    try:
        cid = await vault.add(tenant, "mock", "chaos", {"api_key": MOCK_KEY})
    finally:
        await vault.close()
    return Target(provider="mock", model="mock-chaos", credential=Credential(id=cid)), url


async def run_chaos(
    plan: ChaosPlan,
    brokers: Brokers,
    *,
    pg: PrivatePostgres | None = None,
    logdir: Path | None = None,
) -> ChaosReport:
    logdir = logdir or Path(tempfile.mkdtemp(prefix="chaos-"))
    report = ChaosReport(plan=asdict(plan))
    key = base64.b64encode(os.urandom(32)).decode()
    keyring = Keyring.from_env({"INTEGRATION_CRYPTO_KEY": key})
    mock_port = free_port()
    spec = MockSpec(ttft_ms=plan.ttft_ms, tokens_per_sec=plan.tokens_per_sec, tokens=plan.tokens)
    mock = spawn(f"chaos-mock-{mock_port}", mock_args(spec, mock_port), os.environ, logdir)
    mock_url = f"http://127.0.0.1:{mock_port}/openai/v1"
    # The same text function without the pacing: what each answer must be.
    reference = await start_mock(
        MockConfig(api_keys=frozenset({MOCK_KEY}), max_tokens_default=plan.tokens), "127.0.0.1", 0
    )
    fleet: _Fleet | None = None
    try:
        await wait_ready(f"{mock_url}/models", mock)
        # The broker user the chaos clients publish as: their jobs' tenant.
        tenant = BrokerRing(_urls(brokers)).user
        if pg is not None:
            target, db_url = await _stored_target(pg, keyring, tenant)
        else:
            sealed = seal(keyring, "mock", {"api_key": MOCK_KEY}, tenant=tenant)
            target = Target(
                provider="mock", model="mock-chaos", credential=Credential(sealed=sealed)
            )
            db_url = ""
        urls = _urls(brokers)
        env = {
            **os.environ,
            "AMQP_URL": ",".join(urls),
            "DATABASE_URL": db_url,
            "INTEGRATION_CRYPTO_KEY": key,
            "FLEET_PROVIDER_URLS": f"mock={mock_url}",
            "FLEET_VAULT_CACHE_SECONDS": "2",
            "FLEET_LOG_LEVEL": "INFO",
            "PYTHONPATH": str(ROOT),
        }
        fleet = _Fleet(env, logdir)
        await asyncio.gather(*(fleet.add() for _ in range(plan.workers)))
        prompts: list[str] = []
        async with FleetClient(urls, default_timeout=plan.timeout, name="chaos") as client:
            outcomes = await _load(client, target, prompts, plan, fleet, brokers, pg, report)
        report.open_streams_after = await _open_streams(mock_url)
        expected = await _expected(reference.base_url, prompts)
        _judge(report, prompts, expected, outcomes)
        return report
    finally:
        if fleet is not None:
            (logdir / "workers.txt").write_text(fleet.logs())
            await fleet.close()
        await reference.close()
        mock.popen.send_signal(signal.SIGTERM)
        await asyncio.to_thread(mock.popen.wait, 10)


async def _expected(base_url: str, prompts: list[str]) -> dict[str, str]:
    lanes = asyncio.Semaphore(32)  # a run can have a thousand prompts
    async with httpx.AsyncClient(timeout=httpx.Timeout(30, pool=None)) as http:

        async def one(prompt: str) -> tuple[str, str]:
            async with lanes:
                r = await http.post(
                    f"{base_url}/chat/completions",
                    headers={"Authorization": f"Bearer {MOCK_KEY}"},
                    json={
                        "model": "mock-chaos",
                        "messages": [{"role": "user", "content": prompt}],
                    },
                )
            r.raise_for_status()
            return prompt, r.json()["choices"][0]["message"]["content"]

        return dict(await asyncio.gather(*(one(p) for p in prompts)))


async def _open_streams(mock_url: str) -> int:
    """Provider streams still open once every answer is in (give closes a moment)."""
    root = mock_url.removesuffix("/openai/v1")
    async with httpx.AsyncClient(timeout=10) as http:
        give_up = time.monotonic() + 10
        while True:
            stats = (await http.get(f"{root}/_mock/stats")).json()
            n = int(stats.get("open_streams", -1))
            if n == 0 or time.monotonic() > give_up:
                return n
            await asyncio.sleep(0.2)


async def _load(
    client: FleetClient,
    target: Target,
    prompts: list[str],
    plan: ChaosPlan,
    fleet: _Fleet,
    brokers: Brokers,
    pg: PrivatePostgres | None,
    report: ChaosReport,
) -> list[_Outcome]:
    """Keep `inflight` requests going until `plan.requests` are done *and* every
    one-shot fault has run its course, so faults always hit requests in flight."""
    outcomes: list[_Outcome] = []
    started = time.monotonic()
    faults = _Faults(plan, fleet, brokers, pg, report, started)

    def next_request() -> int | None:
        if len(prompts) >= plan.requests and faults.over.is_set():
            return None
        prompts.append(f"chaos request {len(prompts)}: tell me about queues")
        outcomes.append(_Outcome())
        return len(prompts) - 1

    async def one(i: int) -> None:
        out = outcomes[i]
        out.started = time.monotonic() - started
        parts: list[str] = []
        try:
            async for ev in client.stream_chat(target, [Message(role="user", content=prompts[i])]):
                if isinstance(ev, Restart):
                    parts.clear()
                    out.restarts += 1
                elif isinstance(ev, Delta):
                    parts.append(ev.text)
                elif isinstance(ev, Final):
                    out.finals += 1
                    out.attempt = ev.attempt
        except Exception as exc:
            out.error = f"{type(exc).__name__}: {exc}"
        out.text = "".join(parts)
        out.ended = time.monotonic() - started

    async def lane() -> None:
        while (i := next_request()) is not None:
            await one(i)

    lanes = asyncio.gather(*(lane() for _ in range(plan.inflight)))
    schedule = asyncio.create_task(faults.run())
    try:
        await lanes
    finally:
        schedule.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await schedule
    report.seconds = time.monotonic() - started
    return outcomes


class _Faults:
    """The fault schedule of one run: each fault at its time, a worker killed every
    `kill_every` seconds meanwhile; `over` is set once the one-shot faults are done."""

    def __init__(
        self,
        plan: ChaosPlan,
        fleet: _Fleet,
        brokers: Brokers,
        pg: PrivatePostgres | None,
        report: ChaosReport,
        started: float,
    ) -> None:
        self.plan, self.fleet, self.brokers, self.pg = plan, fleet, brokers, pg
        self.report, self.started = report, started
        self.over = asyncio.Event()
        self._rng = random.Random(1)

    def note(self, event: str) -> None:
        self.report.events.append((round(time.monotonic() - self.started, 2), event))

    async def run(self) -> None:
        await asyncio.gather(self._kills(), self._one_shots())

    async def _one_shots(self) -> None:
        plan = self.plan
        await asyncio.gather(
            self._at(plan.broker_restart_at, "broker restart", self._restart_broker),
            self._cluster(),
            self._at(plan.pg_restart_at, "PostgreSQL restart", self._restart_pg),
            self._at(plan.sigterm_at, "SIGTERM a worker", self._sigterm),
        )
        # A little load after the last fault shows the fleet is whole again.
        await asyncio.sleep(2.0)
        self.over.set()

    async def _at(
        self, when: float | None, name: str, action: Callable[[], Awaitable[None]]
    ) -> None:
        if when is None:
            return
        await asyncio.sleep(max(0.0, self.started + when - time.monotonic()))
        self.note(name)
        await action()
        self.note(name + " done")

    async def _cluster(self) -> None:
        # One after the other: two nodes of three down at once would lose the quorum.
        await self._at(self.plan.node_restart_at, "restart a follower node", self._restart_follower)
        await self._at(self.plan.node_stop_at, "stop the node leading llm.chat", self._stop_leader)

    async def _restart_broker(self) -> None:
        assert isinstance(self.brokers, BrokerNode)
        await asyncio.to_thread(self.brokers.stop)
        self.note("broker down")
        await asyncio.to_thread(self.brokers.start)
        self.note("broker up")

    async def _restart_follower(self) -> None:
        cluster = self.brokers
        assert isinstance(cluster, BrokerCluster)
        leader = await asyncio.to_thread(cluster.leader_of, JOB_QUEUE)
        follower = next(n for n in cluster.nodes if n is not leader)
        self.note(f"restarting {follower.name}")
        await asyncio.to_thread(cluster.stop_node, follower)
        self.note("follower down")
        await asyncio.to_thread(cluster.start_node, follower)

    async def _stop_leader(self) -> None:
        cluster = self.brokers
        assert isinstance(cluster, BrokerCluster)
        leader = await asyncio.to_thread(cluster.leader_of, JOB_QUEUE)
        self.note(f"leader of {JOB_QUEUE} is {leader.name}")
        await asyncio.to_thread(cluster.stop_node, leader)
        self.note("node down")
        await asyncio.sleep(self.plan.node_down_for)
        await asyncio.to_thread(cluster.start_node, leader)

    async def _restart_pg(self) -> None:
        assert self.pg is not None
        await asyncio.to_thread(self.pg.restart)

    async def _sigterm(self) -> None:
        victim = self._rng.choice(self.fleet.live())
        victim.popen.send_signal(signal.SIGTERM)
        await self.fleet.add()

    async def _kills(self) -> None:
        while True:
            await asyncio.sleep(self.plan.kill_every)
            live = self.fleet.live()
            if live:
                victim = self._rng.choice(live)
                victim.popen.send_signal(signal.SIGKILL)
                self.note(f"kill -9 {victim.name}")
            await self.fleet.add()


def _judge(
    report: ChaosReport, prompts: list[str], expected: dict[str, str], outcomes: list[_Outcome]
) -> None:
    report.requests = len(prompts)
    for prompt, out in zip(prompts, outcomes, strict=True):
        if out.error is not None:
            code = out.error.split(":", 1)[0]
            report.errors[code] = report.errors.get(code, 0) + 1
            report.problems.append(f"{prompt!r}: {out.error}")
        elif out.finals == 0:
            report.lost += 1
        elif out.finals > 1:
            report.duplicated += 1
        elif out.text != expected[prompt]:
            report.wrong += 1
            report.problems.append(f"{prompt!r}: got {out.text!r}")
        else:
            report.correct += 1
        report.restarts_seen += out.restarts
        report.attempts_over_1 += out.attempt > 1
    report.spans = [(round(o.started, 2), round(o.ended, 2)) for o in outcomes]
    waits = sorted(o.ended - o.started for o in outcomes)
    if waits:
        report.latency_p50_s = statistics.median(waits)
        report.latency_p99_s = waits[min(len(waits) - 1, int(len(waits) * 0.99))]
        report.latency_max_s = waits[-1]
    for when, event in report.events:
        if event.endswith(" done") or event.startswith("leader of"):
            continue
        caught = [o.ended - o.started for o in outcomes if o.started <= when <= o.ended]
        if caught:
            key = event if event not in report.waits_after_fault_s else f"{event} @{when}"
            report.waits_after_fault_s[key] = round(max(caught), 2)


# -- `make chaos` ------------------------------------------------------------------------


async def _main(runs: int, out: Path) -> int:
    results: list[dict[str, Any]] = []
    failed = False
    with BrokerNode() as node, PrivatePostgres() as pg:
        for i in range(runs):
            plan = ChaosPlan(broker_restart_at=4.0, pg_restart_at=7.0, sigterm_at=10.0)
            report = await run_chaos(plan, node, pg=pg)
            print(f"single node, run {i + 1}: {report.summary()}", flush=True)
            results.append({"scenario": "single-node", "run": i + 1, **report.record()})
            failed |= not report.ok
    with BrokerCluster() as cluster:
        for i in range(runs):
            plan = ChaosPlan(node_restart_at=3.0, node_stop_at=6.0, node_down_for=10.0)
            report = await run_chaos(plan, cluster)
            print(f"three-node cluster, run {i + 1}: {report.summary()}", flush=True)
            results.append({"scenario": "cluster", "run": i + 1, **report.record()})
            failed |= not report.ok
    out.parent.mkdir(parents=True, exist_ok=True)
    await asyncio.to_thread(out.write_text, json.dumps(results, indent=2))
    print(f"wrote {out}")
    return 1 if failed else 0


if __name__ == "__main__":
    runs = int(os.environ.get("CHAOS_RUNS", "3"))
    sys.exit(asyncio.run(_main(runs, ROOT / "bench/results/chaos.json")))
