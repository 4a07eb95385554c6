"""The worker's settings, built once at start-up from the environment and passed down."""

from __future__ import annotations

import ipaddress
import math
import os
import re
import socket
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from typing import Any

from contracts.brokers import DEFAULT_AMQP_URL, broker_urls
from contracts.codec import DEFAULT_MAX_JOB_BYTES
from contracts.topology import (
    DEFAULT_BROKER_DELIVERY_LIMIT,
    DEFAULT_DELIVERY_LIMIT,
    JOB_QUEUES,
    QUEUE_BATCH,
    QUEUE_CHAT,
    QUEUE_EMBED,
)
from providers.core.http import HttpSettings
from providers.retry import RetryPolicies, RetryPolicy
from workers.logs import LogFormat

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/llm_fleet"
# Files a container runtime leaves at the root of a container (Docker, Podman). Inside one,
# the health port must answer on the container's interface for the orchestrator's probes;
# port publishing, not the bind address, decides who else reaches it.
CONTAINER_MARKERS = ("/.dockerenv", "/run/.containerenv")
_HOST_LABEL = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,61}[A-Za-z0-9])?")


class ConfigError(ValueError):
    """A setting is missing or malformed; raised at start-up, never mid-job."""


def _float(env: Mapping[str, str], name: str, default: float) -> float:
    try:
        return float(env[name]) if name in env else default
    except ValueError:
        raise ConfigError(f"{name} must be a number, got {env[name]!r}") from None


def _int(env: Mapping[str, str], name: str, default: int) -> int:
    try:
        return int(env[name]) if name in env else default
    except ValueError:
        raise ConfigError(f"{name} must be an integer, got {env[name]!r}") from None


def in_container() -> bool:
    return any(os.path.exists(marker) for marker in CONTAINER_MARKERS)


def default_health_host() -> str:
    """Loopback on a host, where /metrics would otherwise be open to the network; every
    interface of the container inside one (Kubernetes under containerd leaves no marker:
    set FLEET_HEALTH_HOST=0.0.0.0 there)."""
    return "0.0.0.0" if in_container() else "127.0.0.1"


def health_host(text: str) -> str:
    """An IP address or a host name to bind the health port to."""
    host = text.strip()
    try:
        ipaddress.ip_address(host)
    except ValueError:
        labels = host.removesuffix(".").split(".")
        if not (0 < len(host) <= 253 and all(_HOST_LABEL.fullmatch(x) for x in labels)):
            # Refused rather than passed on: "" would make aiohttp bind every interface.
            raise ConfigError(
                "FLEET_HEALTH_HOST / --health-host must be an IP address or a host name "
                f"(0.0.0.0 = every interface, 127.0.0.1 = this machine only); got {text!r}"
            ) from None
    return host


def parse_pairs(text: str, what: str) -> dict[str, str]:
    """`a=x,b=y` → {"a": "x", "b": "y"}."""
    out: dict[str, str] = {}
    for item in filter(None, (s.strip() for s in text.split(","))):
        k, sep, v = item.partition("=")
        if not sep or not k or not v:
            raise ConfigError(f"{what} entries must look like name=value, got {item!r}")
        out[k.strip()] = v.strip()
    return out


def url_pairs(env: Mapping[str, str], name: str) -> dict[str, str]:
    """`provider=url,…` with every URL absolute http(s): a typo is refused at start-up,
    not answered `bad_request` on every job."""
    urls = parse_pairs(env.get(name, ""), name)
    for provider, url in urls.items():
        parts = urllib.parse.urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"{name}: {provider}'s address must be an http(s) URL, got {url!r}")
    return urls


# FLEET_RETRY_<suffix> (every provider) and FLEET_PROVIDER_RETRY_<suffix>=name=value,…
# (those providers only) → the RetryPolicy field each one sets.
_RETRY_SETTINGS = {
    "ATTEMPTS": "max_attempts",
    "BACKOFF_INITIAL": "backoff_base",
    "BACKOFF_MAX": "backoff_cap",
    "MAX_RETRY_AFTER": "max_retry_after",
}
_GLOBAL_RETRY, _PROVIDER_RETRY = "FLEET_RETRY_", "FLEET_PROVIDER_RETRY_"


