"""Span export: ended spans queued, then encoded and sent in batches by a thread of their own.

In place of the SDK's BatchSpanProcessor, with its settings (OTEL_BSP_*, otel_env.py) and its promise: a full
queue or an unreachable collector drops spans, never delays a step, and each drop is counted
(`SPAN_EXPORT`, exposed as `otp_trace_spans_dropped_total`). The shape is the SDK's: the queue holds the
ended spans, and the sending thread encodes a batch of them and sends it. What differs is the encoder
(otlp_spans.py: the wire format written directly, a fraction of the SDK encoder's cost) and the sending, the
SDK's OTLP exporters' own (endpoint, headers, TLS, compression, timeout and retries from
OTEL_EXPORTER_OTLP_*) handed the encoded request.

Why in batches, on the sending thread, rather than each span encoded the moment it ends: measured side by
side (four fresh process pairs, docs/tracing.md), batches served 2.6% more steps per CPU second. Encoded one
at a time between a step's other work (botocore, grpc.aio), the encoder's code and caches were cold every
time; in a batch they stay warm. The price: an ended span lives until its batch is sent (at most
OTEL_BSP_MAX_QUEUE_SIZE of them), and the sending thread holds the interpreter lock while it encodes (the
event loop takes it back every switch interval, 5 ms; p99 at a fixed rate is in docs/tracing.md).
"""

from __future__ import annotations

import collections
import logging
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from opentelemetry.context import Context
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export import SpanExportResult

from otp_step_service.observability import otel_env
from otp_step_service.observability.otlp_spans import SpanEncoder

log = logging.getLogger(__name__)


class SpanExportCounts:
    """What the span processor did with ended spans: exported, dropped (by reason), queued now.

    Plain counts read at scrape time: the SDK would count these only through its own metrics API, which this
    service does not run (its metrics are Prometheus').
    """

    def __init__(self) -> None:
        self.exported = 0
        self.dropped: collections.Counter[str] = collections.Counter()
        self._queue_size: Callable[[], int] = lambda: 0

    def register_queue_size(self, get_queue_size: Callable[[], int]) -> None:
        """The processor's queue length, read when asked."""
        self._queue_size = get_queue_size

    def drop_items(self, count: int, error_type: str = "queue_full") -> None:
        """Spans dropped: the queue was full, the processor had shut down, or the collector refused them."""
        self.dropped[error_type] += count

    def finish_items(self, count: int) -> None:
        """Spans the collector accepted."""
        self.exported += count

    @property
    def queued(self) -> int:
        """Spans waiting for export now."""
        return self._queue_size()


SPAN_EXPORT = SpanExportCounts()
"""The process's span export counts (one tracer provider per process)."""

# How long shutting down waits for the last spans to be sent: a collector that does not answer must not hold
# a process that was asked to stop.
SHUTDOWN_WAIT_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class EncodedBatch:
    """One export request, encoded: the ExportTraceServiceRequest bytes and how many spans it carries."""

    request: bytes
    count: int


class SpanSender(Protocol):
    """Sends encoded batches to the collector: the SDK's exporters, given the request ready made."""

    def send(self, batch: EncodedBatch) -> bool:
        """True once the collector accepted the batch (the exporter retries what may be retried)."""
        ...

    def shutdown(self) -> None:
        """Close the connection to the collector."""
        ...


