"""Every built-in provider through the whole fleet: a producer, RabbitMQ, a worker
process, the provider's mock, and back; and its credential nowhere it should not be.

Parametrized over `providers.registry.BUILTIN`, with each provider's own
credential shape (`MockCredentials`): an API key, an AWS key pair, a Google
service account. The canary values are the secret parts of those credentials.
"""

from __future__ import annotations

import importlib
import json
import uuid
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from contracts import FleetError, Message, decode_frames, encode
from contracts.client import FleetClient
from contracts.errors import ContentFiltered, Unauthorized
from contracts.frames import Delta, Final
from contracts.jobs import Credential, Target, Tool
from providers.core.spec import Capability, ProviderSpec
from providers.mock.app import MockProvider
from providers.mock.config import MockConfig
from providers.mock.server import RunningMock, start_mock
from providers.registry import BUILTIN
from tests.integration.conftest import (
    CANARY_KEY,
    TENANT,
    CliResult,
    RunCli,
    SpawnWorker,
    WorkerProc,
    drop_database,
)
from tests.integration.test_fleet import mock_admin
from workers.crypto import Keyring, seal
from workers.migrate import migrate, with_database
from workers.vault import Vault

pytestmark = pytest.mark.integration

HELLO = [Message(role="user", content="Say hello through the fleet")]
TOOL_PROMPT = [Message(role="user", content="Please use tools to look this up")]
_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"query": {"type": "string"}},
    "required": ["query"],
}
TOOLS = [
    Tool(name="get_weather", description="Weather for a city", parameters=_SCHEMA),
    Tool(name="search_docs", description="Search the documentation", parameters=_SCHEMA),
]


def spec_of(package: str) -> ProviderSpec:
    spec: ProviderSpec = importlib.import_module(f"providers.{package}").SPECS[0]
    return spec


def mock_of(package: str) -> MockProvider:
    mock: MockProvider = importlib.import_module(f"providers.{package}.mock").MOCK
    return mock


def good_fields(package: str) -> dict[str, str]:
    """The mock's accepted credential, with the canary as its API key where it has one."""
    fields = dict(mock_of(package).credentials.good)
    if "api_key" in fields:
        fields["api_key"] = CANARY_KEY
    return fields


def canaries(package: str) -> list[str]:
    """Secret values that must never leave worker memory (short defaults excluded:
    "mock-key" is also part of other tests' key names)."""
    found = [CANARY_KEY] if "api_key" in mock_of(package).credentials.good else []
    return found + [c for c in mock_of(package).credentials.canaries if len(c) >= 12]


@pytest.fixture(scope="module")
async def cloud_mock() -> AsyncIterator[RunningMock]:
    """Every provider's mock, accepting the canary as an API key."""
    running = await start_mock(
        MockConfig(api_keys=frozenset({CANARY_KEY}), max_tokens_default=24, embed_dims=64),
        "127.0.0.1",
        0,
    )
    yield running
    await running.close()


def provider_env(running: RunningMock) -> dict[str, str]:
    urls, tokens = [], []
    for package in BUILTIN:
        name, prefix = spec_of(package).name, mock_of(package).prefix
        urls.append(f"{name}={running.url(prefix)}")
        token_url = running.token_url(prefix)
        if token_url is not None:
            tokens.append(f"{name}={token_url}")
    env = {"FLEET_PROVIDER_URLS": ",".join(urls)}
    if tokens:
        env["FLEET_PROVIDER_TOKEN_URLS"] = ",".join(tokens)
    return env


def price_everything(path: Path) -> Path:
    """An operator's price file giving every provider's every model a price, so each
    family's audit rows carry a known cost (the shipped table leaves mock models out)."""
    lines = ["as_of = 2026-11-22", 'currency = "USD"']
    for package in BUILTIN:
        lines += [
            f'[providers.{spec_of(package).name}.models."*"]',
            'source = "tests"',
            "input = 1.5",
            "cached_input = 0.5",
            "cache_write = 2.0",
            "output = 4.0",
            "embed = 0.25",
            "rerank = 0.05",
            "rerank_search_units = 2.0",
        ]
    path.write_text("\n".join(lines) + "\n")
    return path


@pytest.fixture(scope="module")
async def audit_db(database_url: str) -> AsyncIterator[str]:
    """A database of this module's own: the session's vault database may hold rows
    under other keys (tests of wrong keys), which would stop a worker starting."""
    url = with_database(database_url, f"llm_fleet_audit_{uuid.uuid4().hex[:12]}")
    await migrate(url)
    yield url
    await drop_database(database_url, url)


@pytest.fixture
async def worker(
    spawn_worker: SpawnWorker, cloud_mock: RunningMock, audit_db: str, tmp_path: Path
) -> WorkerProc:
    """With the audit trail on (DATABASE_URL set) and every model priced."""
    env = {
        **provider_env(cloud_mock),
        "DATABASE_URL": audit_db,
        "FLEET_PRICES_FILE": str(price_everything(tmp_path / "prices.toml")),
    }
    return await spawn_worker(env=env)