def _retry_value(suffix: str, text: str, where: str) -> float | int:
    if suffix == "ATTEMPTS":
        try:
            attempts = int(text)
        except ValueError:
            attempts = 0
        if attempts < 1:
            raise ConfigError(
                f"{where} must be an integer of at least 1 (the first try counts); got {text!r}"
            )
        return attempts
    try:
        seconds = float(text)
    except ValueError:
        seconds = -1.0
    if not math.isfinite(seconds) or seconds < 0:
        raise ConfigError(f"{where} must be a number of seconds, 0 or more; got {text!r}")
    return seconds


def _retry_setting(suffix: str, provider: str | None) -> str:
    """The setting's name as the operator wrote it, for error messages."""
    if provider is None:
        return _GLOBAL_RETRY + suffix
    return f"{_PROVIDER_RETRY}{suffix} (for {provider})"


def _retry_policy(
    base: RetryPolicy, values: Mapping[str, str], provider: str | None = None
) -> RetryPolicy:
    """`base` with `values` (setting suffix → text) applied and checked."""
    fields: dict[str, Any] = {
        _RETRY_SETTINGS[suffix]: _retry_value(suffix, text, _retry_setting(suffix, provider))
        for suffix, text in values.items()
    }
    policy = replace(base, **fields)
    if policy.backoff_cap < policy.backoff_base:
        raise ConfigError(
            f"{_retry_setting('BACKOFF_MAX', provider)} ({policy.backoff_cap}) is below "
            f"{_retry_setting('BACKOFF_INITIAL', provider)} ({policy.backoff_base})"
        )
    return policy


