"""The benchmark suite's `--quick` path runs end to end and writes well-formed results.

Correctness only: no timing assertions. The suite runs once (one subprocess,
against the test vhost); each benchmark's JSON is then checked on its own.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
BENCHMARKS = ("latency", "cpu", "capacity", "embeddings", "audit", "tracing", "backfill", "memory")
MACHINE_KEYS = {"cpu_model", "logical_cores", "ram_gib", "python", "rabbitmq", "git_commit"}
EXPECTED: dict[str, set[str]] = {
    "latency": {"results", "setup", "profiles"},
    "cpu": {"results", "setup", "profiles"},
    "capacity": {"steps", "capacity_streams", "bound_ms", "setup"},
    "embeddings": {"direct", "fleet", "raw_float32_bytes_per_vector", "setup"},
    "memory": {"worker_rss_idle_mb", "under_streams", "churn", "setup"},
    "audit": {"insert_methods", "writer", "open_loop", "retention", "end_to_end"},
    "tracing": {"worker_ns_per_attempt", "producer_ns_per_job"},
    "backfill": {"runs", "chat", "limits", "corpus", "setup"},
}
# Differences and slopes may honestly be negative (fleet faster than direct by noise,
# RSS shrinking); every other number must not be.
SIGNED = {"added_ttft_ms", "added_total_ms", "slope_mb_per_min", "added_job_ms"}


def _work_done(name: str, data: dict[str, Any]) -> bool:
    """Each benchmark measured something (not merely wrote an empty file)."""
    if name == "latency":
        return all(
            r["fleet"]["ttft_ms"]["n"] > 0 and r["direct"]["ttft_ms"]["n"] > 0
            for r in data["results"]
        )
    if name == "cpu":
        return all(r["tokens"] > 0 and r["errors"] == 0 for r in data["results"])
    if name == "capacity":
        return bool(data["steps"]) and data["steps"][0]["fleet"]["delay_ms"]["n"] > 0
    if name == "embeddings":
        return bool(data["fleet"]["vectors"] > 0 and data["direct"]["vectors"] > 0)
    if name == "audit":
        return bool(data["writer"][0]["rows"] > 0 and data["end_to_end"]["rows_recorded"] > 0)
    if name == "tracing":
        return bool(data["worker_ns_per_attempt"]["off"] > 0)
    if name == "backfill":
        return _backfill_exact(data)
    return bool(data["churn"]["jobs"] > 0 and data["under_streams"])


def _backfill_exact(data: dict[str, Any]) -> bool:
    """The backfill wrote every corpus id once, each row the vector of its own text, and
    chat was measured beside it (its rate against the limit is a figure, not a check)."""
    paced = data["runs"]["paced"]
    c = paced["correctness"]
    return bool(
        paced["exit_code"] == 0
        and c["ids_lines"] == c["rows"] == c["expected"] > 0
        and c["lost"] == c["duplicated"] == c["unknown"] == 0
        and c["in_input_order"]
        and c["vectors_matching_their_text"] == c["vectors_checked"] > 0
        and c["tokens_billed"] == data["corpus"]["paced"]["tokens"]  # nothing embedded twice
        and data["chat"]["baseline"]["ttft_ms"]["n"] > 0
        and data["chat"]["during_backfill"]["ttft_ms"]["n"] > 0
    )


# The first test runs the whole quick suite (about two minutes on the 2-core bench machine).
pytestmark = [pytest.mark.integration, pytest.mark.timeout(300)]


@pytest.fixture(scope="module")
def results(amqp_url: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    out = tmp_path_factory.mktemp("bench")
    env = {**os.environ, "AMQP_URL": amqp_url, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        [sys.executable, "-m", "bench.run", "--quick", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=270,
        check=False,
    )
    assert done.returncode == 0, (
        f"bench.run --quick failed:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    )
    yield out


def _numbers(value: Any, path: str = "") -> Iterator[tuple[str, float]]:
    if isinstance(value, bool):
        return
    if isinstance(value, int | float):
        yield path, float(value)
    elif isinstance(value, dict):
        for k, v in value.items():
            if k not in SIGNED:
                yield from _numbers(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            yield from _numbers(v, f"{path}[{i}]")


@pytest.mark.parametrize("name", BENCHMARKS)
def test_quick_run_writes_results(results: Path, name: str) -> None:
    data = json.loads((results / f"{name}.json").read_text())
    assert data["benchmark"] == name
    assert data["quick"] is True
    assert data["machine"].keys() >= MACHINE_KEYS
    assert data.keys() >= EXPECTED[name]
    negative = [(p, v) for p, v in _numbers(data) if v < 0]
    assert not negative, negative
    assert _work_done(name, data)
    assert (results / f"{name}.png").stat().st_size > 0
