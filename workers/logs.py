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

LogFormat = Literal["json", "console"]
REDACTED = "[redacted]"
_SENSITIVE_KEY = re.compile(
    r"(api[_-]?key|authorization|secret|password|passwd|token|sealed|credential_value)", re.I
)


class SecretValues:
    """Plaintext secrets currently open in this process, scrubbed from every log event.

    Key-name redaction alone is not enough: a provider error or a third-party log
    line can carry a key inside free text, so values are matched too.
    """

    def __init__(self) -> None:
        self._counts: dict[str, int] = {}
        self._lock = threading.Lock()

    @contextmanager
    def holding(self, values: list[str]) -> Iterator[None]:
        live = [v for v in values if len(v) >= 6]  # short values would scrub ordinary words
        with self._lock:
            for v in live:
                self._counts[v] = self._counts.get(v, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                for v in live:
                    n = self._counts.get(v, 0) - 1
                    if n <= 0:
                        self._counts.pop(v, None)
                    else:
                        self._counts[v] = n

    def scrub(self, text: str) -> str:
        for v in tuple(self._counts):
            if v in text:
                text = text.replace(v, REDACTED)
        return text


LIVE_SECRETS = SecretValues()


class Redactor:
    """Processor: blank sensitive keys and scrub live secret values from all strings."""

    __slots__ = ("_secrets",)

    def __init__(self, secrets: SecretValues) -> None:
        self._secrets = secrets

    def __call__(self, logger: WrappedLogger, name: str, event: EventDict) -> EventDict:
        for key, value in list(event.items()):
            if _SENSITIVE_KEY.search(key):
                event[key] = REDACTED
            else:
                event[key] = self._clean(value)
        return event

    def _clean(self, value: Any) -> Any:
        if isinstance(value, str):
            return self._secrets.scrub(value)
        if isinstance(value, MutableMapping):
            return {
                k: REDACTED if isinstance(k, str) and _SENSITIVE_KEY.search(k) else self._clean(v)
                for k, v in value.items()
            }
        if isinstance(value, list | tuple):
            return [self._clean(v) for v in value]
        return value


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
