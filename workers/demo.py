"""`llm-fleet demo`: a mock provider, a small worker fleet, a streamed answer and a backfill."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import signal
import socket
import sys
import tempfile
from asyncio import FIRST_COMPLETED
from collections.abc import Awaitable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from contracts.brokers import DEFAULT_AMQP_URL
from contracts.client import FleetClient, Restart
from contracts.frames import Delta, Final
from contracts.jobs import Credential, Message, Target
from providers.mock.app import mock_providers
from workers.crypto import Keyring, seal

MOCK_KEY = "mock-demo-key"
EMBED_BATCH = 20
READY_WITHIN = 30.0  # seconds for the whole fleet to come up


class DemoFailed(Exception):
    """The demo cannot go on; the message says why in one line for the operator."""


@dataclass(slots=True)
class Child:
    """A process the demo started, with a log of its own to quote when it fails."""

    name: str
    proc: asyncio.subprocess.Process
    log: Path

    def reason(self) -> str:
        """The last thing it wrote: a refusing worker's own explanation (its SystemExit
        message, a settings error, or a traceback's final line)."""
        lines = [line.strip() for line in self.log.read_text(errors="replace").splitlines()]
        said = [line for line in lines if line]
        return said[-1] if said else "(it wrote nothing)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_http(url: str, *, check: str | None = None) -> None:
    """Poll until `url` answers 200 (or, for a readiness page, until `check` is true)."""
    async with httpx.AsyncClient() as http:
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = await http.get(url, headers={"Authorization": f"Bearer {MOCK_KEY}"})
                if check is None and r.status_code == 200:
                    return
                if check is not None and r.json().get("checks", {}).get(check):
                    return
            await asyncio.sleep(0.1)


async def wait_ready(
    children: Sequence[Child], probes: Sequence[Awaitable[None]], within: float = READY_WITHIN
) -> None:
    """Return once every probe has passed. A child that exits first ends the wait at
    once with its reason: a worker that refuses to start never becomes ready."""
    ready: asyncio.Future[Any] = asyncio.ensure_future(asyncio.gather(*probes))
    exits: dict[asyncio.Future[Any], Child] = {
        asyncio.ensure_future(child.proc.wait()): child for child in children
    }
    waiting = [ready, *exits]
    try:
        done, _ = await asyncio.wait(waiting, timeout=within, return_when=FIRST_COMPLETED)
        if ready in done:
            ready.result()
            return
        for exited in done:
            child = exits[exited]
            raise DemoFailed(
                f"{child.name} stopped (exit code {child.proc.returncode}): {child.reason()}"
            )
        raise DemoFailed(f"the fleet was not ready within {within:.0f}s")
    finally:
        for task in waiting:
            task.cancel()
        await asyncio.gather(*waiting, return_exceptions=True)


async def spawn(name: str, args: list[str], env: Mapping[str, str], logdir: Path) -> Child:
    log = logdir / f"{name}.log"
    with log.open("ab") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "workers.cli",
            *args,
            env=dict(env),
            stdout=out,
            stderr=out,
        )
    return Child(name, proc, log)


async def stop(children: list[Child], grace: float = 15.0) -> None:
    for child in children:
        if child.proc.returncode is None:
            child.proc.send_signal(signal.SIGTERM)
    for child in children:
        try:
            await asyncio.wait_for(child.proc.wait(), grace)
        except TimeoutError:
            child.proc.kill()
            await child.proc.wait()


def demo_env(base: Mapping[str, str]) -> dict[str, str]:
    """The operator's environment, minus what would tie the demo to their fleet.

    The demo seals its one credential with a key of its own, so its workers need
    no credential store: pointed at the operator's, a store holding credentials
    under another key (after `creds add`, say) makes every worker refuse to start.
    """
    env = {k: v for k, v in base.items() if k != "INTEGRATION_CRYPTO_KEYS"}
    env["INTEGRATION_CRYPTO_KEY"] = base64.b64encode(os.urandom(32)).decode()
    env["DATABASE_URL"] = ""  # sealed credentials only
    env.setdefault("AMQP_URL", DEFAULT_AMQP_URL)
    return env


