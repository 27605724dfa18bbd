"""The service's tracer: OpenTelemetry's tracing API, each span recorded for a fraction of the SDK's cost.

Every step is traced by default, so a span's own cost is paid three times a step (server, step, Cognito call).
The SDK's span is made for any use: per span it builds a bounded attribute mapping with its own lock that
validates each value on its own, two bounded lists, a lock, a tracer-metrics hook, a loop over a composite
processor, and at its end a second, read-only copy of itself for the processors. Profiled in the saturated
service those objects were most of what tracing cost (docs/tracing.md, "Where the CPU goes").

Here a span is one object: attributes in a plain dict, checked by type in one comparison for the
API's plain values (str, bool, int, float; sequences go through the API's own cleaning), events and links in
lists, ended once and handed to the processors as it is (it reads as the SDK's ReadableSpan does). What is
kept from the SDK is everything that decides what a span says: the sampler of OTEL_TRACES_SAMPLER[_ARG]
with its trace state and attributes, random ids and the W3C random-trace-id flag, the limits of
OTEL_SPAN_* / OTEL_ATTRIBUTE_* (oldest entry evicted and counted as dropped, as the SDK does), its status rules
(OK is final, UNSET ignored), exception events, and its span processors' interface. The OTLP bytes of a span
made here equal those of the same span made by the SDK (tests/unit/test_step_tracer.py).

Unlike the SDK's, a span takes no lock: the service makes and ends its spans on the event loop's thread.
Each dict and list operation is atomic under the interpreter lock, but ending one span from two threads at
once could hand it to the processors twice.
"""

from __future__ import annotations

import logging
import time
import traceback
from collections.abc import Iterator, Mapping, Sequence
from types import MappingProxyType
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.attributes import _clean_attribute_value
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import SpanLimits, SpanProcessor, sampling
from opentelemetry.sdk.trace.id_generator import IdGenerator, RandomIdGenerator
from opentelemetry.sdk.trace.sampling import Decision
from opentelemetry.sdk.util.instrumentation import InstrumentationScope
from opentelemetry.trace import Link, SpanContext, SpanKind, Status, StatusCode, TraceFlags
from opentelemetry.util import types
from opentelemetry.util._decorator import _agnosticcontextmanager

log = logging.getLogger(__name__)

_PLAIN = frozenset((str, bool, int, float))
_STR = frozenset((str,))
_UNSET = Status(StatusCode.UNSET)


class _Bounded(dict[str, Any]):
    """A span's, or an event's, attributes: a plain dict (the encoder reads it in C) and how many the limit
    dropped."""

    __slots__ = ("dropped",)

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0


def _put(into: _Bounded, key: str, value: Any, limit: int | None, max_length: int | None) -> None:
    """Sets one attribute as the SDK's BoundedAttributes does: an invalid key (empty, or no str) dropped and
    counted, the value cleaned by the API's rules (skipped for a plain str, bool, int or float that needs
    no truncation), a set key moved last, and at the limit the oldest evicted and counted."""
    if limit == 0:
        into.dropped += 1
        return
    if not key or not isinstance(key, str):
        log.warning("invalid attribute key %r dropped", key)
        into.dropped += 1
        return
    if value.__class__ not in _PLAIN or (max_length is not None and value.__class__ is str):
        value = _clean_attribute_value(value, max_length)
    _insert(into, key, value, limit)


def _insert(into: _Bounded, key: str, value: Any, limit: int | None) -> None:
    if key in into:
        del into[key]
    elif limit is not None and len(into) >= limit:
        del into[next(iter(into))]
        into.dropped += 1
    into[key] = value


def _put_all(
    into: _Bounded, attributes: Mapping[str, Any], limit: int | None, max_length: int | None
) -> None:
    """Sets several attributes as BoundedAttributes does (its `_set_items`). At once, in C, when cleaning
    would change nothing: new keys, all of them plain non-empty str, plain values, room under the limit and
    no length limit (a step's attributes, always). Otherwise the mapping is cleaned by the API at once (a
    key that is no str made one where it can be, an empty one dropped), what it dropped counted."""
    if (
        max_length is None
        and (limit is None or len(into) + len(attributes) <= limit)
        and _PLAIN.issuperset(map(type, attributes.values()))
        and _STR.issuperset(map(type, attributes))
        and "" not in attributes
        and into.keys().isdisjoint(attributes)
    ):
        into.update(attributes)
        return
    if limit == 0:
        into.dropped += len(attributes)
        return
    cleaned = _clean_attribute_value(attributes, max_length)
    into.dropped += len(attributes) - len(cleaned)
    for key, value in cleaned.items():
        _insert(into, key, value, limit)