class EncodingSpanProcessor(SpanProcessor):
    """Queues each sampled span as it ends; a daemon thread encodes and sends them in batches every
    `schedule_delay_millis`, or as soon as `max_export_batch_size` are waiting. Beyond `max_queue_size`
    waiting, a span is dropped and counted."""

    def __init__(
        self,
        sender: SpanSender,
        max_queue_size: int = otel_env.DEFAULT_BSP_MAX_QUEUE_SIZE,
        schedule_delay_millis: int = otel_env.DEFAULT_BSP_SCHEDULE_DELAY_MS,
        max_export_batch_size: int = otel_env.DEFAULT_BSP_MAX_EXPORT_BATCH_SIZE,
        counts: SpanExportCounts = SPAN_EXPORT,
    ) -> None:
        self._sender = sender
        self._max_queue_size = max_queue_size
        self._batch_size = min(max_export_batch_size, max_queue_size)
        self._delay = schedule_delay_millis / 1000
        self._counts = counts
        self._encoder = SpanEncoder()  # used under `_sending` only
        # Ended spans: appended by whichever thread ends one, taken by the sender (a deque's append and
        # popleft need no lock).
        self._queue: collections.deque[ReadableSpan] = collections.deque()
        self._wake = threading.Event()
        self._sending = threading.Lock()  # one export at a time: the sender's, or a flush's
        self._shutdown = False
        counts.register_queue_size(lambda: len(self._queue))
        self._thread = threading.Thread(target=self._run, name="OtelSpanSender", daemon=True)
        self._thread.start()

    # -- SpanProcessor ----------------------------------------------------------------------------------
    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        """Nothing to do when a span starts."""

    def _on_ending(self, span: Span) -> None:
        """Nothing to do while a span ends (the SDK calls this before `on_end`)."""

    def on_end(self, span: ReadableSpan) -> None:
        """Queue a sampled span; drop and count it when the queue is full or after shutdown."""
        context = span.context
        if context is None or not context.trace_flags.sampled:
            return
        if self._shutdown:
            self._counts.drop_items(1, "already_shutdown")
            return
        queue = self._queue
        if len(queue) >= self._max_queue_size:
            self._counts.drop_items(1)
            return
        queue.append(span)
        if len(queue) >= self._batch_size and not self._wake.is_set():
            self._wake.set()

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Send everything queued now, in this thread."""
        if self._shutdown:
            return False
        self._send(everything=True)
        return True

    def shutdown(self) -> None:
        """Stop the sending thread once what is queued has been sent (a few seconds at most), then close the
        exporter."""
        if self._shutdown:
            return
        self._shutdown = True
        self._wake.set()
        self._thread.join(SHUTDOWN_WAIT_SECONDS)
        self._sender.shutdown()

    # -- the sending thread -----------------------------------------------------------------------------
    def _run(self) -> None:
        while not self._shutdown:
            self._wake.wait(self._delay)
            self._wake.clear()
            self._send(everything=False)
        self._send(everything=True)

    def _send(self, everything: bool) -> None:
        """One batch (at least), and further batches while a full one is waiting (or, `everything`, until
        the queue is empty)."""
        queue = self._queue
        with self._sending:
            while queue:
                count = min(self._batch_size, len(queue))
                batch = self._batch([queue.popleft() for _ in range(count)])
                if batch is not None:
                    self._export(batch)
                if not everything and len(queue) < self._batch_size:
                    return

    def _batch(self, spans: list[ReadableSpan]) -> EncodedBatch | None:
        """The export request of `spans`. A span the encoder cannot write (a value of no attribute type) is
        dropped and counted, never the batch; a request that cannot be made drops and counts them all, and
        the sending thread goes on (None when nothing is left to send)."""
        encode = self._encoder.span
        try:
            encoded = [encode(span) for span in spans]
        except Exception:  # rare: then the spans at fault are found one at a time
            encoded = []
            for span in spans:
                try:
                    encoded.append(encode(span))
                except Exception as exc:
                    log.warning("span %s not exported: %s", span.name, type(exc).__name__)
                    self._counts.drop_items(1, "unencodable")
        if not encoded:
            return None
        try:
            return EncodedBatch(self._encoder.request(encoded), len(encoded))
        except Exception as exc:
            log.warning("%d spans not exported: %s", len(encoded), type(exc).__name__)
            self._counts.drop_items(len(encoded), "unencodable")
            return None

    def _export(self, batch: EncodedBatch) -> None:
        try:
            accepted = self._sender.send(batch)
        except Exception as exc:  # the exporter's own failures are logged by it; anything else here
            log.warning("span export failed: %s", type(exc).__name__)
            accepted = False
        if accepted:
            self._counts.finish_items(batch.count)
        else:
            self._counts.drop_items(batch.count, "export_failed")


def span_processor(
    sender: SpanSender, environ: Mapping[str, str] | None = None, counts: SpanExportCounts = SPAN_EXPORT
) -> EncodingSpanProcessor:
    """The processor with OTEL_BSP_* read as the SDK reads them, with this service's defaults (otel_env)."""
    return EncodingSpanProcessor(
        sender,
        max_queue_size=otel_env.positive_int(
            otel_env.OTEL_BSP_MAX_QUEUE_SIZE, otel_env.DEFAULT_BSP_MAX_QUEUE_SIZE, environ
        ),
        schedule_delay_millis=otel_env.positive_int(
            otel_env.OTEL_BSP_SCHEDULE_DELAY, otel_env.DEFAULT_BSP_SCHEDULE_DELAY_MS, environ
        ),
        max_export_batch_size=otel_env.positive_int(
            otel_env.OTEL_BSP_MAX_EXPORT_BATCH_SIZE, otel_env.DEFAULT_BSP_MAX_EXPORT_BATCH_SIZE, environ
        ),
        counts=counts,
    )


def otlp_sender(environ: Mapping[str, str] | None = None) -> SpanSender:
    """The SDK's OTLP span exporter for the configured protocol (grpc, or http/protobuf), sending encoded
    requests (the exporters read OTEL_EXPORTER_OTLP_* themselves, from the process environment)."""
    if otel_env.protocol("traces", environ) == "grpc":
        return grpc_sender()
    return http_sender()


def grpc_sender() -> SpanSender:
    """The SDK's OTLP/gRPC span exporter: its channel, retries and settings, the request encoded here."""
    from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    parse = ExportTraceServiceRequest.FromString

    class GrpcSpanSender(OTLPSpanExporter):
        """`_translate_data` is the SDK exporter's hook for building the request: here it parses the encoded
        one (the gRPC stub wants a message; protobuf's C parser takes a fraction of a µs a span). Handed
        ReadableSpans, as any exporter may be, it encodes them first."""

        _encoder = SpanEncoder()

        def _translate_data(self, data: Any) -> ExportTraceServiceRequest:
            if isinstance(data, EncodedBatch):
                return parse(data.request)
            return parse(self._encoder.encode(data))

        def _count_data(self, data: Any) -> int:
            return data.count if isinstance(data, EncodedBatch) else len(data)

        def send(self, batch: EncodedBatch) -> bool:
            return self._export(batch) is SpanExportResult.SUCCESS  # type: ignore[arg-type]

        def shutdown(self, timeout_millis: float = 30_000, **kwargs: Any) -> None:
            super().shutdown(timeout_millis, **kwargs)

    return GrpcSpanSender()


def http_sender() -> SpanSender:
    """The SDK's OTLP/HTTP (protobuf) span exporter: its session, retries and settings, posting the request
    encoded here."""
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    class HttpSpanSender(OTLPSpanExporter):
        """The SDK exporter's HTTP client, handed the encoded request (its `export` encodes ReadableSpans
        with the SDK's encoder, and stays as it is for any caller that hands it those)."""

        _encoder = SpanEncoder()

        def send(self, batch: EncodedBatch) -> bool:
            if self._shutdown:
                return False
            return bool(self._client.export(batch.request).success)

    return HttpSpanSender()