async def run_demo(
    *, n_workers: int, n_texts: int, prompt: str, env: Mapping[str, str] | None = None
) -> int:
    env = demo_env(os.environ if env is None else env)
    amqp_url = env["AMQP_URL"]
    keyring = Keyring.from_env(env)
    mock_port = free_port()
    mock_url = mock_dialect_url(mock_port, "openai")
    # The `mock` provider speaks OpenAI's dialect, `anthropic-mock` Anthropic's: one
    # mock server answers both, each under its own prefix.
    anthropic_url = mock_dialect_url(mock_port, "anthropic")
    env["FLEET_PROVIDER_URLS"] = f"mock={mock_url},anthropic-mock={anthropic_url}"
    logdir = Path(tempfile.mkdtemp(prefix="llm-fleet-demo-"))
    children: list[Child] = []
    try:
        print(
            f"▶ starting the mock provider on :{mock_port} and {n_workers} workers "
            f"(logs in {logdir})"
        )
        children.append(await spawn("mock-provider", _mock_args(mock_port), env, logdir))
        probes = [wait_http(f"{mock_url}/models")]
        for i in range(n_workers):
            port = free_port()
            name = f"demo-worker-{i + 1}"
            wenv = {**env, "FLEET_HEALTH_PORT": str(port), "FLEET_WORKER_ID": name}
            args = ["worker", "--queues", "llm.chat,llm.embed,llm.batch", "--concurrency", "16"]
            children.append(await spawn(name, args, wenv, logdir))
            probes.append(wait_http(f"http://127.0.0.1:{port}/readiness/", check="broker"))
        await wait_ready(children, probes)
        async with FleetClient(amqp_url, name="llm-fleet demo") as client:
            # Sealed for the broker user the demo publishes as: its jobs' tenant.
            tenant = client.user
            target = Target(
                provider="mock",
                model="mock-chat-1",
                credential=Credential(
                    sealed=seal(keyring, "mock", {"api_key": MOCK_KEY}, tenant=tenant)
                ),
            )
            served = ", ".join(p.name for p in await client.providers())
            print(f"▶ the fleet serves: {served}")
            await chat_demo(client, target, prompt)
            claude = Target(
                provider="anthropic-mock",
                model="claude-sonnet-4-5",
                credential=Credential(
                    sealed=seal(keyring, "anthropic-mock", {"api_key": MOCK_KEY}, tenant=tenant)
                ),
            )
            await chat_demo(
                client,
                claude,
                "And briefly, through Anthropic's Messages API?",
                options={"model.max_tokens": 30},
            )
        embed_target = Target(provider="mock", model="mock-embed-1", credential=target.credential)
        await backfill_demo(env, embed_target, n_texts, logdir)
        print(f"\n✔ demo finished; stopping the fleet (logs kept in {logdir})")
        return 0
    except DemoFailed as exc:
        print(f"\n✘ demo stopped: {exc}\n  (logs in {logdir})", file=sys.stderr)
        return 1
    finally:
        await stop(children)


def mock_dialect_url(port: int, prefix: str) -> str:
    """Where the mock serves one provider's dialect, as the fleet's adapter calls it."""
    mock = next(p for p in mock_providers() if p.prefix == prefix)
    return f"http://127.0.0.1:{port}/{mock.prefix}{mock.api_path}"


def _mock_args(port: int) -> list[str]:
    return [
        "mock-provider",
        "--port",
        str(port),
        "--api-key",
        MOCK_KEY,
        "--ttft-ms",
        "250",
        "--tokens-per-sec",
        "40",
        "--tokens",
        "90",
        "--embed-dims",
        "256",
    ]


async def chat_demo(
    client: FleetClient, target: Target, prompt: str, options: Mapping[str, Any] | None = None
) -> None:
    print(f"\n▶ user ({target.provider}): {prompt}\n◀ assistant: ", end="", flush=True)
    messages = [Message(role="user", content=prompt)]
    async for event in client.stream_chat(target, messages, options=options):
        if isinstance(event, Restart):
            print(f"\n  [worker lost; attempt {event.attempt} restarts the answer]\n", end="")
        elif isinstance(event, Delta):
            print(event.text, end="", flush=True)
        elif isinstance(event, Final):
            m, u = event.metrics, event.usage
            ttft = f"{m.ttft_ms:.0f} ms" if m.ttft_ms is not None else "n/a"
            billed_apart = [
                f"{count} {what}"
                for what, count in (
                    ("cached", u.cached_input_tokens),
                    ("reasoning", u.reasoning_tokens),
                )
                if count is not None  # reported by the provider
            ]
            usage = f"{u.input_tokens} in / {u.output_tokens} out tokens" + (
                f" ({', '.join(billed_apart)})" if billed_apart else ""
            )
            # The mock's price is made up (workers/prices.toml says so); unknown is not $0.
            cost = "unknown" if m.cost_usd is None else f"${m.cost_usd:.6f} (mock price)"
            print(
                f"\n\n  usage: {usage}, cost {cost}"
                f"\n  metrics: time to first token {ttft}, total {m.total_ms:.0f} ms, "
                f"queue {m.queue_ms or 0:.1f} ms, attempt {event.attempt}, retries {m.retries}, "
                f"frames {m.frames}, answered by {event.target.provider}/{event.target.model}"
            )


async def backfill_demo(
    env: Mapping[str, str], target: Target, n_texts: int, workdir: Path
) -> None:
    """Run `llm-fleet backfill` on a small corpus as a user would, then once more: the
    second run finds everything done and sends nothing."""
    corpus, output = workdir / "corpus.jsonl", workdir / "embeddings.jsonl"
    with corpus.open("w") as out:
        for i in range(n_texts):
            text = f"document {i}: the quick brown fox number {i} jumps"
            out.write(json.dumps({"id": f"doc-{i}", "text": text}) + "\n")
    args = [
        "backfill",
        "--input",
        str(corpus),
        "--output",
        str(output),
        "--provider",
        target.provider,
        "--model",
        target.model,
        "--batch-size",
        str(EMBED_BATCH),
        "--no-cache",  # the demo has no database
    ]
    assert target.credential.sealed is not None
    benv = {**env, "FLEET_SEALED_CREDENTIAL": target.credential.sealed}
    shown = " ".join(["llm-fleet", *args]).replace(str(workdir) + "/", "")
    print(f"\n▶ embedding backfill of {n_texts} texts (in {workdir}):\n  $ {shown}")
    for run in range(2):
        if run:
            print("▶ the same command again (as after a crash): it resumes, here with nothing left")
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "workers.cli", *args, env=benv
        )
        if await proc.wait() != 0:
            raise DemoFailed(f"the backfill failed (exit code {proc.returncode})")
    with output.open() as written:
        first = json.loads(written.readline())
    print(
        f"  {output.name}: {n_texts} rows like "
        f'{{"id": "{first["id"]}", "embedding": [{first["embedding"][0]:.4f}, …]}} '
        f"({len(first['embedding'])} dims)"
    )