# Mocks that put the provider's own request id on every answer, as their providers do
# (Bedrock's and Mistral's mocks do on some endpoints only).
SENDS_REQUEST_ID = {"openai", "anthropic", "azure", "huggingface"}


async def assert_audited(db: str, finals: list[Final], *, request_ids: bool = False) -> None:
    """One row per answered attempt, with the final frame's tokens and cost (and the
    provider's request id, where the provider sends one)."""
    conn = await asyncpg.connect(db)
    try:
        for final in finals:
            rows = await conn.fetch(
                "SELECT * FROM audit_attempts WHERE request_id = $1 AND producer = $2",
                final.request_id,
                TENANT,
            )
            assert len(rows) == 1, (final.request_id, rows)
            row, usage = rows[0], final.usage
            assert row["status"] == "ok" and row["attempt"] == final.attempt
            assert (row["provider"], row["model"]) == (final.target.provider, final.target.model)
            for name in ("input_tokens", "output_tokens", "cached_input_tokens", "search_units"):
                assert (row[name] or 0) == (getattr(usage, name) or 0), (name, row, usage)
            assert final.metrics.cost_usd is not None, final
            assert row["cost_usd"] == pytest.approx(final.metrics.cost_usd)
            assert bool(row["provider_request_id"]) or not request_ids, row
            assert row["ttft_ms"] == pytest.approx(final.metrics.ttft_ms, abs=0.01) or (
                row["ttft_ms"] is None and final.metrics.ttft_ms is None
            )
    finally:
        await conn.close()


def target(keyring: Keyring, package: str, model: str, fields: dict[str, str]) -> Target:
    name = spec_of(package).name
    envelope = seal(keyring, name, fields, tenant=TENANT)
    return Target(provider=name, model=model, credential=Credential(sealed=envelope))


@pytest.mark.parametrize("package", BUILTIN)
async def test_every_capability_through_the_fleet(
    package: str, worker: WorkerProc, client: FleetClient, keyring: Keyring, audit_db: str
) -> None:
    capabilities = spec_of(package).capabilities
    finals: list[Final] = []
    good = target(keyring, package, f"mock-fleet-{uuid.uuid4().hex[:6]}", good_fields(package))

    if Capability.CHAT in capabilities:
        answer = await client.chat(good, HELLO)
        finals.append(answer)
        assert answer.message is not None and answer.message.text()
        assert answer.finish_reason == "stop"
        assert answer.usage.input_tokens > 0 and answer.usage.output_tokens > 0

    if Capability.STREAM in capabilities:
        texts: list[str] = []
        final: Final | None = None
        async for event in client.stream_chat(good, HELLO):
            if isinstance(event, Delta):
                texts.append(event.text)
            elif isinstance(event, Final):
                final = event
        assert final is not None  # deltas may arrive coalesced (FLEET_COALESCE_MS)
        finals.append(final)
        assert answer.message is not None and "".join(texts) == answer.message.text()
        assert final.usage == answer.usage

    if Capability.TOOLS in capabilities:
        called = await client.chat(good, TOOL_PROMPT, tools=TOOLS)
        finals.append(called)
        assert called.finish_reason == "tool_calls"
        calls = called.message.tool_calls if called.message else None
        assert calls and {c.name for c in calls} == {t.name for t in TOOLS}

    if Capability.EMBED in capabilities:
        embedded = await client.embed(good, ["one", "two", "three"])
        finals.append(embedded)
        assert embedded.embeddings is not None and embedded.embeddings.count == 3
        assert len(embedded.embeddings.vectors()[2]) == embedded.embeddings.dims

    if Capability.RERANK in capabilities:
        documents = ["cats and dogs", "the queue is durable", "one queue", "a durable queue"]
        ranked = await client.rerank(good, "durable queue", documents, top_n=3)
        finals.append(ranked)
        items = ranked.rerank or []
        assert len(items) == 3 and {i.index for i in items[:2]} == {1, 3}, items
        assert items[0].score >= items[1].score >= items[2].score
        assert ranked.usage.search_units or ranked.usage.total_tokens

    if Capability.VERIFY in capabilities:
        assert (await client.verify(good)).ok
        wrong = dict(mock_of(package).credentials.wrong)
        refused = await client.verify(target(keyring, package, "mock-verify", wrong))
        assert not refused.ok and refused.detail

    await assert_audited(audit_db, finals, request_ids=package in SENDS_REQUEST_ID)


