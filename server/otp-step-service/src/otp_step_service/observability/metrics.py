"""Prometheus metrics: what an SRE needs to see the service's rate, errors and latency, and the product's
health (codes sent per channel and country, validations, lockouts, send-budget trips, Cognito, the store).

One `Metrics` object owns every instrument on its own registry (tests pass a fresh `CollectorRegistry`, so
nothing is global) and is handed to the parts that record through `Service.build(metrics=...)`. No metrics
object, no recording: the service without `OTP_STEP_METRICS_LISTEN` pays nothing.

Labels are bounded by construction: enum values (step type, outcome, failure code, channel, Cognito error
kind, store operation), configured connection names, gRPC methods and ISO region codes — never an
identifier, a code, a session or a run id. Names follow the OpenTelemetry semantic conventions where one
exists (`rpc.server.call.duration` → `rpc_server_call_duration_seconds`); the rest are `otp_*`.
"""

from __future__ import annotations

import threading
from collections import Counter as Tally
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import phonenumbers
from prometheus_client import CollectorRegistry, Counter, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.metrics import MetricWrapperBase
from prometheus_client.registry import Collector

from otp_step_service.steps.circuit_breaker import CircuitBreaker, CircuitState
from otp_step_service.steps.outcomes import FailureCode, StepOutcome
from otp_step_service.steps.ports import Connection

# Step and Cognito latencies: a few ms (emulator, cache) to Cognito's seconds; the call timeout defaults to 5 s.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
# Store operations: sub-millisecond in memory, a Redis round trip or two otherwise.
STORE_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)

# The failure codes that mean a defence tripped, counted on their own so alerts need no failure-code regex.
LOCKOUT = FailureCode.IDENTIFIER_LOCKED
# The cooldown, the identifier's budget (RESEND_TOO_SOON), and the connection / number-range / address budgets
# (SEND_BUDGET_EXHAUSTED, the spend circuit breaker).
BUDGET_TRIPS = frozenset({FailureCode.RESEND_TOO_SOON, FailureCode.SEND_BUDGET_EXHAUSTED})


Instrument = TypeVar("Instrument", bound=MetricWrapperBase)


class Series(Generic[Instrument]):
    """A labelled instrument whose children are looked up once per label values.

    prometheus_client's `labels()` checks the values, converts each to str and takes the instrument's lock on
    every call: more than the increment or observation itself (1.2-1.7 us of 1.9-2.3 us a recorded value,
    several a step). Here a child found once is kept in a plain dict, keyed by the values as given: the
    same children the instrument itself keeps for ever, so the dict holds no more than it does (labels are
    bounded by construction, above). Only the event loop records; scrapes read the instrument, not this.
    """

    __slots__ = ("_children", "instrument")

    def __init__(self, instrument: Instrument) -> None:
        self.instrument = instrument
        self._children: dict[tuple[str, ...], Instrument] = {}

    def labels(self, *values: str) -> Instrument:
        """The child for `values` (the instrument's label names, in order)."""
        child = self._children.get(values)
        if child is None:
            child = self._children[values] = self.instrument.labels(*values)
        return child


@dataclass(frozen=True, slots=True)
class MetricDoc:
    """One row of the metric catalogue (docs/reference/metrics.md is generated from it)."""

    name: str
    kind: str
    labels: tuple[str, ...]
    meaning: str


