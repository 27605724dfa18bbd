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
from typing import Any

from opentelemetry import trace
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from otp_step_service.steps.event_data import EventData
from otp_step_service.steps.outcomes import ErrorCategory, StepOutcome

log = logging.getLogger(__name__)

TRACER_NAME = "otp_step_service"
STEP_COMPLETED_EVENT = "journey.step.completed"
# A proxy until a provider is installed, then it delegates: safe to take once at import.
_tracer = trace.get_tracer(TRACER_NAME)


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
    OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT / PROTOCOL / HEADERS), read by the SDK itself.
    """
    if not tracing_configured():
        return None
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter

    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "grpc")
    )
    exporter: SpanExporter
    if protocol == "grpc":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter()
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter as HttpExporter

        exporter = HttpExporter()
    # Resource.create reads OTEL_SERVICE_NAME and OTEL_RESOURCE_ATTRIBUTES itself; the default name applies
    # only when neither names the service.
    named = "OTEL_SERVICE_NAME" in os.environ or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    resource = Resource.create({} if named else {"service.name": "otp-step-service"})
    provider = TracerProvider(resource=resource)
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    instrument_botocore()
    log.info("tracing: exporting OTLP/%s", protocol)
    return provider


def instrument_botocore() -> None:
    """Each Cognito call becomes a client span under the step span."""
    from opentelemetry.instrumentation.botocore import BotocoreInstrumentor

    instrumentor = BotocoreInstrumentor()
    if not instrumentor.is_instrumented_by_opentelemetry:
        instrumentor.instrument()


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
    if isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        # No provider installed: skip even the no-op span's context switching, on every step.
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
