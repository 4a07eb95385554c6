"""Audit rows: what an AttemptRecord becomes, bounds, scrubbing, settings, CLI parsing."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from contracts.frames import Answered, Metrics, Usage
from contracts.jobs import ChatJob, Credential, Message, Target
from workers import audit_rows as ar
from workers.audit_query import Follower, parse_age, parse_groups
from workers.config import AuditSettings, ConfigError, Settings, audit_settings
from workers.outcome import AttemptRecord, TargetRef

COLUMNS = [name for name, _ in ar.ATTEMPT_COLUMNS]


def record(**overrides: object) -> AttemptRecord:
    fields: dict[str, object] = {
        "request_id": "req-1",
        "attempt": 2,
        "submission": 1,
        "producer": "tenant-a",
        "kind": "chat",
        "queue": "llm.chat",
        "worker": "w-1",
        "started_at": 1_700_000_000.25,
        "status": "ok",
        "target": TargetRef("openai", "gpt-4o", "cred-1"),
        "tried": [TargetRef("anthropic", "claude-sonnet-4-5", None)],
        "provider_request_id": "req_abc",
        "metrics": Metrics(
            queue_ms=1.5, ttft_ms=250.0, provider_ms=800.0, total_ms=801.0, retries=1, cost_usd=0.25
        ),
        "usage": Usage(
            input_tokens=100,
            output_tokens=50,
            total_tokens=150,
            cached_input_tokens=40,
            reasoning_tokens=10,
        ),
        "metadata": {"user": "u-7", "app": "assistant"},
        "reached_provider": True,
    }
    fields.update(overrides)
    return AttemptRecord(**fields)  # type: ignore[arg-type]


def as_dict(rec: AttemptRecord) -> dict[str, object]:
    return dict(zip(COLUMNS, ar.attempt_row(rec, now=0.0), strict=True))


def test_every_field_lands_in_its_column() -> None:
    row = as_dict(record())
    assert row["request_id"] == "req-1" and row["producer"] == "tenant-a"
    assert (row["submission"], row["attempt"]) == (1, 2)
    assert row["started_at"] == datetime.fromtimestamp(1_700_000_000.25, UTC)
    assert (row["provider"], row["model"], row["credential_id"]) == ("openai", "gpt-4o", "cred-1")
    assert json.loads(str(row["tried"])) == [
        {"provider": "anthropic", "model": "claude-sonnet-4-5", "credential_id": None}
    ]
    assert (row["queue_ms"], row["ttft_ms"], row["provider_ms"], row["total_ms"]) == (
        1.5,
        250.0,
        800.0,
        801.0,
    )
    assert row["retries"] == 1 and row["cost_usd"] == 0.25
    assert (row["input_tokens"], row["output_tokens"], row["total_tokens"]) == (100, 50, 150)
    assert (row["cached_input_tokens"], row["cache_write_tokens"]) == (40, None)
    assert (row["reasoning_tokens"], row["search_units"]) == (10, None)
    assert json.loads(str(row["metadata"])) == {"user": "u-7", "app": "assistant"}
    assert row["reached_provider"] is True and row["dead_lettered"] is False
    assert row["provider_request_id"] == "req_abc" and row["error"] is None


def test_a_refusal_without_usage_keeps_unknowns_null() -> None:
    row = as_dict(
        record(
            request_id="",
            producer=None,
            kind="unknown",
            status="bad_request",
            error="invalid field 'kind'",
            target=None,
            tried=[],
            metrics=None,
            usage=None,
            metadata={},
            started_at=0.0,
            dead_lettered=True,
            reached_provider=False,
        )
    )
    assert row["request_id"] is None and row["producer"] is None  # not "" (a real id)
    assert row["provider"] is None and row["input_tokens"] is None and row["cost_usd"] is None
    assert row["started_at"] == datetime.fromtimestamp(0.0, UTC)  # `now` stands in
    assert row["retries"] == 0 and row["dead_lettered"] is True


def test_unknown_cost_stays_unknown_and_non_finite_numbers_are_dropped() -> None:
    row = as_dict(record(metrics=Metrics(total_ms=float("nan"), cost_usd=None)))
    assert row["cost_usd"] is None and row["total_ms"] is None
    row = as_dict(record(metrics=Metrics(cost_usd=0.0)))
    assert row["cost_usd"] == 0.0  # free is a known price


def test_answered_names_the_target_when_the_record_has_none() -> None:
    row = as_dict(record(target=None, answered=Answered(provider="mistral", model="small")))
    assert (row["provider"], row["model"], row["credential_id"]) == ("mistral", "small", None)


def test_metadata_bounds() -> None:
    many = {f"k{i:03d}" + "K" * 300: "v" * 5000 for i in range(100)}
    kept = ar.bounded_metadata(many)
    assert len(kept) == ar.MAX_METADATA_KEYS
    assert list(kept)[:2] == [k[: ar.MAX_METADATA_KEY_CHARS] for k in list(many)[:2]]
    assert all(len(k) == ar.MAX_METADATA_KEY_CHARS for k in kept)
    assert all(len(v) == ar.MAX_METADATA_VALUE_CHARS for v in kept.values())
    # Keys equal once cut: the first keeps its value.
    assert ar.bounded_metadata({"a" * 250: "first", "a" * 260: "second"}) == {"a" * 200: "first"}


def test_text_bounds_and_nul() -> None:
    row = as_dict(
        record(
            error="e" * 5000,
            request_id="r\x00" + "x" * 1000,
            metadata={"k\x00": "v\x00"},
            tried=[TargetRef("p", "m", str(i)) for i in range(100)],
        )
    )
    assert row["error"] == "e" * ar.MAX_ERROR_CHARS
    assert row["request_id"] == ("r\ufffd" + "x" * 1000)[: ar.MAX_NAME_CHARS]
    assert json.loads(str(row["metadata"])) == {"k\ufffd": "v\ufffd"}
    assert len(json.loads(str(row["tried"]))) == ar.MAX_TRIED


def test_scrubbed_json_removes_the_key_and_sealed_envelopes() -> None:
    key = "sk-live-0123456789abcdefghij"
    job = ChatJob(
        v=1,
        request_id="r",
        target=Target(provider="openai", model="m", credential=Credential(sealed="fleet2.k.t.1.x")),
        messages=[Message(role="user", content=f"my key is {key} and again {key[:20]}")],
        metadata={"note": "nul\x00here"},
    )
    body = ar.scrubbed_json(job, [key])
    assert key not in body and key[:20] not in body and "fleet2.k.t.1.x" not in body
    data = json.loads(body)
    assert data["target"]["credential"] == {"sealed": ar.REDACTED}
    assert data["messages"][0]["content"].startswith("my key is [redacted]")
    assert data["metadata"] == {"note": "nul\ufffdhere"}
    assert (data["request_id"], data["target"]["provider"]) == ("r", "openai")  # the rest as sent


def test_body_row_is_keyed_like_the_attempt_and_json_nul_escapes_are_replaced() -> None:
    row = ar.attempt_row(record(), now=0.0)
    body = ar.body_row(row, ar.RecordBodies(request='{"a":"x\\u0000"}', response=None))
    assert body[: len(ar.KEY_COLUMNS)] == row[: len(ar.KEY_COLUMNS)]
    assert json.loads(body[-2]) == {"a": "x\ufffd"} and body[-1] is None
    literal = '{"a":"\\\\u0000"}'  # a backslash followed by the text u0000: kept
    assert ar.body_row(row, ar.RecordBodies(literal, None))[-2] == literal


def test_insert_statements_name_every_column_once() -> None:
    assert ar.INSERT_ATTEMPTS.count("$") == len(ar.ATTEMPT_COLUMNS)
    assert ar.INSERT_ATTEMPTS_AND_BODIES.count("$") == len(ar.ATTEMPT_COLUMNS) + len(
        ar.BODY_COLUMNS
    )
    assert f"${len(ar.ATTEMPT_COLUMNS) + len(ar.BODY_COLUMNS)}::" in ar.INSERT_ATTEMPTS_AND_BODIES


# -- settings ------------------------------------------------------------------------------


def test_audit_is_on_with_a_database_and_off_without() -> None:
    assert audit_settings({}, "postgresql://db").enabled is True
    assert audit_settings({}, "").enabled is False
    assert audit_settings({"FLEET_AUDIT": "off"}, "postgresql://db").enabled is False
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgresql://db",
            "FLEET_AUDIT_BATCH_MS": "5",
            "FLEET_AUDIT_BATCH_ROWS": "100",
            "FLEET_AUDIT_BODIES": "true",
        }
    )
    assert settings.audit == AuditSettings(
        enabled=True, batch_wait=0.005, batch_rows=100, bodies=True
    )
    assert Settings().audit.enabled is False  # built by hand: off unless asked


@pytest.mark.parametrize(
    ("env", "url", "words"),
    [
        ({"FLEET_AUDIT": "on"}, "", "needs DATABASE_URL"),
        ({"FLEET_AUDIT": "maybe"}, "postgresql://db", "on or off"),
        ({"FLEET_AUDIT_BATCH_ROWS": "0"}, "postgresql://db", "FLEET_AUDIT_BATCH_ROWS"),
        ({"FLEET_AUDIT_BATCH_MS": "-1"}, "postgresql://db", "FLEET_AUDIT_BATCH_MS"),
        ({"FLEET_AUDIT_BATCH_MS": "nan"}, "postgresql://db", "FLEET_AUDIT_BATCH_MS"),
    ],
)
def test_bad_audit_settings_stop_the_start(env: dict[str, str], url: str, words: str) -> None:
    with pytest.raises(ConfigError, match=words):
        audit_settings(env, url)


# -- CLI parsing ---------------------------------------------------------------------------


def test_ages_and_groups() -> None:
    assert parse_age("90d") == timedelta(days=90)
    assert parse_age(" 12h ") == timedelta(hours=12)
    assert parse_age("1.5w") == timedelta(weeks=1.5)
    for bad in ("90", "0d", "d", "3 months", "-1d"):
        with pytest.raises(ValueError):
            parse_age(bad)
    assert parse_groups("tenant, model,day") == ["tenant", "model", "day"]
    for bad in ("tenant,tenant", "price", "tenant;model"):
        with pytest.raises(ValueError):
            parse_groups(bad)


def test_follow_prints_each_row_once_across_the_overlap() -> None:
    t0 = datetime(2026, 1, 1, tzinfo=UTC)

    def row(rid: str, at: datetime) -> dict[str, object]:
        return {
            "request_id": rid,
            "producer": "t",
            "submission": 0,
            "attempt": 1,
            "started_at": at,
            "recorded_at": at,
        }

    follower = Follower(after=t0)
    first = [row("a", t0), row("b", t0 + timedelta(seconds=1))]
    assert follower.fresh(first) == first
    late = row("c", t0)  # committed after b, stamped before it
    again = follower.fresh([*first, late, row("d", t0 + timedelta(seconds=2))])
    assert [r["request_id"] for r in again] == ["c", "d"]
    assert follower.since == t0 + timedelta(seconds=2) - timedelta(seconds=5)