class _Link(Link):
    """A link whose dropped count is read from its attributes (the API's Link reads it only from a
    BoundedAttributes)."""

    @property
    def dropped_attributes(self) -> int:
        return int(getattr(self.attributes, "dropped", 0))


class _Entries(list[Any]):
    """A span's events or links: a list and how many the limit dropped (oldest first)."""

    __slots__ = ("dropped",)

    def __init__(self) -> None:
        super().__init__()
        self.dropped = 0

    def add(self, entry: Any, limit: int | None) -> None:
        if limit == 0:
            self.dropped += 1
            return
        if limit is not None and len(self) >= limit:
            del self[0]
            self.dropped += 1
        self.append(entry)


class SpanEvent:
    """An event of a span: name, timestamp and attributes (read as the SDK's Event is)."""

    __slots__ = ("_attributes", "name", "timestamp")

    def __init__(self, name: str, attributes: _Bounded, timestamp: int) -> None:
        self.name, self._attributes, self.timestamp = name, attributes, timestamp

    @property
    def attributes(self) -> Mapping[str, Any]:
        return self._attributes

    @property
    def dropped_attributes(self) -> int:
        return self._attributes.dropped


class RecordedSpan(trace.Span):
    """A sampled (or record-only) span. Writable until it ends; then read by the processors through the
    ReadableSpan interface (name, context, parent, kind, times, attributes, events, links, status, resource,
    instrumentation_scope)."""

    __slots__ = (
        "_attributes",
        "_context",
        "_end_time",
        "_events",
        "_links",
        "_record_exception",
        "_set_status_on_exception",
        "_status",
        "_tracer",
        "kind",
        "name",
        "parent",
        "start_time",
    )

    def __init__(
        self,
        tracer: StepTracer,
        name: str,
        context: SpanContext,
        parent: SpanContext | None,
        kind: SpanKind,
        start_time: int,
        record_exception: bool,
        set_status_on_exception: bool,
    ) -> None:
        self._tracer = tracer
        self.name = name
        self._context = context
        self.parent = parent
        self.kind = kind
        self.start_time = start_time
        self._end_time: int | None = None
        self._attributes = _Bounded()
        # Made on the first event or link: most spans have neither.
        self._events: _Entries | tuple[()] = ()
        self._links: _Entries | tuple[()] = ()
        self._status = _UNSET
        self._record_exception = record_exception
        self._set_status_on_exception = set_status_on_exception

    # -- the API --------------------------------------------------------------------------------------------
    def get_span_context(self) -> SpanContext:
        return self._context

    def is_recording(self) -> bool:
        return self._end_time is None

    def set_attribute(self, key: str, value: types.AttributeValue) -> None:
        if self._ended("set_attribute"):
            return
        limits = self._tracer.limits
        _put(self._attributes, key, value, limits.max_span_attributes, limits.max_span_attribute_length)

    def set_attributes(self, attributes: Mapping[str, types.AttributeValue]) -> None:
        if self._ended("set_attributes"):
            return
        limits = self._tracer.limits
        _put_all(self._attributes, attributes, limits.max_span_attributes, limits.max_span_attribute_length)

    def add_event(self, name: str, attributes: types.Attributes = None, timestamp: int | None = None) -> None:
        if self._ended("add_event"):
            return
        limits = self._tracer.limits
        bounded = _Bounded()
        if attributes:
            _put_all(bounded, attributes, limits.max_event_attributes, limits.max_attribute_length)
        event = SpanEvent(name, bounded, timestamp if timestamp is not None else time.time_ns())
        if not self._events:
            self._events = _Entries()
        self._events.add(event, limits.max_events)

    def add_link(self, context: SpanContext, attributes: types.Attributes = None) -> None:
        if self._ended("add_link") or not _is_valid_link(context, attributes):
            return
        limits = self._tracer.limits
        bounded = _Bounded()
        if attributes:
            _put_all(bounded, attributes, limits.max_link_attributes, limits.max_attribute_length)
        if not self._links:
            self._links = _Entries()
        self._links.add(_Link(context, bounded), limits.max_links)

    def update_name(self, name: str) -> None:
        if not self._ended("update_name"):
            self.name = name

    def set_status(self, status: Status | StatusCode, description: str | None = None) -> None:
        # The SDK's rules: OK is final, UNSET changes nothing.
        if self._ended("set_status") or self._status.status_code is StatusCode.OK:
            return
        if isinstance(status, Status):
            if status.status_code is not StatusCode.UNSET:
                self._status = status
        elif status is not StatusCode.UNSET:
            self._status = Status(status, description)

    def record_exception(
        self,
        exception: BaseException,
        attributes: types.Attributes = None,
        timestamp: int | None = None,
        escaped: bool = False,
    ) -> None:
        kind = type(exception)
        module = kind.__module__
        recorded: dict[str, Any] = {
            "exception.type": f"{module}.{kind.__qualname__}"
            if module and module != "builtins"
            else kind.__qualname__,
            "exception.message": str(exception),
            "exception.stacktrace": "".join(
                traceback.format_exception(kind, value=exception, tb=exception.__traceback__)
            ),
            "exception.escaped": str(escaped),
        }
        if attributes:
            recorded.update(attributes)
        self.add_event("exception", recorded, timestamp)

    def end(self, end_time: int | None = None) -> None:
        if self._end_time is not None:
            log.warning("span %s ended twice", self.name)
            return
        self._end_time = end_time if end_time is not None else time.time_ns()
        processors = self._tracer.processors
        for processor in processors:  # as the SDK: every processor's `_on_ending`, then every `on_end`
            processor._on_ending(self)  # type: ignore[arg-type]
        for processor in processors:
            processor.on_end(self)  # type: ignore[arg-type]  # read as a ReadableSpan

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, tb: Any) -> None:
        """As the SDK's span: an exception leaving the block is recorded, and marks the span ERROR."""
        if error is not None and self.is_recording():
            if self._record_exception:
                self.record_exception(error, escaped=True)
            if self._set_status_on_exception:
                self.set_status(Status(StatusCode.ERROR, f"{type(error).__name__}: {error}"))
        self.end()

    def _ended(self, what: str) -> bool:
        if self._end_time is None:
            return False
        log.warning("%s on the ended span %s", what, self.name)
        return True

    # -- read as a ReadableSpan -----------------------------------------------------------------------------
    @property
    def context(self) -> SpanContext:
        return self._context

    @property
    def end_time(self) -> int | None:
        return self._end_time

    @property
    def attributes(self) -> Mapping[str, Any]:
        return MappingProxyType(self._attributes)

    @property
    def events(self) -> Sequence[SpanEvent]:
        return tuple(self._events)

    @property
    def links(self) -> Sequence[Link]:
        return tuple(self._links)

    @property
    def status(self) -> Status:
        return self._status

    @property
    def resource(self) -> Resource:
        return self._tracer.resource

    @property
    def instrumentation_scope(self) -> InstrumentationScope:
        return self._tracer.scope

    @property
    def dropped_attributes(self) -> int:
        return self._attributes.dropped

    @property
    def dropped_events(self) -> int:
        return getattr(self._events, "dropped", 0)

    @property
    def dropped_links(self) -> int:
        return getattr(self._links, "dropped", 0)

    def __repr__(self) -> str:
        return f"RecordedSpan(name={self.name!r}, context={self._context!r})"