CATALOGUE: tuple[MetricDoc, ...] = (
    MetricDoc(
        "rpc_server_call_duration_seconds",
        "histogram",
        ("rpc_system", "rpc_service", "rpc_method", "rpc_grpc_status_code"),
        "every unary RPC (steps, health, reflection) from its stream opening to its status (OTel rpc.server.call.duration)",
    ),
    MetricDoc(
        "otp_steps_total",
        "counter",
        ("step_type", "connection", "outcome", "failure_code"),
        "finished steps; outcome success / failure / abort, failure_code empty on success",
    ),
    MetricDoc(
        "otp_step_duration_seconds",
        "histogram",
        ("step_type", "outcome"),
        "a step's own time, from connection look-up to its outcome (no request reading)",
    ),
    MetricDoc(
        "otp_codes_sent_total",
        "counter",
        ("connection", "channel", "country"),
        "codes Cognito accepted to deliver; country is the SMS destination's ISO region, 'unknown' otherwise",
    ),
    MetricDoc(
        "otp_validations_total",
        "counter",
        ("connection", "result"),
        "Validate steps that judged a code: result succeeded / failed (system failures are not judgements)",
    ),
    MetricDoc(
        "otp_lockouts_total",
        "counter",
        ("step_type", "connection"),
        "steps refused because the identifier is locked out (IDENTIFIER_LOCKED)",
    ),
    MetricDoc(
        "otp_send_budget_trips_total",
        "counter",
        ("connection", "channel"),
        "Generates refused by the resend cooldown or a send budget (RESEND_TOO_SOON, SEND_BUDGET_EXHAUSTED)",
    ),
    MetricDoc(
        "otp_cognito_calls_total",
        "counter",
        ("connection", "operation", "error_type"),
        "Cognito API calls (each try); error_type is the CognitoErrorKind, empty on success",
    ),
    MetricDoc(
        "otp_cognito_call_duration_seconds",
        "histogram",
        ("connection", "operation"),
        "one Cognito API call (one try), bounded by its time budget",
    ),
    MetricDoc(
        "otp_cognito_retries_total",
        "counter",
        ("connection", "operation", "error_type"),
        "Cognito calls tried again under the operation's RetryPolicy, by the error that caused it",
    ),
    MetricDoc(
        "otp_challenge_store_operation_duration_seconds",
        "histogram",
        ("operation",),
        "one challenge-store operation (begin_send, finish_send, begin_attempt, finish_attempt, load, events)",
    ),
    MetricDoc(
        "otp_challenge_store_errors_total",
        "counter",
        ("operation", "error_type"),
        "challenge-store operations that failed; error_type is the underlying exception's class",
    ),
    MetricDoc(
        "otp_cognito_circuit_open",
        "gauge",
        ("connection",),
        "1 while the connection's circuit breaker is open (steps fail fast with COGNITO_UNAVAILABLE), else 0",
    ),
    MetricDoc("otp_steps_in_flight", "gauge", (), "steps running now in this process (Admission's count)"),
    MetricDoc(
        "otp_rejected_calls_total",
        "counter",
        ("reason",),
        "calls refused before any work: overload (OVERLOADED, CALLER_OVERLOADED, IDLE_STREAM), the caller's rate "
        "(CALLER_RATE_LIMITED, CHALLENGE_STORE_UNAVAILABLE when the Redis counting it fails), authentication (NO_CREDENTIAL, INVALID_TOKEN, TOKENS_NOT_CONFIGURED), "
        "authorization (UNKNOWN_CALLER, CONNECTION_NOT_PERMITTED, TENANT_MISMATCH) and steps that could not run "
        "(CHALLENGE_STORE_UNAVAILABLE: the store failed before Cognito was asked; EXECUTION_IN_FLIGHT)",
    ),
    MetricDoc(
        "otp_trace_spans_exported_total", "counter", (), "spans the OTLP collector accepted (tracing on)"
    ),
    MetricDoc(
        "otp_trace_spans_dropped_total",
        "counter",
        ("reason",),
        "spans dropped (queue_full: export slower than spans end; export_failed: the collector refused or "
        "could not be reached; already_shutdown: ended after the exporter stopped; unencodable: a value no "
        "attribute may hold; tracing on)",
    ),
    MetricDoc("otp_trace_spans_queued", "gauge", (), "spans waiting for export now (tracing on)"),
)

_DOCUMENTED = {metric.name: metric for metric in CATALOGUE}


class AdmissionCounts(Collector):
    """Exposes Admission's own counts at scrape time, so the request path pays nothing for them."""

    def __init__(self, in_flight: Callable[[], int], refusals: Sequence[Mapping[str, int]]) -> None:
        self._in_flight = in_flight
        self._refusals = refusals

    def collect(self) -> Iterable[Any]:
        """The in-flight gauge and the refusals counter, read now."""
        yield GaugeMetricFamily("otp_steps_in_flight", "Steps running now", value=self._in_flight())
        refused = CounterMetricFamily(
            "otp_rejected_calls", "Calls refused before any work", labels=["reason"]
        )
        # Admission's and Authentication's reasons are distinct names; summing keeps that true if one recurs.
        totals: Tally[str] = Tally()
        for source in self._refusals:
            # Read on the scrape (or OTLP) thread while the event loop counts: dict() copies a dict in one
            # step under the GIL, where iterating it could meet a reason added meanwhile.
            totals.update(dict(source))
        for reason, count in sorted(totals.items()):
            refused.add_metric([reason], count)
        yield refused


