"""OpenTelemetry: tracing set up from the standard OTEL_* variables (otel_env.py), and the step span.

Telemetry never breaks a step: with no exporter configured nothing is exported; an unreachable collector or a
full queue drops spans, never delays a request, and each drop is counted (span_export.py, exposed as
`otp_trace_spans_dropped_total`).
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from otp_step_service.observability import otel_env
from otp_step_service.steps.event_data import EventData
from otp_step_service.steps.outcomes import ErrorCategory, StepOutcome

if TYPE_CHECKING:  # the SDK is imported only when tracing is configured
    from opentelemetry.sdk.resources import Resource

    from otp_step_service.observability.step_tracer import StepTracerProvider

log = logging.getLogger(__name__)

TRACER_NAME = "otp_step_service"
STEP_COMPLETED_EVENT = "journey.step.completed"
# A proxy until a provider is installed, then it delegates: safe to take once at import.
_tracer = trace.get_tracer(TRACER_NAME)


def _tracing_off() -> bool:
    # No SDK provider installed: even a no-op span would cost its context switching, on every step.
    return isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


_sdk_tracer: trace.Tracer | None = None


def tracer() -> trace.Tracer:
    """The service's tracer: the installed provider's own once there is one (no proxy hop per span)."""
    global _sdk_tracer
    if _sdk_tracer is not None:
        return _sdk_tracer
    if _tracing_off():
        return _tracer
    _sdk_tracer = trace.get_tracer(TRACER_NAME)
    return _sdk_tracer


def tracing_configured(environ: Mapping[str, str] | None = None) -> bool:
    """True when the OTEL_* environment asks for span export (OTLP)."""
    if otel_env.sdk_disabled(environ):
        return False
    chosen = otel_env.exporters(otel_env.OTEL_TRACES_EXPORTER, environ)
    if "none" in chosen:
        return False
    env = otel_env.environment(environ)
    return "otlp" in chosen or bool(
        env.get(otel_env.OTEL_EXPORTER_OTLP_ENDPOINT) or env.get(otel_env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT)
    )


def configure_tracing() -> StepTracerProvider | None:
    """Install an SDK tracer provider exporting by OTLP when the environment configures one.

    Service name, resource attributes, sampler, endpoint, protocol and headers all come from the standard
    variables (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER[_ARG],
    OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT / PROTOCOL / HEADERS), the span processor's from OTEL_BSP_* with
    this service's defaults (otel_env.py, span_export.py).
    """
    if not tracing_configured():
        return None
    provider = tracer_provider()
    trace.set_tracer_provider(provider)
    log.info("tracing: exporting OTLP/%s", otel_env.protocol("traces"))
    return provider


def tracer_provider() -> StepTracerProvider:
    """The tracer provider `configure_tracing` installs: the service's resource, the sampler of
    OTEL_TRACES_SAMPLER, spans recorded by step_tracer.py, and the span processor exporting by OTLP
    (span_export.py)."""
    from otp_step_service.observability import span_export
    from otp_step_service.observability.step_tracer import StepTracerProvider

    provider = StepTracerProvider(resource=tracing_resource())
    provider.add_span_processor(span_export.span_processor(span_export.otlp_sender()))
    return provider


def tracing_resource() -> Resource:
    """The service's resource: OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, else service.name otp-step-service."""
    from opentelemetry.sdk.resources import Resource

    # Resource.create reads both variables itself; the default name applies only when neither names the service.
    named = otel_env.service_named()
    return Resource.create({} if named else {"service.name": otel_env.DEFAULT_SERVICE_NAME})


def refused(reason: str) -> None:
    """Mark the current call's server span as refused for `reason` (a bounded reason code, never a credential
    or an identifier): `error.type` on the span; the status stays the gRPC mapping's (refusals are not
    errors of this service)."""
    span = trace.get_current_span()
    if span.is_recording():
        span.set_attribute("error.type", reason)


class CognitoCallSpan:
    """The client span of one Cognito API call, a child of the step span (no span at all when tracing is off).

    Recorded here rather than by opentelemetry-instrumentation-botocore, for two reasons. Status: the
    instrumentation marks every Cognito error as ERROR, and this service keeps ERROR for system failures only
    (throttled, unavailable, timed out, misconfigured); a wrong code or an unknown user is Cognito answering,
    not failing. Cost: it measured 67 µs per call against 38 µs for this span (docs, "Tracing overhead").

    The span has no child, so it is made once the call is over, with its start time and parent taken when
    the call began: every attribute is given at once (the SDK validates attributes per call, under the
    span's lock).
    """

    __slots__ = ("_context", "_operation", "_region", "_server_address", "_started")

    def __init__(self, operation: str, region: str, server_address: str) -> None:
        self._started = 0
        if _tracing_off():
            return
        self._operation, self._region, self._server_address = operation, region, server_address
        self._context = otel_context.get_current()
        self._started = time.time_ns()

    def answered(self, metadata: Mapping[str, Any] | None) -> None:
        """Cognito answered with success."""
        if self._started:
            self._record(_response_attributes(metadata), None)

    def failed(self, error_type: str, system: bool, metadata: Mapping[str, Any] | None) -> None:
        """The call failed: Cognito's error code (or the transport error's name) as `error.type`."""
        if self._started:
            attributes = _response_attributes(metadata)
            attributes["error.type"] = error_type
            self._record(attributes, Status(StatusCode.ERROR, error_type) if system else None)

    def _record(self, response: dict[str, str | int], status: Status | None) -> None:
        started, self._started = self._started, 0
        span = tracer().start_span(
            f"CognitoIdentityProvider.{self._operation}",
            self._context,
            SpanKind.CLIENT,
            {
                "rpc.system": "aws-api",
                "rpc.service": "CognitoIdentityProvider",
                "rpc.method": self._operation,
                "cloud.region": self._region,
                "server.address": self._server_address,
                **response,
            },
            start_time=started,
            record_exception=False,
        )
        if status is not None:
            span.set_status(status)
        span.end()

    def __enter__(self) -> CognitoCallSpan:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if self._started:  # neither answered nor failed: an exception the adapter did not expect
            self.failed(kind.__name__ if kind is not None else "Unfinished", True, None)