def retry_policies(env: Mapping[str, str]) -> RetryPolicies:
    """The retry settings: fleet-wide ones, then per provider on top of them."""
    known = {p + suffix for p in (_GLOBAL_RETRY, _PROVIDER_RETRY) for suffix in _RETRY_SETTINGS}
    unknown = sorted(
        n for n in env if n.startswith((_GLOBAL_RETRY, _PROVIDER_RETRY)) and n not in known
    )
    if unknown:  # a misspelt setting would otherwise be ignored without a word
        raise ConfigError(
            f"unknown retry setting {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        )
    given = {s: env[_GLOBAL_RETRY + s] for s in _RETRY_SETTINGS if _GLOBAL_RETRY + s in env}
    default = _retry_policy(RetryPolicy(), given)
    per_provider: dict[str, dict[str, str]] = {}
    for suffix in _RETRY_SETTINGS:
        name = _PROVIDER_RETRY + suffix
        for provider, text in parse_pairs(env.get(name, ""), name).items():
            per_provider.setdefault(provider, {})[suffix] = text
    return RetryPolicies(
        default,
        {
            provider: _retry_policy(default, values, provider)
            for provider, values in per_provider.items()
        },
    )


_SWITCH = {"on": True, "true": True, "1": True, "yes": True,
           "off": False, "false": False, "0": False, "no": False}  # fmt: skip


def _switch(env: Mapping[str, str], name: str, default: bool) -> bool:
    if name not in env:
        return default
    try:
        return _SWITCH[env[name].strip().lower()]
    except KeyError:
        raise ConfigError(
            f"{name} must be on or off (or true/false, 1/0); got {env[name]!r}"
        ) from None


@dataclass(frozen=True, slots=True)
class AuditSettings:
    """The audit trail (`workers/audit.py`): a row per settled attempt, written before the ack.

    Rows of many jobs go in one statement: a batch leaves when `batch_rows` rows
    wait or `batch_wait` seconds after its first row arrived, one batch at a time
    (the next collects meanwhile). `bodies` also stores scrubbed request and
    response bodies. Settings() leaves it off; from_env turns it on when
    DATABASE_URL is set, unless FLEET_AUDIT=off.
    """

    enabled: bool = False
    batch_wait: float = 0.002
    batch_rows: int = 500
    bodies: bool = False


def audit_settings(env: Mapping[str, str], database_url: str) -> AuditSettings:
    """FLEET_AUDIT, FLEET_AUDIT_BATCH_MS, FLEET_AUDIT_BATCH_ROWS, FLEET_AUDIT_BODIES."""
    audit = AuditSettings(
        enabled=_switch(env, "FLEET_AUDIT", bool(database_url)),
        batch_wait=_float(env, "FLEET_AUDIT_BATCH_MS", 2.0) / 1000.0,
        batch_rows=_int(env, "FLEET_AUDIT_BATCH_ROWS", 500),
        bodies=_switch(env, "FLEET_AUDIT_BODIES", False),
    )
    if audit.enabled and not database_url:
        raise ConfigError("FLEET_AUDIT=on needs DATABASE_URL: the audit trail is in PostgreSQL")
    if not (math.isfinite(audit.batch_wait) and 0 <= audit.batch_wait <= 1):
        raise ConfigError("FLEET_AUDIT_BATCH_MS must be 0 to 1000 (milliseconds)")
    if not 1 <= audit.batch_rows <= 10_000:
        raise ConfigError(f"FLEET_AUDIT_BATCH_ROWS must be 1 to 10000, got {audit.batch_rows}")
    return audit


# OTEL_TRACES_EXPORTER values the worker can honour (the SDK's others need plugins).
TRACE_EXPORTERS = ("otlp", "console")
DEFAULT_SERVICE_NAME = "llm-fleet-worker"


@dataclass(frozen=True, slots=True)
class TracingSettings:
    """Traces (`workers/tracing.py`), off unless an exporter is configured.

    Read from OpenTelemetry's own variables: OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or
    OTEL_EXPORTER_OTLP_ENDPOINT (+ /v1/traces) turn the OTLP exporter on;
    OTEL_TRACES_EXPORTER names exporters outright (otlp, console, none);
    OTEL_SDK_DISABLED=true turns everything off. The SDK reads the rest itself
    (OTEL_EXPORTER_OTLP_HEADERS, OTEL_TRACES_SAMPLER, OTEL_BSP_*, OTEL_RESOURCE_ATTRIBUTES).
    """

    exporters: tuple[str, ...] = ()  # () = off
    endpoint: str = ""  # the OTLP/HTTP traces URL; "" = the exporter's default
    service_name: str = DEFAULT_SERVICE_NAME


def tracing_settings(env: Mapping[str, str]) -> TracingSettings:
    service_name = env.get("OTEL_SERVICE_NAME", "").strip() or DEFAULT_SERVICE_NAME
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return TracingSettings(service_name=service_name)
    endpoint = env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    base = env.get("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    if not endpoint and base:
        endpoint = base.rstrip("/") + "/v1/traces"
    named = [n.strip().lower() for n in env.get("OTEL_TRACES_EXPORTER", "").split(",")]
    named = [n for n in named if n]
    exporters = tuple(n for n in named if n != "none") if named else (("otlp",) if endpoint else ())
    unknown = [n for n in exporters if n not in TRACE_EXPORTERS]
    if unknown:
        raise ConfigError(
            f"OTEL_TRACES_EXPORTER names {', '.join(unknown)}; this worker exports traces "
            f"with {', '.join(TRACE_EXPORTERS)} (or none)"
        )
    if endpoint:
        parts = urllib.parse.urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ConfigError(f"the OTLP traces endpoint must be an http(s) URL, got {endpoint!r}")
    protocol = env.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL") or env.get(
        "OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"
    )
    if "otlp" in exporters and protocol.strip() != "http/protobuf":
        raise ConfigError(
            f"OTLP protocol {protocol!r} is not supported: the worker exports OTLP over "
            "HTTP (http/protobuf); point it at the collector's HTTP port (4318)"
        )
    return TracingSettings(exporters=exporters, endpoint=endpoint, service_name=service_name)


@dataclass(frozen=True, slots=True)
class CoalesceSettings:
    """How frames are batched so the AMQP message rate does not follow the token rate.

    Frames bound for one reply queue travel together; a message leaves as soon as
    the previous one is confirmed and at least `interval` seconds have passed, so
    a first token is sent at once when the queue is quiet. Messages are cut at
    `max_message_bytes` (a single larger frame, e.g. big embeddings, goes alone).
    """

    interval: float = 0.002
    max_message_bytes: int = 1 << 20
    start_hold: float = 0.05  # how long a `start` frame waits to ride with the first delta


@dataclass(frozen=True, slots=True)
class Settings:
    amqp_url: str = DEFAULT_AMQP_URL  # one broker, or several of a cluster, comma-separated
    database_url: str = DEFAULT_DATABASE_URL  # "" = no credential store (sealed credentials only)
    vault_cache_ttl: float = 10.0  # seconds an *encrypted* row may be reused; 0 = always query
    migrations_dir: str = ""  # "" = the SQL shipped with the code
    queues: tuple[str, ...] = (QUEUE_CHAT, QUEUE_EMBED, QUEUE_BATCH)
    concurrency: int = 64  # jobs of each interactive queue at once (its consumer's prefetch)
    batch_concurrency: int = 16  # llm.batch jobs at once (its consumer's prefetch)
    delivery_limit: int = DEFAULT_DELIVERY_LIMIT  # crashes a job may cause
    broker_delivery_limit: int = DEFAULT_BROKER_DELIVERY_LIMIT  # returns of any cause (backstop)
    # How long a job that reached the crash limit waits for release notes that may
    # still be on their way (from workers that lost the broker while holding it).
    release_wait: float = 3.0
    grace_period: float = 30.0
    max_job_bytes: int = DEFAULT_MAX_JOB_BYTES
    health_port: int = 9004
    health_host: str = "127.0.0.1"  # from_env: default_health_host()
    worker_id: str = field(default_factory=lambda: f"{socket.gethostname()}-{os.getpid()}")
    # Operator addresses per provider name (FLEET_PROVIDER_URLS, …_TOKEN_URLS): they
    # replace the provider's default or derived address; a job never names one.
    provider_urls: Mapping[str, str] = field(default_factory=dict)
    provider_token_urls: Mapping[str, str] = field(default_factory=dict)
    coalesce: CoalesceSettings = field(default_factory=CoalesceSettings)
    audit: AuditSettings = field(default_factory=AuditSettings)
    http: HttpSettings = field(default_factory=HttpSettings)
    retry: RetryPolicies = field(default_factory=RetryPolicies)
    tracing: TracingSettings = field(default_factory=TracingSettings)
    reconnect_initial: float = 0.2
    reconnect_cap: float = 30.0
    log_format: LogFormat = "json"
    log_level: str = "INFO"
    # An operator's price file over the shipped table (workers/prices.py); "" = none.
    prices_file: str = ""

    def job_pools(self) -> list[tuple[tuple[str, ...], int]]:
        """The queues consumed, one group per channel, with the prefetch each of their
        consumers gets: `concurrency` for the interactive queues, `batch_concurrency`
        for `llm.batch`."""
        interactive = tuple(q for q in self.queues if q != QUEUE_BATCH)
        pools = [(interactive, self.concurrency)] if interactive else []
        if QUEUE_BATCH in self.queues:
            pools.append(((QUEUE_BATCH,), self.batch_concurrency))
        return pools

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read FLEET_* / AMQP_URL / DATABASE_URL; keyword overrides (from CLI flags) win."""
        env = os.environ if env is None else env
        base = cls(
            amqp_url=env.get("AMQP_URL", DEFAULT_AMQP_URL),
            database_url=env.get("DATABASE_URL", DEFAULT_DATABASE_URL),
            vault_cache_ttl=_float(env, "FLEET_VAULT_CACHE_SECONDS", 10.0),
            migrations_dir=env.get("FLEET_MIGRATIONS_DIR", ""),
            concurrency=_int(env, "FLEET_CONCURRENCY", 64),
            batch_concurrency=_int(env, "FLEET_BATCH_CONCURRENCY", 16),
            delivery_limit=_int(env, "FLEET_DELIVERY_LIMIT", DEFAULT_DELIVERY_LIMIT),
            broker_delivery_limit=_int(
                env, "FLEET_BROKER_DELIVERY_LIMIT", DEFAULT_BROKER_DELIVERY_LIMIT
            ),
            grace_period=_float(env, "FLEET_GRACE_SECONDS", 30.0),
            max_job_bytes=_int(env, "FLEET_MAX_JOB_BYTES", DEFAULT_MAX_JOB_BYTES),
            health_port=_int(env, "FLEET_HEALTH_PORT", 9004),
            health_host=(
                env["FLEET_HEALTH_HOST"] if "FLEET_HEALTH_HOST" in env else default_health_host()
            ),
            provider_urls=url_pairs(env, "FLEET_PROVIDER_URLS"),
            provider_token_urls=url_pairs(env, "FLEET_PROVIDER_TOKEN_URLS"),
            retry=retry_policies(env),
            tracing=tracing_settings(env),
            coalesce=CoalesceSettings(
                interval=_float(env, "FLEET_COALESCE_MS", 2.0) / 1000.0,
                max_message_bytes=_int(env, "FLEET_REPLY_MAX_BYTES", 1 << 20),
            ),
            log_level=env.get("FLEET_LOG_LEVEL", "INFO"),
            audit=audit_settings(env, env.get("DATABASE_URL", DEFAULT_DATABASE_URL)),
            prices_file=env.get("FLEET_PRICES_FILE", ""),
            http=HttpSettings(
                backend="httpcore" if env.get("FLEET_HTTP_BACKEND") == "httpcore" else "aiohttp",
                connect_timeout=_float(env, "FLEET_HTTP_CONNECT_TIMEOUT", 5.0),
                read_timeout=_float(env, "FLEET_HTTP_READ_TIMEOUT", 60.0),
                max_connections=_int(env, "FLEET_HTTP_MAX_CONNECTIONS", 1000),
            ),
        )
        if "FLEET_QUEUES" in env:
            base = replace(base, queues=tuple(q for q in env["FLEET_QUEUES"].split(",") if q))
        if "FLEET_WORKER_ID" in env:
            base = replace(base, worker_id=env["FLEET_WORKER_ID"])
        settings = replace(base, **{k: v for k, v in overrides.items() if v is not None})
        if settings.concurrency < 1:
            raise ConfigError("concurrency must be at least 1")
        if settings.batch_concurrency < 1:
            raise ConfigError("FLEET_BATCH_CONCURRENCY must be at least 1")
        if not 0 <= settings.health_port <= 65535:
            raise ConfigError(f"FLEET_HEALTH_PORT must be 0 to 65535, got {settings.health_port}")
        settings = replace(settings, health_host=health_host(settings.health_host))
        unknown = [q for q in settings.queues if q not in JOB_QUEUES]
        if unknown or not settings.queues:
            raise ConfigError(f"queues must be some of {', '.join(JOB_QUEUES)}; got {unknown}")
        try:
            broker_urls(settings.amqp_url)
        except ValueError:
            raise ConfigError("AMQP_URL must name at least one broker") from None
        if settings.broker_delivery_limit <= settings.delivery_limit:
            raise ConfigError(
                "FLEET_BROKER_DELIVERY_LIMIT must exceed FLEET_DELIVERY_LIMIT: it is the "
                "backstop for returns the crash count cannot see"
            )
        return settings
