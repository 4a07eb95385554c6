"""`llm-fleet demo`: a mock provider, a small worker fleet, a streamed answer and a backfill."""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import socket
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

import httpx
from tqdm import tqdm

from contracts.brokers import DEFAULT_AMQP_URL
from contracts.client import FleetClient, Restart
from contracts.frames import Delta, Final
from contracts.jobs import Credential, EmbedJob, Message, Target
from workers.crypto import Keyring, seal

MOCK_KEY = "mock-demo-key"
EMBED_BATCH = 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


async def wait_http(url: str, within: float = 30.0, *, check: str | None = None) -> None:
    """Poll until `url` answers 200 (or, for a readiness page, until `check` is true)."""
    give_up = time.monotonic() + within
    async with httpx.AsyncClient() as http:
        while True:
            with contextlib.suppress(httpx.HTTPError, ValueError):
                r = await http.get(url, headers={"Authorization": f"Bearer {MOCK_KEY}"})
                if check is None and r.status_code == 200:
                    return
                if check is not None and r.json().get("checks", {}).get(check):
                    return
            if time.monotonic() > give_up:
                raise TimeoutError(f"{url} did not become ready within {within:.0f}s")
            await asyncio.sleep(0.1)


async def spawn(args: list[str], env: Mapping[str, str], log: Path) -> asyncio.subprocess.Process:
    out = log.open("ab")
    try:
        return await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "workers.cli",
            *args,
            env=dict(env),
            stdout=out,
            stderr=out,
        )
    finally:
        out.close()


async def stop(procs: list[asyncio.subprocess.Process], grace: float = 15.0) -> None:
    for p in procs:
        if p.returncode is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            await asyncio.wait_for(p.wait(), grace)
        except TimeoutError:
            p.kill()
            await p.wait()


async def run_demo(*, n_workers: int, n_texts: int, prompt: str) -> int:
    env = dict(os.environ)
    env.setdefault("INTEGRATION_CRYPTO_KEY", base64.b64encode(os.urandom(32)).decode())
    amqp_url = env.setdefault("AMQP_URL", DEFAULT_AMQP_URL)
    keyring = Keyring.from_env(env)
    mock_port = free_port()
    env["FLEET_PROVIDER_URLS"] = f"mock=http://127.0.0.1:{mock_port}/v1"
    logdir = Path(tempfile.mkdtemp(prefix="llm-fleet-demo-"))
    log = logdir / "fleet.log"
    procs: list[asyncio.subprocess.Process] = []
    try:
        print(f"▶ starting the mock provider on :{mock_port} and {n_workers} workers (logs: {log})")
        procs.append(
            await spawn(
                [
                    "mock-provider",
                    "--port",
                    str(mock_port),
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
                ],
                env,
                log,
            )
        )
        health = []
        for i in range(n_workers):
            port = free_port()
            health.append(f"http://127.0.0.1:{port}/readiness/")
            wenv = {
                **env,
                "FLEET_HEALTH_PORT": str(port),
                "FLEET_WORKER_ID": f"demo-worker-{i + 1}",
            }
            procs.append(
                await spawn(
                    ["worker", "--queues", "llm.chat,llm.embed,llm.batch", "--concurrency", "16"],
                    wenv,
                    log,
                )
            )
        await wait_http(f"http://127.0.0.1:{mock_port}/v1/models")
        await asyncio.gather(*(wait_http(url, check="broker") for url in health))
        target = Target(
            provider="mock",
            model="mock-chat-1",
            credential=Credential(sealed=seal(keyring, "mock", {"api_key": MOCK_KEY})),
        )
        async with FleetClient(amqp_url, name="llm-fleet demo") as client:
            await chat_demo(client, target, prompt)
        embed_target = Target(provider="mock", model="mock-embed-1", credential=target.credential)
        await backfill_demo(amqp_url, embed_target, n_texts)
        print(f"\n✔ demo finished; stopping the fleet (logs kept in {log})")
        return 0
    finally:
        await stop(procs)


async def chat_demo(client: FleetClient, target: Target, prompt: str) -> None:
    print(f"\n▶ user: {prompt}\n◀ assistant: ", end="", flush=True)
    async for event in client.stream_chat(target, [Message(role="user", content=prompt)]):
        if isinstance(event, Restart):
            print(f"\n  [worker lost; attempt {event.attempt} restarts the answer]\n", end="")
        elif isinstance(event, Delta):
            print(event.text, end="", flush=True)
        elif isinstance(event, Final):
            m, u = event.metrics, event.usage
            ttft = f"{m.ttft_ms:.0f} ms" if m.ttft_ms is not None else "n/a"
            print(
                f"\n\n  usage: {u.input_tokens} in / {u.output_tokens} out tokens"
                f"\n  metrics: time to first token {ttft}, total {m.total_ms:.0f} ms, "
                f"queue {m.queue_ms or 0:.1f} ms, attempt {event.attempt}, retries {m.retries}, "
                f"frames {m.frames}, answered by {event.target.provider}/{event.target.model}"
            )


async def backfill_demo(amqp_url: str, target: Target, n_texts: int) -> None:
    """Submit every batch at once, then collect answers from a durable reply queue:
    a backfill that crashes halfway picks its answers up again after a restart."""
    texts = [f"document {i}: the quick brown fox number {i} jumps" for i in range(n_texts)]
    batches = [texts[i : i + EMBED_BATCH] for i in range(0, len(texts), EMBED_BATCH)]
    queue = f"llm.reply.demo-backfill-{os.getpid()}"
    print(f"\n▶ embedding backfill: {n_texts} texts in {len(batches)} jobs (answers to {queue})")
    started = time.monotonic()
    dims = 0
    async with FleetClient(amqp_url, reply_queue=queue, name="llm-fleet demo backfill") as client:
        for i, batch in enumerate(batches):
            job = EmbedJob(v=1, request_id=f"demo-embed-{i}", target=target, inputs=batch)
            await client.submit(job)
        with tqdm(total=n_texts, unit="text", file=sys.stdout) as bar:
            pending = len(batches)
            async for answer in client.results():
                if not isinstance(answer, Final) or answer.embeddings is None:
                    raise RuntimeError(f"backfill job failed: {answer}")
                dims = answer.embeddings.dims
                bar.update(answer.embeddings.count)
                pending -= 1
                if not pending:
                    break
        await client.delete_reply_queue()
    took = time.monotonic() - started
    print(f"  {n_texts} vectors of {dims} dims in {took:.2f}s ({n_texts / took:.0f} vectors/s)")
