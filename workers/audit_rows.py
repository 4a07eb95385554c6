"""What one audit row holds: an `AttemptRecord` made bounded, storable and secret-free.

Pure functions (no I/O) shared by the writer (`workers.audit`) and the benchmark.
Every free-text value is cut to a bound (the producer controls most of them) and
has NUL characters replaced, which PostgreSQL refuses in text and jsonb: a value
the database would refuse should be fixed here, not found by a failed batch.
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Final

import msgspec

from providers.core.http import SecretForms, scrub_forms, secret_forms
from workers.outcome import AttemptRecord, TargetRef

# The job's metadata map, bounded as the system the fleet replaces bounded its
# metadata table (key varchar(200), value varchar(1000)); the first keys in the
# order the producer sent them are kept.
MAX_METADATA_KEYS: Final = 64
MAX_METADATA_KEY_CHARS: Final = 200
MAX_METADATA_VALUE_CHARS: Final = 1000
MAX_ERROR_CHARS: Final = 1000
MAX_NAME_CHARS: Final = 512  # request id, provider, model: the job contract's own bound
MAX_LABEL_CHARS: Final = 200  # credential id, provider request id, worker, queue, status, kind
MAX_TRIED: Final = 32  # targets failed over before the last one

REDACTED: Final = "[redacted]"
# The one field of a job that opens a credential: a sealed envelope is never stored.
_SECRET_FIELDS: Final = frozenset({"sealed"})

# (column, PostgreSQL type) in the order rows are built; the writer's SQL follows it.
ATTEMPT_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    ("request_id", "text"),
    ("producer", "text"),
    ("submission", "int4"),
    ("attempt", "int4"),
    ("started_at", "timestamptz"),
    ("kind", "text"),
    ("queue", "text"),
    ("worker", "text"),
    ("status", "text"),
    ("error", "text"),
    ("provider", "text"),
    ("model", "text"),
    ("credential_id", "text"),
    ("tried", "jsonb"),
    ("provider_request_id", "text"),
    ("queue_ms", "float4"),
    ("ttft_ms", "float4"),
    ("provider_ms", "float4"),
    ("total_ms", "float4"),
    ("retries", "int4"),
    ("input_tokens", "int8"),
    ("output_tokens", "int8"),
    ("total_tokens", "int8"),
    ("cached_input_tokens", "int8"),
    ("cache_write_tokens", "int8"),
    ("reasoning_tokens", "int8"),
    ("search_units", "int8"),
    ("cost_usd", "float8"),
    ("metadata", "jsonb"),
    ("dead_lettered", "bool"),
    ("reached_provider", "bool"),
)
KEY_COLUMNS: Final = ("request_id", "producer", "submission", "attempt", "started_at")
BODY_COLUMNS: Final[tuple[tuple[str, str], ...]] = (
    *((name, kind) for name, kind in ATTEMPT_COLUMNS if name in KEY_COLUMNS),
    ("request", "jsonb"),
    ("response", "jsonb"),
)

AttemptRow = tuple[Any, ...]
BodyRow = tuple[Any, ...]


@dataclass(frozen=True, slots=True)
class RecordBodies:
    """A job's request and response as JSON text, already scrubbed (`scrubbed_json`)."""

    request: str | None
    response: str | None


def _insert(table: str, columns: Sequence[tuple[str, str]], first: int = 1) -> str:
    names = ", ".join(name for name, _ in columns)
    arrays = ", ".join(f"${first + i}::{kind}[]" for i, (_, kind) in enumerate(columns))
    return f"INSERT INTO {table} ({names}) SELECT * FROM unnest({arrays}) ON CONFLICT DO NOTHING"


# One statement, one round trip, however many rows: each column travels as one array.
# Both inserts skip a row already there (the key of audit_attempts_once), so writing
# a batch again after a commit whose answer was lost changes nothing.
INSERT_ATTEMPTS: Final = _insert("audit_attempts", ATTEMPT_COLUMNS)
# With bodies: both tables in one statement (a data-modifying CTE), so one commit.
INSERT_ATTEMPTS_AND_BODIES: Final = f"WITH attempts AS ({INSERT_ATTEMPTS}) " + _insert(
    "audit_bodies", BODY_COLUMNS, first=len(ATTEMPT_COLUMNS) + 1
)


def no_nul(value: str) -> str:
    """PostgreSQL stores no NUL character in text or jsonb: U+FFFD stands in for it."""
    return value.replace("\x00", "\ufffd") if "\x00" in value else value


def text(value: str | None, limit: int) -> str | None:
    """`value` cut to `limit` characters, NUL replaced."""
    return None if value is None else no_nul(value[:limit])


