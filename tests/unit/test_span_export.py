"""The span processor's drops are counted, and exposed as metrics, rather than lost silently."""

from __future__ import annotations

import threading
from collections.abc import Sequence

from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SpanExporter, SpanExportResult
from otp_step_service.observability import telemetry
from otp_step_service.observability.metrics import Metrics
from prometheus_client import CollectorRegistry


class StalledExporter(SpanExporter):
    """An exporter that holds the first batch until released (a collector that does not answer)."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.exported = 0

    def export(self, spans: Sequence[ReadableSpan]) -> SpanExportResult:
        self.release.wait(10)
        self.exported += len(spans)
        return SpanExportResult.SUCCESS


def test_a_full_queue_drops_spans_and_counts_each_one() -> None:
    counts = telemetry.SPAN_EXPORT
    before_dropped, before_exported = counts.dropped["queue_full"], counts.exported
    exporter = StalledExporter()
    environ = {
        "OTEL_BSP_MAX_QUEUE_SIZE": "10",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "5",
        "OTEL_BSP_SCHEDULE_DELAY": "1",
    }
    processor = telemetry.batch_span_processor(exporter, environ)
    provider = TracerProvider()
    provider.add_span_processor(processor)
    tracer = provider.get_tracer("test")
    try:
        for n in range(100):
            tracer.start_span(f"span {n}").end()
        assert counts.dropped["queue_full"] - before_dropped >= 100 - 10 - 5  # queue + one batch in export
        metrics = Metrics(CollectorRegistry())
        metrics.watch_span_export()
        assert (
            metrics.registry.get_sample_value("otp_trace_spans_dropped_total", {"reason": "queue_full"}) or 0
        ) >= 85
    finally:
        exporter.release.set()
        provider.shutdown()
    assert counts.exported - before_exported == exporter.exported