class SpanExport(Collector):
    """Exposes the span processor's export counts at scrape time (span_export.SPAN_EXPORT)."""

    def collect(self) -> Iterable[Any]:
        """Spans exported, dropped by reason, and queued now."""
        from otp_step_service.observability.span_export import SPAN_EXPORT

        exported = CounterMetricFamily("otp_trace_spans_exported", "Spans the OTLP collector accepted")
        exported.add_metric([], SPAN_EXPORT.exported)
        yield exported
        dropped = CounterMetricFamily(
            "otp_trace_spans_dropped",
            "Spans dropped (queue_full: export slower than spans end; export_failed: not accepted)",
            labels=["reason"],
        )
        for reason in ("queue_full", *sorted(set(SPAN_EXPORT.dropped) - {"queue_full"})):
            dropped.add_metric([reason], SPAN_EXPORT.dropped[reason])
        yield dropped
        yield GaugeMetricFamily(
            "otp_trace_spans_queued", "Spans waiting for export", value=SPAN_EXPORT.queued
        )


class CircuitStates(Collector):
    """Exposes each connection's circuit breaker at scrape time (the connections as they are after reloads)."""

    def __init__(self, connections: Callable[[], Mapping[str, Connection]]) -> None:
        self._connections = connections

    def collect(self) -> Iterable[Any]:
        """One sample per connection with a breaker: 1 open, 0 otherwise."""
        family = GaugeMetricFamily(
            "otp_cognito_circuit_open",
            "Whether the connection's circuit breaker is open",
            labels=["connection"],
        )
        for name, connection in sorted(self._connections().items()):
            breaker = getattr(connection.gateway, "breaker", None)
            if isinstance(breaker, CircuitBreaker):
                family.add_metric([name], 1.0 if breaker.state is CircuitState.OPEN else 0.0)
        yield family


