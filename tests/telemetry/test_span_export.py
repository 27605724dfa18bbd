"""Span export in a companion process (span_export.py): spans arrive intact, and a lost exporter costs spans only."""

from __future__ import annotations

import json
import marshal
import os
import signal
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import Decision, Sampler, SamplingResult
from opentelemetry.trace import Link, SpanKind, Status, StatusCode
from otp_step_service.span_export import SpanShipper, readable_span, span_record

SINK = Path(__file__).with_name("span_sink.py")
RESOURCE = Resource.create({"service.name": "otp-step-service"})


def _finished_spans() -> list[ReadableSpan]:
    """A parent with every kind of content, and a child (recorded by a private provider, not the global one)."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer(
        "otp_step_service", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.26.0"
    )
    with tracer.start_as_current_span(
        "cognito_otp_validate",
        kind=SpanKind.INTERNAL,
        attributes={"journey.id": "jit", "otp.attempts_remaining": 2, "retryable": False, "ratio": 0.5},
    ) as parent:
        parent.add_event(
            "journey.step.completed", {"journey.event_data.output": '{"a":"b"}', "tags": ("x", "y")}
        )
        parent.set_status(Status(StatusCode.ERROR, "COGNITO_UNAVAILABLE"))
        child = tracer.start_span(
            "CognitoIdentityProvider.InitiateAuth",
            kind=SpanKind.CLIENT,
            links=[Link(parent.get_span_context(), {"why": "test"})],
        )
        child.end()
    return list(exporter.get_finished_spans())


def test_a_span_crosses_to_the_exporter_process_unchanged() -> None:
    spans = _finished_spans()
    rebuilt = [readable_span(marshal.loads(marshal.dumps(span_record(s))), RESOURCE) for s in spans]
    # What the exporter sends is what counts: the OTLP request built from either is byte for byte the same.
    assert encode_spans(rebuilt).SerializeToString() == encode_spans(spans).SerializeToString()


@pytest.fixture
def sink(tmp_path: Path) -> Iterator[tuple[Callable[..., SpanShipper], Path]]:
    out = tmp_path / "spans.jsonl"
    made: list[SpanShipper] = []

    def make(**options: object) -> SpanShipper:
        shipper = SpanShipper(command=[sys.executable, str(SINK), str(out)], **options)  # type: ignore[arg-type]
        made.append(shipper)
        return shipper

    yield make, out
    for shipper in made:
        shipper.shutdown()


def _exported(out: Path) -> list[dict[str, object]]:
    return [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []


def test_shipped_spans_are_exported_by_the_child_process(
    sink: tuple[Callable[..., SpanShipper], Path],
) -> None:
    make, out = sink
    shipper = make()
    spans = _finished_spans()
    for span in spans:
        shipper.on_end(span)
    assert shipper.force_flush(20_000)
    exported = _exported(out)
    assert [(e["name"], e["span_id"], e["parent_span_id"]) for e in exported] == [
        (s.name, s.context.span_id if s.context else None, s.parent.span_id if s.parent else None)
        for s in spans
    ]
    assert exported[1]["attributes"] == {
        "journey.id": "jit",
        "otp.attempts_remaining": 2,
        "retryable": False,
        "ratio": 0.5,
    }
    assert exported[0]["service"] == "otp-step-service"
    pid = shipper.exporter_pid
    assert pid is not None
    shipper.shutdown()  # closing the stream ends the child, after it has exported what it held
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)


class _RecordOnly(Sampler):
    """Spans are recorded (processors see them end) but not sampled: nothing may export them."""

    def should_sample(self, *_: Any, **__: Any) -> SamplingResult:
        return SamplingResult(Decision.RECORD_ONLY)

    def get_description(self) -> str:
        return "RecordOnly"


def test_unsampled_spans_are_not_shipped(sink: tuple[Callable[..., SpanShipper], Path]) -> None:
    make, out = sink
    shipper = make()
    provider = TracerProvider(sampler=_RecordOnly())
    provider.add_span_processor(shipper)
    with provider.get_tracer("t").start_as_current_span("recorded, not sampled"):
        pass
    assert shipper.force_flush(20_000)
    assert _exported(out) == []


def test_a_full_queue_drops_spans_instead_of_waiting(sink: tuple[Callable[..., SpanShipper], Path]) -> None:
    make, _ = sink
    shipper = make(max_queue_size=10)
    span = _finished_spans()[0]
    started = time.perf_counter()
    for _ in range(5000):
        shipper.on_end(span)
    assert shipper.dropped > 0
    assert time.perf_counter() - started < 5  # bounded: nothing waited for the exporter


def test_a_dead_exporter_process_costs_spans_then_is_restarted(
    sink: tuple[Callable[..., SpanShipper], Path],
) -> None:
    make, out = sink
    shipper = make(restart_pause=0.5)
    span = _finished_spans()[0]
    assert shipper.force_flush(20_000)  # the child is up and answering
    first = shipper.exporter_pid
    assert first is not None
    os.kill(first, signal.SIGKILL)
    shipper.on_end(span)
    assert shipper.force_flush(5_000) is False  # no exception: the span is lost, the caller is not
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline and shipper.exporter_pid in (None, first):
        time.sleep(0.1)
    assert shipper.exporter_pid not in (None, first)
    shipper.on_end(span)
    assert shipper.force_flush(20_000)
    assert [e["name"] for e in _exported(out)][-1] == span.name
