"""`llm-fleet top`: a live view of the fleet, redrawn from two scrapes every interval."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import sys

import click
import httpx

from contracts.brokers import DEFAULT_AMQP_URL
from contracts.sealing import parse_ttl
from workers.top import (
    Frame,
    Scrape,
    build_frame,
    metrics_url,
    queue_depths,
    render,
    scrape_workers,
)

_CLEAR = "\x1b[H\x1b[2J"


def _every(text: str) -> float:
    try:
        seconds = parse_ttl(text)
    except ValueError as exc:
        raise click.BadParameter(str(exc), param_hint="--every") from None
    if seconds <= 0:
        raise click.BadParameter("must be more than 0", param_hint="--every")
    return seconds


@click.command("top")
@click.option(
    "--worker",
    "workers",
    multiple=True,
    help="A worker's metrics address: URL, host or host:port (default port 9004); repeatable. "
    "Env FLEET_TOP_WORKERS (comma-separated).",
)
@click.option("--every", default="2s", show_default=True, help="Interval rates are taken over.")
@click.option("--once", is_flag=True, help="Take two scrapes --every apart, print one frame, exit.")
@click.option("--json", "as_json", is_flag=True, help="Print frames as JSON objects, one a line.")
def top(workers: tuple[str, ...], every: str, once: bool, as_json: bool) -> None:
    """Jobs/s, errors and TTFT per provider and model, in-flight per worker, queue depths.

    Reads each worker's /metrics and the broker (AMQP_URL) for queue counts; a
    worker or broker that does not answer is shown as such.
    """
    interval = _every(every)
    listed = workers or tuple(
        w for w in os.environ.get("FLEET_TOP_WORKERS", "").split(",") if w.strip()
    )
    if not listed:
        raise click.UsageError("name the workers: --worker URL (repeatable) or FLEET_TOP_WORKERS")
    urls = [metrics_url(w) for w in listed]
    amqp_url = os.environ.get("AMQP_URL", DEFAULT_AMQP_URL)
    clear = not as_json and sys.stdout.isatty()
    # The frame says when the broker does not answer; aiormq's own log lines would
    # only scribble over the view.
    logging.getLogger("aiormq").setLevel(logging.CRITICAL)
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C is how a live view ends
        asyncio.run(_watch(urls, amqp_url, interval, once=once, as_json=as_json, clear=clear))


async def _watch(
    urls: list[str], amqp_url: str, interval: float, *, once: bool, as_json: bool, clear: bool
) -> None:
    # A scrape should not outlive its interval, but a busy worker gets a second at least.
    timeout = httpx.Timeout(max(1.0, min(interval, 5.0)))
    async with httpx.AsyncClient(timeout=timeout) as http:
        before: dict[str, Scrape | str] = await scrape_workers(http, urls)
        while True:
            await asyncio.sleep(interval)
            after, queues = await asyncio.gather(scrape_workers(http, urls), queue_depths(amqp_url))
            _show(build_frame(before, after, queues, interval), as_json=as_json, clear=clear)
            if once:
                return
            before = after


def _show(frame: Frame, *, as_json: bool, clear: bool) -> None:
    if as_json:
        click.echo(json.dumps(frame.as_json()))
    elif clear:
        click.echo(_CLEAR + render(frame))
    else:
        click.echo(render(frame) + "\n")
