"""Tracing settings: off unless OpenTelemetry's own variables configure an exporter."""

from __future__ import annotations

import sys

import pytest

from workers.config import ConfigError, Settings, TracingSettings, tracing_settings
from workers.tracing import open_tracing


def test_off_by_default() -> None:
    assert tracing_settings({}) == TracingSettings()
    assert Settings.from_env({}).tracing.exporters == ()
    assert not open_tracing(TracingSettings(), instance_id="w").enabled


def test_an_otlp_endpoint_turns_the_otlp_exporter_on() -> None:
    settings = tracing_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318/"})
    assert settings.exporters == ("otlp",)
    assert settings.endpoint == "http://collector:4318/v1/traces"
    traces_only = tracing_settings(
        {
            "OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318",
            "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://traces:4318/custom",
        }
    )
    assert traces_only.endpoint == "http://traces:4318/custom"


@pytest.mark.parametrize(
    ("env", "exporters"),
    [
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ("otlp",)),  # the exporter's default address
        ({"OTEL_TRACES_EXPORTER": "console"}, ("console",)),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ("otlp", "console")),
        ({"OTEL_TRACES_EXPORTER": "none", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ()),
        ({"OTEL_SDK_DISABLED": "true", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"}, ()),
    ],
)
def test_exporters_named_outright(env: dict[str, str], exporters: tuple[str, ...]) -> None:
    assert tracing_settings(env).exporters == exporters


def test_the_service_name_is_opentelemetrys() -> None:
    assert tracing_settings({}).service_name == "llm-fleet-worker"
    assert tracing_settings({"OTEL_SERVICE_NAME": "fleet-eu"}).service_name == "fleet-eu"


@pytest.mark.parametrize(
    ("env", "says"),
    [
        ({"OTEL_TRACES_EXPORTER": "zipkin"}, "zipkin"),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "collector:4318"}, "http(s) URL"),
        (
            {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
            "http/protobuf",
        ),
    ],
)
def test_what_cannot_work_is_refused_at_start_up(env: dict[str, str], says: str) -> None:
    with pytest.raises(ConfigError, match=says.replace("(", r"\(").replace(")", r"\)")):
        tracing_settings(env)


def test_an_exporting_tracer_is_on_and_closes() -> None:
    settings = tracing_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    tracer = open_tracing(settings, instance_id="worker-1")
    assert tracer.enabled
    tracer.close()  # nothing batched: returns without reaching the (absent) collector


def test_an_exporter_that_is_not_installed_stops_the_worker_at_start_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As if installed without the `otel` extra: importing the exporter fails.
    monkeypatch.setitem(sys.modules, "opentelemetry.exporter.otlp.proto.http.trace_exporter", None)
    settings = tracing_settings({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"})
    with pytest.raises(ConfigError, match=r"llm-fleet\[otel\]"):
        open_tracing(settings, instance_id="worker-1")
