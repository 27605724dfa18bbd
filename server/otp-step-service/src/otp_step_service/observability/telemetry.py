"""OpenTelemetry: tracing set up from the standard OTEL_* variables, and the step span.

Telemetry never breaks a step: with no exporter configured nothing is exported; an unreachable collector or a
full queue drops spans in the SDK's background thread (BatchSpanProcessor), never in a request.
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from otp_step_service.steps.event_data import EventData
from otp_step_service.steps.outcomes import ErrorCategory, StepOutcome

if TYPE_CHECKING:  # the SDK is imported only when tracing is configured
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace.export import SpanExporter

log = logging.getLogger(__name__)

TRACER_NAME = "otp_step_service"
STEP_COMPLETED_EVENT = "journey.step.completed"
# A proxy until a provider is installed, then it delegates: safe to take once at import.
_tracer = trace.get_tracer(TRACER_NAME)


def _tracing_off() -> bool:
    # No SDK provider installed: even a no-op span would cost its context switching, on every step.
    return isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider)


def tracing_configured() -> bool:
    """True when the OTEL_* environment asks for an exporter (OTLP)."""
    exporter = os.environ.get("OTEL_TRACES_EXPORTER", "")
    if os.environ.get("OTEL_SDK_DISABLED", "").lower() == "true" or exporter == "none":
        return False
    return exporter == "otlp" or bool(
        os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT") or os.environ.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
    )


def configure_tracing() -> trace.TracerProvider | None:
    """Install an SDK tracer provider exporting by OTLP when the environment configures one.

    Service name, resource attributes, sampler, endpoint, protocol and headers all come from the standard
    variables (OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES, OTEL_TRACES_SAMPLER[_ARG],
    OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT / PROTOCOL / HEADERS, OTEL_BSP_*), read by the SDK itself.
    """
    if not tracing_configured():
        return None
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    provider = TracerProvider(resource=tracing_resource())
    provider.add_span_processor(BatchSpanProcessor(otlp_exporter()))
    trace.set_tracer_provider(provider)
    log.info("tracing: exporting OTLP/%s", _otlp_protocol())
    return provider


def _otlp_protocol() -> str:
    return os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    )


def otlp_exporter() -> SpanExporter:
    """The SDK's OTLP span exporter for the configured protocol (grpc, or http/protobuf)."""
    if _otlp_protocol() == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter()
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

    return HttpExporter()


def tracing_resource() -> Resource:
    """The service's resource: OTEL_SERVICE_NAME / OTEL_RESOURCE_ATTRIBUTES, else service.name otp-step-service."""
    from opentelemetry.sdk.resources import Resource

    # Resource.create reads both variables itself; the default name applies only when neither names the service.
    named = "OTEL_SERVICE_NAME" in os.environ or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    return Resource.create({} if named else {"service.name": "otp-step-service"})


class CognitoCallSpan:
    """The client span of one Cognito API call, a child of the step span (no span at all when tracing is off).

    Recorded here rather than by opentelemetry-instrumentation-botocore, for two reasons. Status: the
    instrumentation marks every Cognito error as ERROR, and this service keeps ERROR for system failures only
    (throttled, unavailable, timed out, misconfigured); a wrong code or an unknown user is Cognito answering,
    not failing. Cost: it measured 67 µs per call against 38 µs for this span (README, "Tracing overhead").
    """

    __slots__ = ("_span",)

    def __init__(self, operation: str, region: str, server_address: str) -> None:
        self._span: Span | None = None
        if _tracing_off():
            return
        self._span = _tracer.start_span(
            f"CognitoIdentityProvider.{operation}",
            kind=SpanKind.CLIENT,
            attributes={
                "rpc.system": "aws-api",
                "rpc.service": "CognitoIdentityProvider",
                "rpc.method": operation,
                "cloud.region": region,
                "server.address": server_address,
            },
            record_exception=False,
        )

    def answered(self, metadata: Mapping[str, Any] | None) -> None:
        """Cognito answered with success."""
        if self._span is not None:
            self._span.set_attributes(_response_attributes(metadata))
            self._span.end()
            self._span = None

    def failed(self, error_type: str, system: bool, metadata: Mapping[str, Any] | None) -> None:
        """The call failed: Cognito's error code (or the transport error's name) as `error.type`."""
        if self._span is not None:
            self._span.set_attributes({**_response_attributes(metadata), "error.type": error_type})
            if system:
                self._span.set_status(Status(StatusCode.ERROR, error_type))
            self._span.end()
            self._span = None

    def __enter__(self) -> CognitoCallSpan:
        return self

    def __exit__(self, kind: type[BaseException] | None, *_: object) -> None:
        if self._span is not None:  # neither answered nor failed: an exception the adapter did not expect
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


@contextmanager
def step_span(step_type: str, attributes: Callable[[], Mapping[str, str]]) -> Iterator[Span]:
    """The span of one step execution, a child of the gRPC server span (nothing at all when tracing is off)."""
    if _tracing_off():
        yield trace.INVALID_SPAN
        return
    with _tracer.start_as_current_span(
        step_type, kind=SpanKind.INTERNAL, attributes=dict(attributes()), record_exception=False
    ) as span:
        yield span


def record_outcome(span: Span, outcome: StepOutcome[Any], event_data: EventData | None) -> None:
    """Outcome attributes, the step-completed event, and ERROR status for system failures only.

    A failure branch or a user-caused abort is the journey working as designed, not an error of this service.
    """
    if not span.is_recording():
        return
    span.set_attribute("journey.step.outcome", outcome.kind)
    failure = outcome.failed
    if failure is not None:
        span.set_attribute("journey.step.failure.code", failure.code.value)
        span.set_attribute("journey.step.failure.category", failure.category.value)
        span.set_attribute("journey.step.failure.retryable", failure.retryable)
        if failure.attempts_remaining is not None:
            span.set_attribute("otp.attempts_remaining", failure.attempts_remaining)
        if failure.cognito_error:
            span.set_attribute("cognito.error", failure.cognito_error)
        if failure.category is ErrorCategory.SYSTEM:
            span.set_status(Status(StatusCode.ERROR, failure.code.value))
    event: dict[str, Any] = {"journey.step.outcome": outcome.kind}
    if event_data is not None:
        event["journey.event_data.mode"] = event_data.mode.value
        event["journey.event_data.truncated"] = event_data.truncated
        for key, value in event_data.data.items():
            event[f"journey.event_data.{key}"] = _attribute_value(value)
    span.add_event(STEP_COMPLETED_EVENT, attributes=event)


def _attribute_value(value: Any) -> str | bool | int | float:
    # Span attributes are flat: nested data travels as a JSON string.
    if isinstance(value, str | bool | int | float):
        return value
    return json.dumps(value, default=str, separators=(",", ":"), sort_keys=True)
