"""A prediction's life: create it, wait for it, read it, and cancel it when we leave early.

* Create: `POST` to the model's route with `{"input", "version"?, "stream"?}`. A
  whole answer asks the server to hold the request (`Prefer: wait=N`) for at most
  `N` seconds, `N` under the pool's read timeout, so a short answer comes back
  finished in one round trip; `N` is left out (pure polling) when the read timeout
  is too short to allow a whole second.
* Wait: while `starting` or `processing`, `GET /predictions/{id}` after 0.25 s, then
  twice as long each time up to 2 s. A poll that fails in a retryable way is tried
  again a few times (the prediction runs on regardless; failing the job would pay
  for a second one).
* Cancel: `POST /predictions/{id}/cancel` whenever we stop following a prediction
  that has not finished (the job was cancelled, the stream's reader left, a poll or
  the stream failed): it would run, and bill, to the end otherwise. Best effort,
  shielded from the cancellation that caused it, bounded in time, and never raised
  in place of what ended the call.

Ids are checked before they go into a path, and `get`/`cancel` use this API's own
routes rather than the prediction's `urls`, so the credential only goes where the
stream URL check (`stream_url`) allows.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import logging
import math
import re
from collections.abc import Mapping
from typing import Any, Final

import httpx

from contracts.errors import FleetError, ProviderUnavailable
from providers.core.api import ApiClient
from providers.core.types import Secret
from providers.replicate.errors import retry_after_in_body
from providers.replicate.mapping import Target

__all__ = [
    "CANCEL_SECONDS",
    "TERMINAL",
    "PredictionApi",
    "Predictions",
    "prefer_wait",
]

log = logging.getLogger("llm_fleet.providers.replicate")

TERMINAL: Final = frozenset({"succeeded", "failed", "canceled"})
MAX_WAIT: Final = 60  # the most `Prefer: wait=N` may ask for
POLL_FIRST: Final = 0.25
POLL_MAX: Final = 2.0
POLL_RETRIES: Final = 3
CANCEL_SECONDS: Final = 5.0
_ID: Final = re.compile(r"[A-Za-z0-9_-]{1,128}")

# Between two polls (a seam for tests that count and skip the waits).
_sleep = asyncio.sleep

# Cancels still in flight after their caller moved on (kept from the GC).
_BACKGROUND: set[asyncio.Task[None]] = set()


def prefer_wait(read_timeout: float) -> int | None:
    """The `Prefer: wait=N` a pool with this read timeout can afford: the server
    answers after N seconds at worst, so N stays a tenth under the timeout."""
    seconds = min(MAX_WAIT, math.floor(read_timeout * 0.9))
    return seconds if seconds >= 1 else None


class PredictionApi(ApiClient):
    """`ApiClient` that also takes absolute URLs (a prediction's stream URL), and
    reads the wait a 429 body names when no `Retry-After` header did."""

    def url(self, secret: Secret, path: str) -> str:
        if path.startswith(("https://", "http://")):
            return path
        return super().url(secret, path)

    def error(self, response: httpx.Response, secret: Secret) -> FleetError:
        error = super().error(response, secret)
        if error.retryable and error.retry_after is None:
            with contextlib.suppress(ValueError):
                error.retry_after = retry_after_in_body(json.loads(response.content))
        return error


class Predictions:
    """Predictions of one adapter; see the module docstring."""

    def __init__(self, api: PredictionApi, wait: int | None) -> None:
        self._api = api
        self._wait = wait

    @property
    def name(self) -> str:
        return self._api.name

    async def create(
        self, target: Target, model_input: Mapping[str, Any], secret: Secret, *, stream: bool
    ) -> dict[str, Any]:
        body: dict[str, Any] = {"input": model_input}
        if target.version is not None:
            body["version"] = target.version
        headers = None
        if stream:
            body["stream"] = True  # older models only open a stream when asked
        elif self._wait is not None:
            headers = {"Prefer": f"wait={self._wait}"}
        prediction = await self._api.json("POST", target.path, secret, body, headers=headers)
        self.id_of(prediction)
        return prediction

    def id_of(self, prediction: Mapping[str, Any]) -> str:
        value = prediction.get("id")
        if not isinstance(value, str) or not _ID.fullmatch(value):
            raise ProviderUnavailable(f"{self.name}: prediction answer without a usable id")
        return value

    async def get(self, prediction_id: str, secret: Secret) -> dict[str, Any]:
        return await self._api.json("GET", f"/predictions/{prediction_id}", secret)

    async def until_finished(self, prediction: dict[str, Any], secret: Secret) -> dict[str, Any]:
        """The prediction once `succeeded`, `failed` or `canceled`, polled with backoff."""
        prediction_id = self.id_of(prediction)
        delay = POLL_FIRST
        failures = 0
        while prediction.get("status") not in TERMINAL:
            await _sleep(delay)
            try:
                prediction = await self.get(prediction_id, secret)
            except FleetError as exc:
                failures += 1
                if not exc.retryable or failures > POLL_RETRIES:
                    raise
                delay = max(delay, min(exc.retry_after or 0.0, 10.0))
                continue
            failures = 0
            delay = min(delay * 2, POLL_MAX)
        return prediction

    async def cancel_quietly(
        self, prediction_id: str, secret: Secret, cause: BaseException
    ) -> None:
        """Ask for the prediction to be cancelled; see the module docstring.

        `cause` is what made us leave. A second cancellation of our task while the
        cancel is sent stops the wait; it is raised unless `cause` already is one.
        """
        task = asyncio.ensure_future(self._cancel(prediction_id, secret))
        _BACKGROUND.add(task)
        task.add_done_callback(_BACKGROUND.discard)
        try:
            async with asyncio.timeout(CANCEL_SECONDS):
                await asyncio.shield(task)
        except asyncio.CancelledError:
            if not isinstance(cause, asyncio.CancelledError):
                raise
        except Exception as exc:  # what ended the call matters, not the cancel's fate
            reason = exc.message if isinstance(exc, FleetError) else type(exc).__name__
            log.warning("replicate prediction cancel failed: %s", reason)

    async def _cancel(self, prediction_id: str, secret: Secret) -> None:
        response = await self._api.send("POST", f"/predictions/{prediction_id}/cancel", secret)
        if response.status_code >= 400:
            # Already finished, or gone: nothing left to stop.
            log.info("replicate prediction cancel answered HTTP %d", response.status_code)

    def stream_url(self, prediction: Mapping[str, Any], secret: Secret) -> str | None:
        """The prediction's stream URL, if it has one the credential may be sent to:
        this API's own host, or (over https) a sibling of it, as Replicate serves
        streams from `stream.replicate.com` beside `api.replicate.com`."""
        urls = prediction.get("urls")
        url = urls.get("stream") if isinstance(urls, dict) else None
        if not isinstance(url, str) or not url:
            return None
        try:
            target = httpx.URL(url)
            base = httpx.URL(self._api.url(secret, "/"))
        except (httpx.InvalidURL, TypeError):
            return None
        return url if _may_send_credential(base, target) else None


def _may_send_credential(base: httpx.URL, target: httpx.URL) -> bool:
    if target.scheme not in ("http", "https") or not target.host:
        return False
    if (target.scheme, target.host, target.port) == (base.scheme, base.host, base.port):
        return True
    if target.scheme != "https" or _is_ip(base.host):
        return False
    parent = base.host.partition(".")[2]
    return "." in parent and target.host.endswith("." + parent)


def _is_ip(host: str) -> bool:
    try:
        ipaddress.ip_address(host.strip("[]"))
    except ValueError:
        return False
    return True
