"""The service's OTLP span encoding makes the request the SDK's encoder makes, for every kind of span content.

The encoder writes the protobuf wire format itself and reads the SDK's span containers directly (pinned SDK):
comparing the decoded request with the SDK's `encode_spans` for the same spans is what holds it to the SDK.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import ReadableSpan, SpanLimits, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from otp_step_service.observability import otlp_spans
from otp_step_service.observability.otlp_spans import SpanEncoder


def _recorded(
    limits: SpanLimits | None = None, resource: Resource | None = None
) -> tuple[TracerProvider, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(
        resource=resource or Resource.create({"service.name": "otp-step-service", "deployment": "test"}),
        span_limits=limits,
    )
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider, exporter


def _same_as_sdk(spans: tuple[ReadableSpan, ...] | list[ReadableSpan]) -> ExportTraceServiceRequest:
    encoded = ExportTraceServiceRequest.FromString(SpanEncoder().encode(spans))
    assert str(encoded) == str(encode_spans(spans))  # as text: a failure shows the difference
    assert encoded == encode_spans(spans)
    return encoded


@pytest.fixture
def spans() -> Iterator[tuple[TracerProvider, InMemorySpanExporter]]:
    provider, exporter = _recorded()
    yield provider, exporter
    provider.shutdown()


def test_a_step_s_spans_encode_as_the_sdk_encodes_them(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("otp_step_service")
    remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, True, TraceFlags(1))
    server = tracer.start_span(
        "/stepexecutor.v1.StepExecutor/GenerateOtp",
        trace.set_span_in_context(NonRecordingSpan(remote)),
        SpanKind.SERVER,
        {"rpc.system": "grpc", "net.peer.port": "50123", "rpc.grpc.status_code": 0},
    )
    step = tracer.start_span(
        "cognito_otp_generate", trace.set_span_in_context(server), attributes={"journey.run_id": "run-1"}
    )
    step.set_attributes({"journey.step.outcome": "failure", "journey.step.failure.retryable": True})
    step.set_attributes({"otp.attempts_remaining": 2, "journey.step.failure.category": "system"})
    step.add_event(
        "journey.step.completed",
        {"journey.event_data.truncated": False, "journey.event_data.input": '{"a":1}'},
    )
    step.set_status(Status(StatusCode.ERROR, "COGNITO_UNAVAILABLE"))
    call = tracer.start_span(
        "CognitoIdentityProvider.InitiateAuth", trace.set_span_in_context(step), SpanKind.CLIENT
    )
    call.set_attribute("http.response.status_code", 503)
    for span in (call, step, server):
        span.end()
    _same_as_sdk(exporter.get_finished_spans())


def test_every_attribute_type_encodes_as_the_sdk_encodes_it(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("types")
    values = {
        "text": "plain",
        "unicode": "ünïcødé ✓",
        "empty": "",
        "yes": True,
        "no": False,
        "zero": 0,
        "one": 1,
        "negative": -5,
        "large": 2**62,
        "ratio": 0.25,
        "negative ratio": -1.5,
        "strings": ("a", "b"),
        "numbers": [1, -2, 3],
        "flags": [True, False],
        "ratios": (0.5,),
        "nothing": (),
        "raw": b"\x00\x01",
    }
    tracer.start_span("types", attributes=values).end()
    with tracer.start_as_current_span("events") as span:
        span.add_event("no attributes")
        span.add_event("typed", values, timestamp=1_700_000_000_000_000_000)
    _same_as_sdk(exporter.get_finished_spans())


def test_links_trace_states_kinds_and_statuses_encode_as_the_sdk_encodes_them(
    spans: tuple[TracerProvider, InMemorySpanExporter],
) -> None:
    provider, exporter = spans
    tracer = provider.get_tracer("links", "1.2.3", schema_url="https://opentelemetry.io/schemas/1.21.0")
    state = TraceState([("vendor", "value"), ("other", "x")])
    linked = SpanContext(0x1, 0x2, True, TraceFlags(1), state)
    local = SpanContext(0x3, 0x4, False, TraceFlags(0))
    parent = trace.set_span_in_context(NonRecordingSpan(SpanContext(0x5, 0x6, True, TraceFlags(1), state)))
    for kind in SpanKind:
        span = tracer.start_span(
            f"kind {kind.name}", parent, kind, links=[Link(linked, {"why": "retry"}), Link(local)]
        )
        span.set_status(Status(StatusCode.OK) if kind is SpanKind.CLIENT else Status(StatusCode.ERROR))
        span.end()
    _same_as_sdk(exporter.get_finished_spans())


def test_dropped_attributes_events_and_links_are_counted_as_the_sdk_counts_them() -> None:
    provider, exporter = _recorded(
        SpanLimits(
            max_span_attributes=2, max_events=1, max_links=1, max_event_attributes=1, max_link_attributes=1
        )
    )
    tracer = provider.get_tracer("limits")
    context = SpanContext(0x7, 0x8, False, TraceFlags(1))
    span = tracer.start_span(
        "limited", attributes={"a": "1", "b": "2", "c": "3"}, links=[Link(context, {"x": 1, "y": 2})] * 2
    )
    span.add_event("first", {"p": 1, "q": 2})
    span.add_event("second")
    span.end()
    request = _same_as_sdk(exporter.get_finished_spans())
    encoded = request.resource_spans[0].scope_spans[0].spans[0]
    assert (encoded.dropped_attributes_count, encoded.dropped_events_count, encoded.dropped_links_count) == (
        1,
        1,
        1,
    )
    provider.shutdown()


def test_spans_of_several_resources_and_scopes_are_grouped_as_the_sdk_groups_them() -> None:
    first, first_spans = _recorded(resource=Resource.create({"service.name": "one"}))
    second, second_spans = _recorded(resource=Resource.create({"service.name": "two"}))
    for provider in (first, second, first):
        for scope in ("a", "b", "a"):
            provider.get_tracer(scope).start_span(f"in {scope}").end()
    mixed = [*first_spans.get_finished_spans(), *second_spans.get_finished_spans()]
    mixed = [mixed[i] for i in (0, 6, 1, 7, 2, 3, 8, 4, 5)]  # interleaved
    request = _same_as_sdk(mixed)
    assert len(request.resource_spans) == 2
    first.shutdown()
    second.shutdown()


def test_values_that_never_repeat_stay_right_once_the_encoder_stops_keeping_them(
    spans: tuple[TracerProvider, InMemorySpanExporter], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(otlp_spans, "_CACHE_LIMIT", 16)
    provider, exporter = spans
    tracer = provider.get_tracer("volatile")
    encoder = SpanEncoder()
    for batch in range(3):
        exporter.clear()
        for n in range(40):
            tracer.start_span(
                "step", attributes={"journey.run_id": f"run-{batch}-{n}", "otp.channel": "email"}
            ).end()
        finished = exporter.get_finished_spans()
        assert ExportTraceServiceRequest.FromString(encoder.encode(finished)) == encode_spans(finished)
    assert "journey.run_id" in encoder._volatile
    assert "otp.channel" not in encoder._volatile