@pytest.mark.parametrize("package", BUILTIN)
async def test_credentials_never_leak(
    package: str,
    worker: WorkerProc,
    amqp_url: str,
    keyring: Keyring,
    cloud_mock: RunningMock,
    dead_letters: Any,
    vault: Vault,
    vault_sql: asyncpg.Connection,
) -> None:
    secrets = canaries(package)
    assert secrets, f"{package}: its mock names no canary"
    frames: list[bytes] = []
    client = FleetClient(amqp_url, default_timeout=60)
    original = client._on_reply

    async def tap(message: Any) -> None:
        frames.append(message.body)
        await original(message)

    client._on_reply = tap  # type: ignore[method-assign]
    failing = f"mock-leak-500-{uuid.uuid4().hex[:6]}"
    filtered = f"mock-leak-filter-{uuid.uuid4().hex[:6]}"
    await mock_admin(
        cloud_mock, "POST", "/_mock/faults", {"spec": "500", "times": 40, "model": failing}
    )
    await mock_admin(
        cloud_mock, "POST", "/_mock/faults", {"spec": "filtered", "times": 2, "model": filtered}
    )
    fields = good_fields(package)
    wrong = dict(mock_of(package).credentials.wrong)
    capabilities = spec_of(package).capabilities

    async def use(job_target: Target) -> object:
        """The provider's main job: a chat, else embeddings, else a rerank."""
        if Capability.CHAT in capabilities:
            return await client.chat(job_target, HELLO)
        if Capability.EMBED in capabilities:
            return await client.embed(job_target, ["leak check"])
        return await client.rerank(job_target, "leak", ["leak check", "other"])

    async with client:
        good = target(keyring, package, "mock-leak", fields)
        if Capability.STREAM in capabilities:
            async for _ in client.stream_chat(good, HELLO):
                pass
        await use(good)
        assert (await client.verify(good)).ok
        with pytest.raises(FleetError):  # retried, then given up: the retry path is logged
            await use(target(keyring, package, failing, fields))
        if mock_of(package).content_filter and Capability.CHAT in capabilities:
            with pytest.raises(ContentFiltered):
                await client.chat(target(keyring, package, filtered, fields), HELLO)
        with pytest.raises(Unauthorized):
            await use(target(keyring, package, "mock-leak", wrong))
        assert not (await client.verify(target(keyring, package, "mock-leak", wrong))).ok
        # Dead-lettered while carrying the sealed credential: sealed for this provider,
        # sent to another, it cannot be opened.
        misdirected = Target(provider="mock", model="mock-x", credential=good.credential)
        with pytest.raises(FleetError):
            await client.chat(misdirected, HELLO)
    await mock_admin(cloud_mock, "DELETE", "/_mock/faults")
    # At rest: the vault's table holds ciphertext only.
    await vault.add("default", spec_of(package).name, "leak-check", fields)
    await vault.add("default", spec_of(package).name, "leak-check-wrong", wrong)
    rows = await vault_sql.fetch("SELECT * FROM credentials")
    stored = "".join(repr(dict(row)) for row in rows)

    logs = worker.logs()
    assert "provider_retry" in logs
    dead = await dead_letters()
    assert dead
    assert sum(len(decode_frames(f)) for f in frames) > 5
    for value in secrets:
        raw = value.encode()
        assert value not in logs, f"{package}: a credential value is in the worker's logs"
        assert not [f for f in frames if raw in f], f"{package}: a credential value in a frame"
        for msg in dead:
            assert raw not in msg.body and raw not in encode(dict(msg.headers or {}))
        assert value not in stored, f"{package}: a credential value stored in the clear"


async def test_add_with_verify_tells_a_wrong_key_from_a_wrong_place(
    cloud_mock: RunningMock,
    spawn_worker: SpawnWorker,
    fleet_cli: RunCli,
    vault_sql: asyncpg.Connection,
) -> None:
    """`creds add --verify` stores nothing the provider refuses, and says why in terms an
    operator can act on: a refused key, a project that is not there, a dead endpoint."""
    await spawn_worker(env={**provider_env(cloud_mock), "FLEET_RETRY_ATTEMPTS": "1"})

    async def add(provider: str, fields: dict[str, str]) -> CliResult:
        name = uuid.uuid4().hex
        args = ("creds", "add", "--tenant", TENANT, "--provider", provider, "--name", name)
        args += ("--verify",)
        return await fleet_cli(*args, stdin=json.dumps(fields))

    wrong_key = await add("bedrock", dict(mock_of("bedrock").credentials.wrong))
    assert wrong_key.code == 1 and "refused the credential" in wrong_key.err, wrong_key.err
    assert "InvalidSignature" in wrong_key.err or "signature" in wrong_key.err.lower()

    wrong_project = await add("vertex", {**good_fields("vertex"), "project": "no-such-project"})
    assert wrong_project.code == 1 and "not_found" in wrong_project.err, wrong_project.err
    assert "no-such-project" in wrong_project.err

    dead = await add("gemini", {"api_key": CANARY_KEY, "base_url": "http://127.0.0.1:9/v1beta"})
    assert dead.code == 1 and "provider_unavailable" in dead.err, dead.err

    for result in (wrong_key, wrong_project, dead):
        assert "not stored" in result.err
        for value in canaries("bedrock") + canaries("vertex") + [CANARY_KEY]:
            assert value not in result.out + result.err
    assert await vault_sql.fetchval("SELECT count(*) FROM credentials") == 0

    stored = await add("bedrock", dict(mock_of("bedrock").credentials.good))
    assert stored.code == 0 and "verified" in stored.err, stored.err
    assert await vault_sql.fetchval("SELECT count(*) FROM credentials") == 1