class Metrics:
    """Every instrument of the service, on one registry."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry()
        # Name, labels and help text come from the catalogue: each metric is described once.
        self.rpc_duration = self._histogram("rpc_server_call_duration_seconds", LATENCY_BUCKETS)
        self.steps = self._counter("otp_steps_total")
        self.step_duration = self._histogram("otp_step_duration_seconds", LATENCY_BUCKETS)
        self.codes_sent = self._counter("otp_codes_sent_total")
        self.validations = self._counter("otp_validations_total")
        self.lockouts = self._counter("otp_lockouts_total")
        self.budget_trips = self._counter("otp_send_budget_trips_total")
        self.cognito_calls = self._counter("otp_cognito_calls_total")
        self.cognito_duration = self._histogram("otp_cognito_call_duration_seconds", LATENCY_BUCKETS)
        self.cognito_retries = self._counter("otp_cognito_retries_total")
        self.store_duration = self._histogram("otp_challenge_store_operation_duration_seconds", STORE_BUCKETS)
        self.store_errors = self._counter("otp_challenge_store_errors_total")
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self.port = 0

    def _counter(self, name: str) -> Series[Counter]:
        doc = _DOCUMENTED[name]
        assert doc.kind == "counter", name
        # prometheus_client appends _total to a counter's name itself.
        return Series(Counter(name.removesuffix("_total"), doc.meaning, doc.labels, registry=self.registry))

    def _histogram(self, name: str, buckets: Sequence[float]) -> Series[Histogram]:
        doc = _DOCUMENTED[name]
        assert doc.kind == "histogram", name
        return Series(Histogram(name, doc.meaning, doc.labels, buckets=buckets, registry=self.registry))

    # -- wiring -------------------------------------------------------------------------------------------
    def watch_admission(self, in_flight: Callable[[], int], *refusals: Mapping[str, int]) -> None:
        """Expose Admission's in-flight count and the refusals of Admission and Authentication, each a
        mapping of reason to count (read at scrape time)."""
        self.registry.register(AdmissionCounts(in_flight, refusals))

    def watch_span_export(self) -> None:
        """Expose the span processor's exported, dropped and queued spans (tracing on)."""
        self.registry.register(SpanExport())

    def watch_circuits(self, connections: Callable[[], Mapping[str, Connection]]) -> None:
        """Expose the circuit breakers of the connections `connections()` returns (read at scrape time)."""
        self.registry.register(CircuitStates(connections))

    def cognito(self, connection: str) -> CognitoCallMetrics:
        """The recorder one connection's Cognito gateway uses."""
        return CognitoCallMetrics(self, connection)

    # -- steps --------------------------------------------------------------------------------------------
    def step_finished(
        self,
        step_type: str,
        connection: str,
        channel: str,
        identifier: str,
        default_phone_region: str | None,
        outcome: StepOutcome[Any],
        seconds: float,
        *,
        validating: bool,
    ) -> None:
        """Record one finished step and what it means for the product counters."""
        failure = outcome.failed
        code = failure.code if failure is not None else None
        self.steps.labels(step_type, connection, outcome.kind, code.value if code else "").inc()
        self.step_duration.labels(step_type, outcome.kind).observe(seconds)
        if code is LOCKOUT:
            self.lockouts.labels(step_type, connection).inc()
        if validating:
            if code is None:
                self.validations.labels(connection, "succeeded").inc()
            elif code in JUDGED_WRONG:
                self.validations.labels(connection, "failed").inc()
            return
        if code is None:
            country = destination_country(identifier, default_phone_region) if channel == "SMS" else "unknown"
            self.codes_sent.labels(connection, channel or "unknown", country).inc()
        elif code in BUDGET_TRIPS:
            self.budget_trips.labels(connection, channel or "unknown").inc()

    # -- scrape endpoint ----------------------------------------------------------------------------------
    def serve(self, listen: str) -> int:
        """Start the scrape endpoint (a small HTTP server on its own thread, off the event loop) on
        `host:port`; returns the bound port."""
        host, _, port = listen.rpartition(":")
        self._server, self._thread = start_http_server(
            int(port), addr=host.strip("[]"), registry=self.registry
        )
        self.port = int(self._server.server_port)
        return self.port

    def close(self) -> None:
        """Stop the scrape endpoint."""
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
            self._server = None


# A Validate's code was judged and found wrong: what `validations{result="failed"}` counts.
JUDGED_WRONG = frozenset({FailureCode.INVALID_CODE, FailureCode.ATTEMPTS_EXHAUSTED})


def destination_country(identifier: str, default_region: str | None) -> str:
    """The ISO region of an SMS destination (a few hundred values at most), 'unknown' when unparseable."""
    text = identifier.strip()
    try:
        number = phonenumbers.parse(text, None if text.startswith("+") else default_region)
    except phonenumbers.NumberParseException:
        return "unknown"
    # Fictional and unassigned numbers have no region of their own; their country code's main region still
    # says where an SMS would be billed, which is what an SMS-pumping alert needs.
    region = phonenumbers.region_code_for_number(number) or phonenumbers.region_code_for_country_code(
        number.country_code or 0
    )
    return region if region and region != phonenumbers.UNKNOWN_REGION else "unknown"


class CognitoCallMetrics:
    """What one connection's Cognito gateway records: each try, its latency, and each retry."""

    __slots__ = ("_calls", "_connection", "_duration", "_retries")

    def __init__(self, metrics: Metrics, connection: str) -> None:
        self._connection = connection
        self._calls = metrics.cognito_calls
        self._duration = metrics.cognito_duration
        self._retries = metrics.cognito_retries

    def call(self, operation: str, error_type: str, seconds: float) -> None:
        """One try of `operation` ended (error_type empty on success)."""
        self._calls.labels(self._connection, operation, error_type).inc()
        self._duration.labels(self._connection, operation).observe(seconds)

    def retry(self, operation: str, error_type: str) -> None:
        """`operation` is tried again after `error_type`."""
        self._retries.labels(self._connection, operation, error_type).inc()
