"""The tracing micro benchmark runs (a smoke run: its figures are read, never asserted)."""

from __future__ import annotations

import json
from pathlib import Path

from bench import tracing


def test_the_tracing_benchmark_writes_its_figures(tmp_path: Path) -> None:
    assert tracing.main(["--quick", "--out", str(tmp_path)]) == 0
    data = json.loads((tmp_path / "tracing.json").read_text())
    assert set(data["worker_ns_per_attempt"]) == {"off", "api-noop", "sdk", "baseline"}
    assert set(data["producer_ns_per_job"]) == {"no_span", "in_span"}
