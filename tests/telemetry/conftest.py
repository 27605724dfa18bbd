"""Telemetry fixtures: a traced server (the in-memory span exporter is the suite's, tests/conftest.py)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Emulator, Journeys, RunningService, build_service
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from otp_step_client import StepExecutorClient


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
