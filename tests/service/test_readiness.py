"""Readiness per connection: an open circuit makes steps fail fast with the retryable system failure and its
connection NOT_SERVING, while the service as a whole stays SERVING; after the open time a probe closes it."""

from __future__ import annotations

import shutil
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from harness import Emulator, Journeys, RunningService, build_service
from otp_step_client import StepExecutorClient
from stepexecutor.v1 import step_executor_pb2 as pb

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING


@pytest.fixture
def breaker_service(connections_file: Path, tmp_path: Path) -> Iterator[RunningService]:
    path = tmp_path / "connections.toml"
    shutil.copy(connections_file, path)
    text = path.read_text()
    start = text.index('[connections."demo"]')
    end = text.index("\n[connections.", start + 1)
    breaker = text[start:end].replace('"demo"', '"fragile"')
    # Open for 3 s: what the test checks while it is open (health, a fail-fast step) must fit in that time
    # on a loaded machine too.
    path.write_text(text + "\n" + breaker + "\ncircuit_failure_threshold = 2\ncircuit_open_seconds = 3\n")
    service = build_service(path)
    service.start()
    yield service
    service.stop(grace=1)


def _status(port: int, service: str) -> int:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        return int(
            health_pb2_grpc.HealthStub(channel)
            .Check(health_pb2.HealthCheckRequest(service=service), timeout=5)
            .status
        )


def _until(condition: object, what: str, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.02)


def test_an_open_circuit_fails_fast_and_only_its_connection_stops_serving(
    breaker_service: RunningService, emulator: Emulator
) -> None:
    port = breaker_service.port
    assert _status(port, "otp.connection/fragile") == SERVING
    with StepExecutorClient(f"127.0.0.1:{port}", timeout=10) as client:
        journeys = Journeys(client, emulator)
        try:
            emulator.inject(operation="InitiateAuth", error="InternalErrorException", count=2)
            for _ in range(2):
                failure = journeys.generate("ada@example.com", connection="fragile")[0].failure
                assert failure.code == pb.FAILURE_CODE_COGNITO_UNAVAILABLE and failure.retryable
            _until(lambda: _status(port, "otp.connection/fragile") == NOT_SERVING, "fragile is NOT_SERVING")
            assert _status(port, "") == SERVING
            assert _status(port, "otp.connection/demo") == SERVING
            # The fault is used up: only the open circuit can make this fail, and it does so at once.
            started = time.monotonic()
            failure = journeys.generate("ada@example.com", connection="fragile")[0].failure
            assert failure.code == pb.FAILURE_CODE_COGNITO_UNAVAILABLE
            assert failure.cognito_error == "CircuitOpen"
            assert time.monotonic() - started < 0.5
            assert journeys.generate("ada@example.com")[0].WhichOneof("outcome") == "success"
            # After the open time the connection is ready for a probe, and a successful one closes the circuit.
            _until(lambda: _status(port, "otp.connection/fragile") == SERVING, "fragile SERVING after 3 s")
            assert (
                journeys.generate("grace@example.com", connection="fragile")[0].WhichOneof("outcome")
                == "success"
            )
        finally:
            emulator.clear_faults()