def _is_valid_link(context: SpanContext, attributes: types.Attributes) -> bool:
    return bool(context and (context.is_valid or (attributes or context.trace_state)))


_FLAGS = {
    (sampled, random): TraceFlags(
        (TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
        | (TraceFlags.RANDOM_TRACE_ID if random else 0)
    )
    for sampled in (False, True)
    for random in (False, True)
}


class StepTracer(trace.Tracer):
    """Starts spans for one instrumentation scope; see the module docstring."""

    def __init__(self, provider: StepTracerProvider, scope: InstrumentationScope) -> None:
        self._provider = provider
        self.scope = scope
        self.resource = provider.resource
        self.limits = provider.limits
        self._sampler = provider.sampler
        # The SDK's default (OTEL_TRACES_SAMPLER unset or parentbased_always_on) is this very object.
        self._parent_based_always_on = provider.sampler is sampling.DEFAULT_ON
        self._ids = provider.id_generator

    @property
    def processors(self) -> tuple[SpanProcessor, ...]:
        return self._provider.processors

    def start_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
    ) -> trace.Span:
        parent: SpanContext | None = trace.get_current_span(context).get_span_context()
        ids = self._ids
        if parent is None or not parent.is_valid:
            parent = None
            trace_id = ids.generate_trace_id()
            random = ids.is_trace_id_random()
        else:
            trace_id = parent.trace_id
            random = parent.trace_flags.random_trace_id
        if self._parent_based_always_on:
            # The default sampler's decision, without its three calls and a result object: a root is
            # sampled, a child is as its parent, and the span takes the parent's trace state.
            sampled = parent is None or parent.trace_flags.sampled
            recording, trace_state = sampled, parent.trace_state if parent is not None else None
            sampler_attributes: types.Attributes = None
        else:
            decision = self._sampler.should_sample(context, trace_id, name, kind, attributes, links)
            sampled = decision.decision is Decision.RECORD_AND_SAMPLE
            recording = decision.decision is not Decision.DROP
            trace_state, sampler_attributes = decision.trace_state, decision.attributes
        span_context = SpanContext(
            trace_id, ids.generate_span_id(), False, _FLAGS[sampled, random], trace_state
        )
        if not recording:
            return trace.NonRecordingSpan(span_context)
        span = RecordedSpan(
            self,
            name,
            span_context,
            parent,
            kind,
            start_time if start_time is not None else time.time_ns(),
            record_exception,
            set_status_on_exception,
        )
        if self._parent_based_always_on:
            if attributes:
                span.set_attributes(attributes)
        elif sampler_attributes:
            span.set_attributes(sampler_attributes)
        for link in links or ():
            span.add_link(link.context, link.attributes)
        for processor in self._provider.processors:
            processor.on_start(span, context)  # type: ignore[arg-type]
        return span

    @_agnosticcontextmanager  # the API's own decorator for this method (usable in async code too)
    def start_as_current_span(
        self,
        name: str,
        context: otel_context.Context | None = None,
        kind: SpanKind = SpanKind.INTERNAL,
        attributes: types.Attributes = None,
        links: Sequence[Link] | None = (),
        start_time: int | None = None,
        record_exception: bool = True,
        set_status_on_exception: bool = True,
        end_on_exit: bool = True,
    ) -> Iterator[trace.Span]:
        span = self.start_span(
            name, context, kind, attributes, links, start_time, record_exception, set_status_on_exception
        )
        with trace.use_span(
            span,
            end_on_exit=end_on_exit,
            record_exception=record_exception,
            set_status_on_exception=set_status_on_exception,
        ) as current:
            yield current