def _response_attributes(metadata: Mapping[str, Any] | None) -> dict[str, str | int]:
    if not metadata:
        return {}
    attributes: dict[str, str | int] = {}
    if metadata.get("RequestId"):
        attributes["aws.request_id"] = str(metadata["RequestId"])
    if metadata.get("HTTPStatusCode"):
        attributes["http.response.status_code"] = int(metadata["HTTPStatusCode"])
    if metadata.get("RetryAttempts"):
        attributes["aws.retry_attempts"] = int(metadata["RetryAttempts"])
    return attributes


def step_attributes(
    step_type: str, journey: Mapping[str, str], connection: str, channel: str
) -> dict[str, str]:
    """The step span's input attributes."""
    attributes = {
        "journey.id": journey.get("journey_id", ""),
        "journey.run_id": journey.get("journey_run_id", ""),
        "journey.step.id": journey.get("step_id", ""),
        "journey.step.type": step_type,
        "cognito.connection": connection,
        "otp.channel": channel,
    }
    if journey.get("tenant_id"):
        attributes["journey.tenant.id"] = journey["tenant_id"]
    return {k: v for k, v in attributes.items() if v}


class step_span:  # noqa: N801 - used as the function it replaced: `with step_span(...) as span`
    """The span of one step execution, a child of the gRPC server span (nothing at all when tracing is off).

    A class rather than `start_as_current_span`: that goes through two generator-based context managers
    per span, measurable on every step (docs/tracing.md)."""

    __slots__ = ("_attributes", "_name", "_span", "_token")

    def __init__(self, step_type: str, attributes: Callable[[], Mapping[str, str]]) -> None:
        self._name = step_type
        self._attributes = attributes
        self._span: Span = trace.INVALID_SPAN
        self._token: object | None = None

    def __enter__(self) -> Span:
        if _tracing_off():
            return trace.INVALID_SPAN
        # Its attributes are made only for a span that records them (the samplers here decide without them).
        self._span = tracer().start_span(self._name, kind=SpanKind.INTERNAL, record_exception=False)
        if self._span.is_recording():
            self._span.set_attributes(self._attributes())
        self._token = otel_context.attach(trace.set_span_in_context(self._span))
        return self._span

    def __exit__(self, *_: object) -> None:
        if self._token is not None:
            otel_context.detach(self._token)  # type: ignore[arg-type]
            self._span.end()


def record_outcome(span: Span, outcome: StepOutcome[Any], event_data: EventData | None) -> None:
    """Outcome attributes, the step-completed event, and ERROR status for system failures only.

    A failure branch or a user-caused abort is the journey working as designed, not an error of this service.
    """
    if not span.is_recording():
        return
    # One set_attributes call: each set_attribute takes the span's lock and validates on its own.
    attributes: dict[str, str | bool | int] = {"journey.step.outcome": outcome.kind}
    failure = outcome.failed
    if failure is not None:
        attributes["journey.step.failure.code"] = failure.code.value
        attributes["journey.step.failure.category"] = failure.category.value
        attributes["journey.step.failure.retryable"] = failure.retryable
        if failure.attempts_remaining is not None:
            attributes["otp.attempts_remaining"] = failure.attempts_remaining
        if failure.cognito_error:
            attributes["cognito.error"] = failure.cognito_error
    span.set_attributes(attributes)
    if failure is not None and failure.category is ErrorCategory.SYSTEM:
        span.set_status(Status(StatusCode.ERROR, failure.code.value))
    event: dict[str, Any] = {"journey.step.outcome": outcome.kind}
    if event_data is not None:
        event["journey.event_data.mode"] = event_data.mode.value
        event["journey.event_data.truncated"] = event_data.truncated
        for key, value in event_data.data.items():
            event[f"journey.event_data.{key}"] = _attribute_value(value)
    span.add_event(STEP_COMPLETED_EVENT, attributes=event)


def step_refused(span: Span, reason: str) -> None:
    """A step that could not run (the store failed before Cognito was asked): `error.type` is the refusal's
    reason, and the status ERROR, as for the system failures of a step that ran."""
    if span.is_recording():
        span.set_attribute("error.type", reason)
        span.set_status(Status(StatusCode.ERROR, reason))


def _attribute_value(value: Any) -> str | bool | int | float:
    # Span attributes are flat: nested data travels as a JSON string.
    if isinstance(value, str | bool | int | float):
        return value
    return json.dumps(value, default=str, separators=(",", ":"), sort_keys=True)
