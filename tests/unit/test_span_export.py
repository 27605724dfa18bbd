"""The span processor: every sampled span reaches the collector as the SDK would encode it, in batches, and
what cannot be sent is dropped and counted (exposed as metrics), never waited for."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, TraceFlags
from otp_step_service.observability.metrics import Metrics
from otp_step_service.observability.span_export import (
    EncodedBatch,
    EncodingSpanProcessor,
    SpanExportCounts,
    span_processor,
)
from prometheus_client import CollectorRegistry


class RecordingSender:
    """A collector that keeps what it is sent; it answers `accept` and, when `hold` is set, waits for it."""

    def __init__(self, accept: bool = True) -> None:
        self.batches: list[EncodedBatch] = []
        self.accept = accept
        self.hold: threading.Event | None = None
        self.closed = False

    def send(self, batch: EncodedBatch) -> bool:
        if self.hold is not None:
            self.hold.wait(10)
        self.batches.append(batch)
        return self.accept

    def shutdown(self) -> None:
        self.closed = True

    def spans(self) -> int:
        return sum(
            len(scope.spans)
            for batch in self.batches
            for resource in ExportTraceServiceRequest.FromString(batch.request).resource_spans
            for scope in resource.scope_spans
        )


def _until(check: Callable[[], bool], what: str) -> None:
    deadline = time.monotonic() + 10
    while not check():
        assert time.monotonic() < deadline, what
        time.sleep(0.01)


def _provider(processor: EncodingSpanProcessor) -> TracerProvider:
    provider = TracerProvider(resource=Resource.create({"service.name": "otp-step-service"}))
    provider.add_span_processor(processor)
    return provider


class _SentOnFlush:
    """A processor whose schedule is a minute away, so it sends only when flushed: with its sender, its
    counts, and a tracer of its provider."""

    def __init__(self) -> None:
        self.sender = RecordingSender()
        self.counts = SpanExportCounts()
        self.processor = EncodingSpanProcessor(self.sender, schedule_delay_millis=60_000, counts=self.counts)
        self.provider = _provider(self.processor)
        self.tracer = self.provider.get_tracer("test")


def test_every_sampled_span_reaches_the_collector_as_the_sdk_would_encode_it() -> None:
    sender = RecordingSender()
    processor = EncodingSpanProcessor(sender, counts=SpanExportCounts())
    provider = _provider(processor)
    seen = InMemorySpanExporter()
    provider.add_span_processor(SimpleSpanProcessor(seen))
    tracer = provider.get_tracer("otp_step_service")
    unsampled = trace.set_span_in_context(NonRecordingSpan(SpanContext(1, 2, True, TraceFlags(0))))
    with tracer.start_as_current_span("server", attributes={"rpc.system": "grpc"}):
        with tracer.start_as_current_span("step") as step:
            step.add_event("journey.step.completed", {"journey.step.outcome": "success"})
        tracer.start_span("not sampled", unsampled).end()
    provider.force_flush()
    assert sender.spans() == 2
    requests = [ExportTraceServiceRequest.FromString(batch.request) for batch in sender.batches]
    assert requests == [encode_spans(seen.get_finished_spans())]
    provider.shutdown()


def test_a_full_batch_is_sent_at_once_and_the_rest_on_schedule() -> None:
    sender = RecordingSender()
    counts = SpanExportCounts()
    processor = EncodingSpanProcessor(
        sender, max_queue_size=100, schedule_delay_millis=60_000, max_export_batch_size=5, counts=counts
    )
    provider = _provider(processor)
    tracer = provider.get_tracer("test")
    for n in range(12):
        tracer.start_span(f"span {n}").end()
    _until(lambda: counts.exported == 10, "two full batches sent without waiting for the schedule")
    assert [batch.count for batch in sender.batches] == [5, 5]
    assert counts.queued == 2
    provider.shutdown()  # sends the rest, then closes the exporter
    assert (counts.exported, counts.queued, sender.closed) == (12, 0, True)


def test_a_full_queue_drops_spans_and_counts_each_one() -> None:
    sender = RecordingSender()
    sender.hold = threading.Event()  # a collector that does not answer
    counts = SpanExportCounts()
    environ = {
        "OTEL_BSP_MAX_QUEUE_SIZE": "10",
        "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "5",
        "OTEL_BSP_SCHEDULE_DELAY": "1",
    }
    provider = _provider(span_processor(sender, environ, counts))
    tracer = provider.get_tracer("test")
    try:
        started = time.monotonic()
        for n in range(100):
            tracer.start_span(f"span {n}").end()
        assert time.monotonic() - started < 5  # never waited for the stalled collector
        assert counts.dropped["queue_full"] >= 100 - 10 - 5  # the queue, and one batch in export
    finally:
        sender.hold.set()
        provider.shutdown()
    assert counts.exported + counts.dropped["queue_full"] == 100


def test_spans_the_collector_refuses_and_spans_after_shutdown_are_counted_as_dropped() -> None:
    sender = RecordingSender(accept=False)
    counts = SpanExportCounts()
    provider = _provider(EncodingSpanProcessor(sender, counts=counts))
    tracer = provider.get_tracer("test")
    for n in range(3):
        tracer.start_span(f"span {n}").end()
    provider.shutdown()
    tracer.start_span("too late").end()
    assert (counts.exported, counts.dropped["export_failed"], counts.dropped["already_shutdown"]) == (0, 3, 1)


def test_the_counts_are_metrics() -> None:
    from otp_step_service.observability.span_export import SPAN_EXPORT

    before = SPAN_EXPORT.dropped["queue_full"]
    SPAN_EXPORT.drop_items(3)
    metrics = Metrics(CollectorRegistry())
    metrics.watch_span_export()
    dropped = metrics.registry.get_sample_value("otp_trace_spans_dropped_total", {"reason": "queue_full"})
    assert dropped == before + 3
    assert metrics.registry.get_sample_value("otp_trace_spans_queued") == SPAN_EXPORT.queued


def test_a_span_the_encoder_cannot_write_is_dropped_and_counted_and_the_rest_of_its_batch_sent() -> None:
    export = _SentOnFlush()
    spans = [export.tracer.start_span(f"span {n}", attributes={"n": n}) for n in range(3)]
    for span in spans:
        span.end()
    # What no attribute may hold, put past the SDK's validation into the ended span's own mapping.
    spans[1]._attributes._dict["n"] = object()  # type: ignore[attr-defined]
    export.provider.force_flush()
    assert (export.counts.exported, export.counts.dropped["unencodable"]) == (2, 1)
    [batch] = export.sender.batches
    request = ExportTraceServiceRequest.FromString(batch.request)
    names = [span.name for span in request.resource_spans[0].scope_spans[0].spans]
    assert (batch.count, names) == (2, ["span 0", "span 2"])
    export.provider.shutdown()


def test_a_batch_whose_request_cannot_be_made_is_counted_and_the_next_one_still_sent() -> None:
    export = _SentOnFlush()
    failing = export.processor._encoder.request
    calls = iter([RuntimeError("broken"), None])

    def request_once_broken(spans: Any) -> bytes:
        error = next(calls, None)
        if error is not None:
            raise error
        return failing(spans)

    export.processor._encoder.request = request_once_broken  # type: ignore[method-assign]
    for n in range(2):
        export.tracer.start_span(f"span {n}").end()
    export.provider.force_flush()  # the first request fails: counted, not raised
    export.tracer.start_span("span 2").end()
    export.provider.force_flush()
    assert (export.counts.exported, export.counts.dropped["unencodable"], export.sender.spans()) == (1, 2, 1)
    export.provider.shutdown()