def bounded_metadata(metadata: Mapping[str, str]) -> dict[str, str]:
    """The first MAX_METADATA_KEYS keys, each cut to MAX_METADATA_KEY_CHARS and its
    value to MAX_METADATA_VALUE_CHARS. Keys that become equal once cut keep the first."""
    out: dict[str, str] = {}
    for key, value in metadata.items():
        if len(out) >= MAX_METADATA_KEYS:
            break
        cut = text(str(key), MAX_METADATA_KEY_CHARS) or ""
        out.setdefault(cut, text(str(value), MAX_METADATA_VALUE_CHARS) or "")
    return out


def _target_json(target: TargetRef) -> dict[str, str | None]:
    return {
        "provider": text(target.provider, MAX_NAME_CHARS),
        "model": text(target.model, MAX_NAME_CHARS),
        "credential_id": text(target.credential_id, MAX_LABEL_CHARS),
    }


def _finite(value: float | None) -> float | None:
    # NaN or infinity would poison every sum over the column.
    return value if value is not None and math.isfinite(value) else None


def started_at(record: AttemptRecord, now: float) -> datetime:
    """When the worker took the delivery; `now` when the record does not say."""
    return datetime.fromtimestamp(record.started_at if record.started_at > 0 else now, UTC)


def attempt_row(record: AttemptRecord, *, now: float) -> AttemptRow:
    """The values of ATTEMPT_COLUMNS for `record`."""
    target = record.target
    if target is None and record.answered is not None:
        target = TargetRef(record.answered.provider, record.answered.model)
    m, u = record.metrics, record.usage
    encode = msgspec.json.encode
    return (
        text(record.request_id, MAX_NAME_CHARS) or None,
        text(record.producer, MAX_NAME_CHARS),
        record.submission,
        record.attempt,
        started_at(record, now),
        text(record.kind, MAX_LABEL_CHARS),
        text(record.queue, MAX_LABEL_CHARS),
        text(record.worker, MAX_LABEL_CHARS),
        text(record.status, MAX_LABEL_CHARS),
        text(record.error, MAX_ERROR_CHARS),
        text(target.provider, MAX_NAME_CHARS) if target else None,
        text(target.model, MAX_NAME_CHARS) if target else None,
        text(target.credential_id, MAX_LABEL_CHARS) if target else None,
        encode([_target_json(t) for t in record.tried[:MAX_TRIED]]).decode(),
        text(record.provider_request_id, MAX_LABEL_CHARS),
        _finite(m.queue_ms) if m else None,
        _finite(m.ttft_ms) if m else None,
        _finite(m.provider_ms) if m else None,
        _finite(m.total_ms) if m else None,
        m.retries if m else 0,
        u.input_tokens if u else None,
        u.output_tokens if u else None,
        u.total_tokens if u else None,
        u.cached_input_tokens if u else None,
        u.cache_write_tokens if u else None,
        u.reasoning_tokens if u else None,
        u.search_units if u else None,
        _finite(m.cost_usd) if m else None,
        encode(bounded_metadata(record.metadata)).decode(),
        record.dead_lettered,
        record.reached_provider,
    )


def body_row(row: AttemptRow, bodies: RecordBodies) -> BodyRow:
    """The bodies' row, keyed like the attempt's `row`."""
    return (*row[: len(KEY_COLUMNS)], _json_text(bodies.request), _json_text(bodies.response))


# A JSON escape of NUL (an odd number of backslashes, then u0000), which jsonb refuses.
_JSON_NUL = re.compile(r"(?<!\\)((?:\\\\)*)\\u0000")


def _json_text(value: str | None) -> str | None:
    return None if value is None else _JSON_NUL.sub(r"\1\\ufffd", value)


def columns(rows: Sequence[tuple[Any, ...]], width: int) -> list[list[Any]]:
    """Rows as columns, the arrays the INSERT statements take."""
    if not rows:
        return [[] for _ in range(width)]
    return [list(column) for column in zip(*rows, strict=True)]


def scrubbed_json(value: object, secret_values: Iterable[str] = ()) -> str:
    """`value` (a job, a final frame's fields, any msgspec-encodable object) as JSON
    text for the bodies table: every string scrubbed of `secret_values` in every form
    the project's scrubber knows (`providers.core.http.scrub_forms`), and a sealed
    credential envelope replaced. Call it while the job's credential is open."""
    forms = secret_forms(secret_values)
    return msgspec.json.encode(_scrub(msgspec.to_builtins(value), forms)).decode()


def _scrub(value: Any, forms: list[SecretForms]) -> Any:
    if isinstance(value, str):
        return no_nul(scrub_forms(value, forms))
    if isinstance(value, dict):
        return {
            k: REDACTED if k in _SECRET_FIELDS and v is not None else _scrub(v, forms)
            for k, v in value.items()
        }
    if isinstance(value, list):
        return [_scrub(v, forms) for v in value]
    return value
