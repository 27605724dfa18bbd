"""Telemetry fixtures: an in-memory span exporter behind the global tracer provider, a traced server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Emulator, Journeys, RunningService, build_service
from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otp_step_client import StepExecutorClient

_EXPORTER = InMemorySpanExporter()


@pytest.fixture(scope="session")
def span_exporter() -> InMemorySpanExporter:
    """The process-wide in-memory exporter (a global tracer provider can be set only once)."""
    if not isinstance(trace.get_tracer_provider(), TracerProvider):
        provider = TracerProvider(resource=Resource.create({"service.name": "otp-step-service"}))
        provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
        trace.set_tracer_provider(provider)
    return _EXPORTER


@pytest.fixture(scope="session")
def traced_service(connections_file: Path, span_exporter: InMemorySpanExporter) -> Iterator[RunningService]:
    """A server with the gRPC server interceptor on, as when OTEL_* configures an exporter."""
    service = build_service(connections_file, tracing=True)
    service.start()
    yield service
    service.stop(1)


@pytest.fixture
def traced(
    traced_service: RunningService, emulator: Emulator, span_exporter: InMemorySpanExporter
) -> Iterator[Journeys]:
    """Journeys against the traced server, with the exporter emptied first."""
    span_exporter.clear()
    with StepExecutorClient(f"127.0.0.1:{traced_service.port}") as client:
        yield Journeys(client, emulator)
    emulator.clear_faults()