class StepTracerProvider(trace.TracerProvider):
    """The tracer provider the service installs: the SDK's configuration (resource, sampler from
    OTEL_TRACES_SAMPLER[_ARG], limits from OTEL_SPAN_* / OTEL_ATTRIBUTE_*), this module's spans, and the
    SDK's span processor interface."""

    def __init__(
        self,
        resource: Resource | None = None,
        sampler: sampling.Sampler | None = None,
        limits: SpanLimits | None = None,
        id_generator: IdGenerator | None = None,
    ) -> None:
        self.resource = resource if resource is not None else Resource.create({})
        # The SDK's own reading of OTEL_TRACES_SAMPLER[_ARG] (its TracerProvider calls the same function).
        self.sampler = sampler if sampler is not None else sampling._get_from_env_or_default()
        self.limits = limits if limits is not None else SpanLimits()
        self.id_generator = id_generator if id_generator is not None else RandomIdGenerator()
        self.processors: tuple[SpanProcessor, ...] = ()
        self._tracers: dict[tuple[str, str | None, str | None], StepTracer] = {}
        self._shut_down = False

    def add_span_processor(self, processor: SpanProcessor) -> None:
        """Ended spans go to `processor` too (after those added before it)."""
        self.processors = (*self.processors, processor)

    def get_tracer(
        self,
        instrumenting_module_name: str,
        instrumenting_library_version: str | None = None,
        schema_url: str | None = None,
        attributes: types.Attributes = None,
    ) -> trace.Tracer:
        key = (instrumenting_module_name, instrumenting_library_version, schema_url)
        found = self._tracers.get(key) if not attributes else None
        if found is None:
            scope = InstrumentationScope(
                instrumenting_module_name, instrumenting_library_version, schema_url, attributes
            )
            found = StepTracer(self, scope)
            if not attributes:
                self._tracers[key] = found
        return found

    def force_flush(self, timeout_millis: int = 30_000) -> bool:
        """Every processor's queued spans sent now."""
        return all(processor.force_flush(timeout_millis) for processor in self.processors)

    def shutdown(self) -> None:
        """Every processor shut down once: what is queued is sent, later spans are dropped and counted."""
        if self._shut_down:
            return
        self._shut_down = True
        for processor in self.processors:
            processor.shutdown()
