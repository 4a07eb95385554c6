"""structlog set-up: JSON (or console) logs with per-job context and secret redaction."""

from __future__ import annotations

import logging
import re
import sys
import threading
from collections.abc import Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, Literal, TextIO

import structlog
from structlog.typing import EventDict, Processor, WrappedLogger

from providers.core.http import SecretForms, contains_secret, scrub_forms

LogFormat = Literal["json", "console"]
REDACTED = "[redacted]"
_SENSITIVE_KEY = re.compile(
    r"(api[_-]?key|authorization|secret|password|passwd|token|sealed|credential_value)", re.I
)


class SecretValues:
    """Plaintext secrets currently open in this process, scrubbed from every log event.

    Key-name redaction alone is not enough: a provider error or a third-party log
    line can carry a key inside free text, so values are matched too, in every
    form `providers.core.http.scrub` knows (percent-encoded, inside base64,
    wrapped, cut short): one scrubber for messages and logs.
    """

    def __init__(self) -> None:
        # value -> (jobs holding it, its forms): forms are worked out once per value,
        # when it is first held, not on every log line.
        self._held: dict[str, tuple[int, SecretForms]] = {}
        self._lock = threading.Lock()

    @contextmanager
    def holding(self, values: list[str]) -> Iterator[None]:
        # Short values would scrub ordinary words; blank ones are no secret.
        live = [v for v in values if len(v) >= 6 and v.strip()]
        with self._lock:
            fresh = [v for v in live if v not in self._held]
        forms = {v: SecretForms(v) for v in fresh}  # worked out outside the lock
        with self._lock:
            for v in live:
                count, held = self._held.get(v, (0, None))
                found = held or forms.get(v) or SecretForms(v)
                self._held[v] = (count + 1, found)
        try:
            yield
        finally:
            with self._lock:
                for v in live:
                    count, held = self._held.get(v, (0, None))
                    if count <= 1 or held is None:
                        self._held.pop(v, None)
                    else:
                        self._held[v] = (count - 1, held)

    def forms(self) -> list[SecretForms]:
        return [forms for _, forms in tuple(self._held.values())]

    def scrub(self, text: str) -> str:
        return scrub_forms(text, self.forms())


LIVE_SECRETS = SecretValues()


class Redactor:
    """Processor: blank sensitive keys and scrub live secret values from all strings."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: SecretValues) -> None:
        self._secrets = secrets

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
        forms = self._secrets.forms()
        # One look over all of the event's strings at once first: most events hold no
        # secret, and the search costs about as much for one short string as for all.
        if forms and not contains_secret("\n".join(_strings(event)), forms):
            forms = []
        for key, value in list(event.items()):
            if _SENSITIVE_KEY.search(key):
                event[key] = REDACTED
            else:
                event[key] = self._clean(value, forms)
        return event

    def _clean(self, value: Any, forms: list[SecretForms]) -> Any:
        if isinstance(value, str):
            return scrub_forms(value, forms) if forms else value
        if isinstance(value, MutableMapping):
            return {
                k: REDACTED
                if isinstance(k, str) and _SENSITIVE_KEY.search(k)
                else self._clean(v, forms)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._clean(v, forms) for v in value]
        return value


def _strings(value: Any) -> Iterator[str]:
    """Every string `Redactor._clean` would scrub in `value`."""
    if isinstance(value, str):
        yield value
    elif isinstance(value, MutableMapping):
        for v in value.values():
            yield from _strings(v)
    elif isinstance(value, list | tuple):
        for v in value:
            yield from _strings(v)


def configure_logging(
    fmt: LogFormat = "json", level: str = "INFO", stream: TextIO | None = None
) -> None:
    """Route structlog and stdlib logging (aio-pika, httpx…) through one redacting pipeline."""
    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
        Redactor(LIVE_SECRETS),
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if fmt == "json"
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[*shared, structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=True,
    )
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=shared,
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, renderer],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(level.upper())
    # Per-request INFO lines from these libraries would drown the job log.
    for noisy in ("httpx", "httpcore", "aiormq", "aio_pika", "aiohttp.access"):
        logging.getLogger(noisy).setLevel(logging.WARNING)
