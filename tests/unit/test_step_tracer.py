"""The service's spans (step_tracer.py) say what the SDK's say: the same calls, made through the SDK's tracer
and through the service's with the same ids and times, give the same span contexts and the same OTLP request,
limits, sampling and status rules included."""

from __future__ import annotations

from collections.abc import Callable
from enum import StrEnum
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.exporter.otlp.proto.common.trace_encoder import encode_spans
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.id_generator import IdGenerator
from opentelemetry.sdk.trace.sampling import (
    ALWAYS_OFF,
    ALWAYS_ON,
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, NonRecordingSpan, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.trace.span import TraceState
from otp_step_service.observability.otlp_spans import SpanEncoder
from otp_step_service.observability.step_tracer import StepTracerProvider

pytestmark = pytest.mark.unit

RESOURCE = Resource.create({"service.name": "otp-step-service", "deployment": "test"})
REMOTE = SpanContext(
    0x0AF7651916CD43DD8448EB211C80319C,
    0xB7AD6B7169203331,
    True,
    TraceFlags(1),
    TraceState([("vendor", "value")]),
)


class CountingIds(IdGenerator):
    """Ids in sequence, so the two tracers make the same ones; random or not, as the W3C flag says."""

    def __init__(self, random: bool = False) -> None:
        self._next = 0x1000
        self._random = random

    def is_trace_id_random(self) -> bool:
        return self._random

    def generate_span_id(self) -> int:
        self._next += 1
        return self._next

    def generate_trace_id(self) -> int:
        self._next += 1
        return self._next << 64 | 0xC0FFEE


Play = Callable[[trace.Tracer], None]


def _both(
    play: Play, limits: SpanLimits | None = None, sampler: Sampler | None = None, random: bool = False
) -> tuple[list[Any], list[Any]]:
    """The spans `play` ends through the SDK's tracer, then through the service's."""
    sdk_exporter, step_exporter = InMemorySpanExporter(), InMemorySpanExporter()
    sdk = TracerProvider(
        resource=RESOURCE,
        sampler=sampler,
        span_limits=limits,
        id_generator=CountingIds(random),
        shutdown_on_exit=False,
    )
    step = StepTracerProvider(
        resource=RESOURCE, sampler=sampler, limits=limits, id_generator=CountingIds(random)
    )
    sdk.add_span_processor(SimpleSpanProcessor(sdk_exporter))
    step.add_span_processor(SimpleSpanProcessor(step_exporter))
    play(sdk.get_tracer("otp_step_service", "1.0"))
    play(step.get_tracer("otp_step_service", "1.0"))
    return list(sdk_exporter.get_finished_spans()), list(step_exporter.get_finished_spans())


def _same(
    play: Play, limits: SpanLimits | None = None, sampler: Sampler | None = None, random: bool = False
) -> int:
    """Asserts both tracers' spans say the same: equal contexts, and the SDK's request for the SDK's spans
    whether the service's are encoded by the service's encoder (which reads their containers) or by the
    SDK's (which reads their public ReadableSpan views); the number of spans."""
    sdk_spans, step_spans = _both(play, limits, sampler, random)
    assert [s.context for s in step_spans] == [s.context for s in sdk_spans]
    expected = encode_spans(sdk_spans)
    made = ExportTraceServiceRequest.FromString(SpanEncoder().encode(step_spans))
    assert str(made) == str(expected)  # as text: a failure shows the difference
    assert made == expected
    assert encode_spans(step_spans) == expected
    return len(step_spans)


def _step(tracer: trace.Tracer) -> None:
    """A traced step as the service makes it: server span under a remote parent, step span, Cognito span."""
    server = tracer.start_span(
        "/stepexecutor.v1.StepExecutor/GenerateOtp",
        trace.set_span_in_context(NonRecordingSpan(REMOTE)),
        SpanKind.SERVER,
        {"rpc.system": "grpc", "net.peer.port": "50123", "rpc.method": "GenerateOtp"},
        start_time=1_000,
    )
    step = tracer.start_span(
        "cognito_otp_generate",
        trace.set_span_in_context(server),
        attributes={"journey.run_id": "run-1", "otp.channel": "email"},
        start_time=2_000,
    )
    step.set_attributes({"journey.step.outcome": "failure", "journey.step.failure.retryable": True})
    step.set_attributes({"otp.attempts_remaining": 2, "journey.step.outcome": "abort"})  # moved last
    step.add_event(
        "journey.step.completed",
        {"journey.event_data.truncated": False, "journey.event_data.input": '{"a":1}'},
        timestamp=3_000,
    )
    step.set_status(Status(StatusCode.ERROR, "COGNITO_UNAVAILABLE"))
    call = tracer.start_span(
        "CognitoIdentityProvider.InitiateAuth",
        trace.set_span_in_context(step),
        SpanKind.CLIENT,
        {"rpc.system": "aws-api", "http.response.status_code": 503, "aws.retry_attempts": 1},
        start_time=2_500,
    )
    call.end(4_000)
    step.end(5_000)
    server.set_attribute("rpc.grpc.status_code", 14)
    server.set_status(StatusCode.ERROR, "UNAVAILABLE:")
    server.end(6_000)


@pytest.mark.parametrize("random", [False, True], ids=["counted-ids", "random-ids"])
def test_a_step_s_spans_are_the_sdk_s(random: bool) -> None:
    assert _same(_step, random=random) == 3


class Key(StrEnum):
    NAMED = "named.key"


def _keys(tracer: trace.Tracer) -> None:
    odd: dict[Any, Any] = {3: "a number key", Key.NAMED: "x", "": "dropped"}
    span = tracer.start_span("keys", attributes=odd, start_time=1)
    span.set_attribute(Key.NAMED, "set alone")
    span.set_attributes({4.5: "a float key", "plain": "y"})  # type: ignore[dict-item]
    span.add_event("event", {7: "seven", Key.NAMED: True}, timestamp=2)  # type: ignore[dict-item]
    span.end(3)


def test_keys_that_are_no_plain_str_are_kept_made_str_or_dropped_as_by_the_sdk() -> None:
    _same(_keys)


def _values(tracer: trace.Tracer) -> None:
    span = tracer.start_span("values", start_time=1)
    span.set_attributes(
        {
            "str": "ada",
            "bool": False,
            "int": -7,
            "float": 0.25,
            "bytes": b"\x00\x01",
            "none": None,
            "strs": ["a", "b"],
            "ints": (1, 2),
            "nested": {"k": [1, "x"]},
            "": "an empty key is dropped",
        }
    )
    span.set_attribute(3, "a key that is no str is dropped")  # type: ignore[arg-type]
    span.add_event("no attributes", timestamp=2)
    span.end(3)


def test_every_attribute_type_and_invalid_key_is_kept_or_dropped_as_by_the_sdk() -> None:
    _same(_values)


def _over_limits(tracer: trace.Tracer) -> None:
    linked = SpanContext(0xAB, 0xCD, False, TraceFlags(1))
    span = tracer.start_span(
        "limits",
        attributes={"a": "1", "b": "2"},
        links=[Link(linked, {"x": "1", "y": "2", "z": "3"}), Link(linked), Link(trace.INVALID_SPAN_CONTEXT)],
        start_time=1,
    )
    span.set_attributes({"c": "a value longer than the limit", "d": "4", "a": "again"})
    for index in range(4):
        span.add_event(f"event {index}", {"p": "1", "q": "2", "r": "3"}, timestamp=10 + index)
    span.add_link(linked, {"w": "late", "v": "two", "u": "three"})  # one dropped by the limit of two
    span.end(20)


def test_limits_evict_the_oldest_and_count_what_they_drop_as_the_sdk_does() -> None:
    limits = SpanLimits(
        max_span_attributes=3,
        max_events=2,
        max_event_attributes=2,
        max_links=1,
        max_link_attributes=2,
        max_attribute_length=5,
    )
    _same(_over_limits, limits)


def test_spans_whose_every_attribute_was_dropped_still_say_how_many() -> None:
    nothing = SpanLimits(max_span_attributes=0, max_event_attributes=0, max_link_attributes=0)
    _same(_over_limits, nothing)


def _statuses_names_and_ended(tracer: trace.Tracer) -> None:
    first = tracer.start_span("ok then error", start_time=1)
    first.set_status(StatusCode.UNSET)
    first.set_status(Status(StatusCode.OK))
    first.set_status(StatusCode.ERROR, "ignored: OK is final")
    first.update_name("renamed")
    first.end(2)
    first.set_attribute("after", "the end")  # ignored, as are the rest
    first.add_event("after", timestamp=3)
    first.set_status(StatusCode.ERROR)
    first.update_name("too late")
    first.end(4)  # a second end changes nothing
    second = tracer.start_span("error", kind=SpanKind.PRODUCER, start_time=5)
    second.set_status(Status(StatusCode.ERROR, "first"))
    second.set_status(Status(StatusCode.ERROR, "second"))
    second.set_status(Status(StatusCode.UNSET))
    second.end(6)


def test_status_rules_renames_and_ended_spans_are_the_sdk_s() -> None:
    assert _same(_statuses_names_and_ended) == 2


def _exceptions(tracer: trace.Tracer) -> None:
    span = tracer.start_span("recorded", start_time=1)
    try:
        raise ValueError("a bug")
    except ValueError as error:
        span.record_exception(error, {"extra": "1"}, timestamp=2)
    span.end(3)
    with pytest.raises(KeyError), tracer.start_span("left by an exception", start_time=4):
        raise KeyError("key")


def test_exceptions_are_recorded_as_by_the_sdk(monkeypatch: pytest.MonkeyPatch) -> None:
    # A span ended by leaving its `with` block takes the time then: the same clock for both tracers.
    monkeypatch.setattr("opentelemetry.sdk.trace.time_ns", lambda: 7_000)
    monkeypatch.setattr("time.time_ns", lambda: 7_000)
    assert _same(_exceptions) == 2


@pytest.mark.parametrize(
    "sampler",
    [
        ALWAYS_ON,
        ALWAYS_OFF,
        ParentBased(ALWAYS_OFF),
        TraceIdRatioBased(0.5),
        ParentBased(TraceIdRatioBased(0.0)),
    ],
    ids=["always_on", "always_off", "parentbased_always_off", "traceidratio", "parentbased_traceidratio"],
)
def test_sampling_decides_as_in_the_sdk(sampler: Sampler) -> None:
    def play(tracer: trace.Tracer) -> None:
        for _ in range(8):  # roots (new trace ids) and children of a sampled remote parent
            tracer.start_span("root", start_time=1).end(2)
            tracer.start_span("child", trace.set_span_in_context(NonRecordingSpan(REMOTE)), start_time=1).end(
                2
            )

    _same(play, sampler=sampler)


UNSAMPLED_REMOTE = SpanContext(REMOTE.trace_id, REMOTE.span_id, True, TraceFlags(0), REMOTE.trace_state)


class RecordOnly(Sampler):
    """Records without sampling, and says so in an attribute and in the trace state."""

    def should_sample(self, *_: Any, **__: Any) -> SamplingResult:
        return SamplingResult(
            Decision.RECORD_ONLY, {"sampler.said": "record"}, TraceState([("sampler", "record-only")])
        )

    def get_description(self) -> str:
        return "RecordOnly"


@pytest.mark.parametrize(
    "sampler", [None, ParentBased(ALWAYS_ON), RecordOnly()], ids=["default", "parentbased", "record-only"]
)
def test_children_of_unsampled_remote_and_of_local_parents_are_decided_as_in_the_sdk(
    sampler: Sampler | None,
) -> None:
    def play(tracer: trace.Tracer) -> None:
        unsampled = trace.set_span_in_context(NonRecordingSpan(UNSAMPLED_REMOTE))
        child = tracer.start_span("under an unsampled remote parent", unsampled, start_time=1)
        root = tracer.start_span("root", attributes={"a": "1"}, start_time=1)
        local = tracer.start_span("under a local parent", trace.set_span_in_context(root), start_time=2)
        for span in (local, root, child):
            span.end(3)

    if isinstance(sampler, RecordOnly):  # nothing sampled, so nothing exported: compare what was recorded
        sdk_spans, step_spans = _both(play, sampler=sampler)
        assert sdk_spans == step_spans == []
        for provider in (
            TracerProvider(sampler=sampler, shutdown_on_exit=False),
            StepTracerProvider(sampler=sampler),
        ):
            span = provider.get_tracer("t").start_span("recorded", attributes={"a": "1"})
            assert span.is_recording() and not span.get_span_context().trace_flags.sampled
            assert dict(span.attributes) == {"sampler.said": "record"}  # type: ignore[attr-defined]
            assert span.get_span_context().trace_state == TraceState([("sampler", "record-only")])
        return
    _same(play, sampler=sampler)


class Hooks(SpanProcessor):
    """What each hook of a processor heard, in order."""

    def __init__(self, heard: list[str], name: str) -> None:
        self._heard, self._name = heard, name

    def _on_ending(self, span: Any) -> None:
        self._heard.append(f"{self._name} ending {span.name}")

    def on_end(self, span: Any) -> None:
        self._heard.append(f"{self._name} ended {span.name}")


def test_processors_hear_a_span_ending_then_ended_in_the_sdk_s_order() -> None:
    orders = []
    for provider in (TracerProvider(shutdown_on_exit=False), StepTracerProvider()):
        heard: list[str] = []
        provider.add_span_processor(Hooks(heard, "first"))
        provider.add_span_processor(Hooks(heard, "second"))
        provider.get_tracer("t").start_span("span").end()
        orders.append(heard)
    assert (
        orders[0]
        == orders[1]
        == [
            "first ending span",
            "second ending span",
            "first ended span",
            "second ended span",
        ]
    )


def test_unsampled_spans_have_the_sdk_s_context_and_record_nothing() -> None:
    for provider in (
        TracerProvider(sampler=ALWAYS_OFF, id_generator=CountingIds(), shutdown_on_exit=False),
        StepTracerProvider(sampler=ALWAYS_OFF, id_generator=CountingIds()),
    ):
        span = provider.get_tracer("t").start_span("dropped")
        assert not span.is_recording()
        assert span.get_span_context().span_id == 0x1002
        assert not span.get_span_context().trace_flags.sampled


def test_as_the_current_span_a_step_span_parents_what_is_started_under_it() -> None:
    exporter = InMemorySpanExporter()
    provider = StepTracerProvider(resource=RESOURCE)
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    tracer = provider.get_tracer("otp_step_service")
    with tracer.start_as_current_span("outer") as outer:
        assert trace.get_current_span() is outer
        tracer.start_span("inner").end()
    inner, ended = exporter.get_finished_spans()
    assert inner.parent == ended.context
    assert inner.context.trace_id == ended.context.trace_id
    assert trace.get_current_span() is trace.INVALID_SPAN
