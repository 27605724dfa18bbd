"""The OTLP bridge's conversion and its failure handling, without a collector (tests/telemetry/
test_otlp_metrics.py sends to a real one): Prometheus samples become the SDK's MetricsData faithfully, and a
collector that fails or raises costs a log line, never an exception."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import pytest
from opentelemetry.sdk.metrics.export import (
    AggregationTemporality,
    Gauge,
    Histogram,
    MetricExporter,
    MetricExportResult,
    MetricsData,
    Sum,
)
from opentelemetry.sdk.resources import Resource
from otp_step_service.observability.metrics import LATENCY_BUCKETS, Metrics
from otp_step_service.observability.otlp_metrics import OtlpMetricsBridge, otlp_metrics_configured
from prometheus_client import CollectorRegistry


class Capturing(MetricExporter):
    """An exporter that keeps what it is given and answers with `results` in turn (raising an exception one)."""

    def __init__(self, results: Sequence[MetricExportResult | Exception] = ()) -> None:
        super().__init__()
        self.batches: list[MetricsData] = []
        self._results = list(results)

    def export(
        self, metrics_data: MetricsData, timeout_millis: float = 10_000, **_: Any
    ) -> MetricExportResult:
        self.batches.append(metrics_data)
        result = self._results.pop(0) if self._results else MetricExportResult.SUCCESS
        if isinstance(result, Exception):
            raise result
        return result

    def force_flush(self, timeout_millis: float = 10_000) -> bool:
        return True

    def shutdown(self, timeout_millis: float = 30_000, **_: Any) -> None:
        pass


def _metrics(data: MetricsData) -> dict[str, Any]:
    (resource_metrics,) = data.resource_metrics
    (scope,) = resource_metrics.scope_metrics
    return {m.name: m for m in scope.metrics}


def _bridge(metrics: Metrics, exporter: MetricExporter) -> OtlpMetricsBridge:
    return OtlpMetricsBridge(
        metrics.registry, exporter, Resource.create({"service.name": "otp-step-service"}), interval_seconds=60
    )


def test_counters_histograms_and_gauges_keep_their_values_labels_and_meaning() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.steps.labels("cognito_otp_generate", "demo", "success", "").inc(3)
    rpc = metrics.rpc_duration.labels("grpc", "stepexecutor.v1.StepExecutor", "GenerateOtp", "0")
    for seconds in (0.003, 0.02, 0.02, 30.0):
        rpc.observe(seconds)
    metrics.watch_admission(lambda: 2, {"OVERLOADED": 4})
    bridge = _bridge(metrics, Capturing())

    data = bridge.collect()
    by_name = _metrics(data)
    assert data.resource_metrics[0].resource.attributes["service.name"] == "otp-step-service"

    steps = by_name["otp_steps"]
    assert isinstance(steps.data, Sum)
    assert steps.data.is_monotonic and steps.data.aggregation_temporality is AggregationTemporality.CUMULATIVE
    (point,) = steps.data.data_points
    assert point.value == 3
    assert point.attributes == {
        "step_type": "cognito_otp_generate",
        "connection": "demo",
        "outcome": "success",
        "failure_code": "",
    }
    # A counter's start is its `_created` time, before the collection.
    assert 0 < point.start_time_unix_nano <= point.time_unix_nano

    # The RPC histogram under its semantic-convention name and attributes, buckets per bucket (not cumulative).
    duration = by_name["rpc.server.call.duration"]
    assert duration.unit == "s"
    assert isinstance(duration.data, Histogram)
    (hist,) = duration.data.data_points
    assert hist.attributes == {
        "rpc.system": "grpc",
        "rpc.service": "stepexecutor.v1.StepExecutor",
        "rpc.method": "GenerateOtp",
        "rpc.grpc.status_code": 0,
    }
    assert tuple(hist.explicit_bounds) == LATENCY_BUCKETS
    assert len(hist.bucket_counts) == len(hist.explicit_bounds) + 1
    assert hist.bucket_counts[0] == 1  # 3 ms ≤ 5 ms
    assert hist.bucket_counts[list(hist.explicit_bounds).index(0.025)] == 2
    assert hist.bucket_counts[-1] == 1  # 30 s: only +Inf
    assert sum(hist.bucket_counts) == hist.count == 4
    assert hist.sum == pytest.approx(30.043)

    in_flight = by_name["otp_steps_in_flight"]
    assert isinstance(in_flight.data, Gauge) and in_flight.data.data_points[0].value == 2
    (refused,) = by_name["otp_rejected_calls"].data.data_points
    assert (refused.attributes, refused.value) == ({"reason": "OVERLOADED"}, 4)
    # Instruments nothing has recorded yet are left out: an empty metric is malformed OTLP.
    assert "otp_codes_sent" not in by_name and "otp_cognito_call_duration_seconds" not in by_name


def test_a_failing_or_raising_collector_is_logged_once_and_the_next_export_still_runs(
    caplog: pytest.LogCaptureFixture,
) -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.steps.labels("cognito_otp_generate", "demo", "success", "").inc()
    exporter = Capturing([MetricExportResult.FAILURE, ConnectionError("refused"), MetricExportResult.SUCCESS])
    bridge = _bridge(metrics, exporter)
    with caplog.at_level(logging.INFO, logger="otp_step_service.observability.otlp_metrics"):
        assert bridge.export_once() is False
        assert bridge.export_once() is False  # raised inside the exporter: no exception escapes
        assert bridge.export_once() is True
    failures = [r for r in caplog.records if "export failed" in r.getMessage()]
    assert len(failures) == 1  # rate-limited: one line for the outage, not one per interval
    assert any("works again" in r.getMessage() for r in caplog.records)
    assert len(exporter.batches) == 3 and bridge.exports == 1


def test_shutdown_exports_once_more_and_stops_the_thread() -> None:
    metrics = Metrics(CollectorRegistry())
    exporter = Capturing()
    bridge = _bridge(metrics, exporter)
    bridge.start()
    metrics.steps.labels("cognito_otp_validate", "demo", "success", "").inc()
    bridge.shutdown()
    assert len(exporter.batches) == 1  # the interval (60 s) never came: this is the flush
    assert _metrics(exporter.batches[0])["otp_steps"].data.data_points[0].value == 1


@pytest.mark.parametrize(
    ("environ", "on"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, False),  # traces only, as before
        ({"OTEL_METRICS_EXPORTER": "otlp"}, True),
        ({"OTEL_METRICS_EXPORTER": "prometheus, otlp"}, True),
        ({"OTEL_METRICS_EXPORTER": "none"}, False),
        ({"OTEL_METRICS_EXPORTER": "otlp", "OTEL_SDK_DISABLED": "true"}, False),
    ],
)
def test_only_otel_metrics_exporter_otlp_turns_the_export_on(environ: dict[str, str], on: bool) -> None:
    assert otlp_metrics_configured(environ) is on


def test_a_bad_interval_falls_back_to_the_default(caplog: pytest.LogCaptureFixture) -> None:
    environ = {"OTEL_METRICS_EXPORTER": "otlp", "OTEL_METRIC_EXPORT_INTERVAL": "soon"}
    bridge = OtlpMetricsBridge.from_environment(CollectorRegistry(), environ)
    assert bridge.interval_seconds == 60
    assert "OTEL_METRIC_EXPORT_INTERVAL" in caplog.text


def test_shutdown_does_not_wait_on_a_collector_that_is_already_failing() -> None:
    metrics = Metrics(CollectorRegistry())
    exporter = Capturing([MetricExportResult.FAILURE])
    bridge = _bridge(metrics, exporter)
    assert bridge.export_once() is False
    bridge.shutdown()
    assert len(exporter.batches) == 1  # no second attempt at shutdown
