"""End to end in a real Jaeger v2: caller span → gRPC server span → step span → Cognito spans.

The service runs as its own process configured only by OTEL_* variables, exactly as users run it; the trace
is read back through Jaeger's stable query API (/api/v3).
"""

from __future__ import annotations

import base64
import json
import re
import signal
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from harness import Emulator, Journeys, free_port, start_service_process
from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.trace import SpanKind
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator
from otp_step_client import Step, StepExecutorClient

from .jaeger import running_jaeger

CONFIG = Path(__file__).with_name("jaeger-test.yaml")


def _get(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback only
        return json.loads(response.read())


@pytest.fixture(scope="module")
def jaeger(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """A real Jaeger v2 on free loopback ports, storing traces in memory."""
    names = (
        "JAEGER_OTLP_GRPC_PORT",
        "JAEGER_QUERY_HTTP_PORT",
        "JAEGER_QUERY_GRPC_PORT",
        "JAEGER_HEALTH_PORT",
    )
    with running_jaeger(
        CONFIG, names, tmp_path_factory.mktemp("jaeger"), "JAEGER_QUERY_HTTP_PORT", "api/v3/services"
    ) as ports:
        yield ports


def _hex_id(value: str) -> str:
    if re.fullmatch(r"[0-9a-f]{16}|[0-9a-f]{32}", value):
        return value
    return base64.b64decode(value).hex()


def _spans(document: dict[str, Any]) -> list[dict[str, Any]]:
    spans = []
    for resource_spans in document.get("result", {}).get("resourceSpans", []):
        attributes = {a["key"]: a["value"] for a in resource_spans.get("resource", {}).get("attributes", [])}
        service = attributes.get("service.name", {}).get("stringValue", "")
        for scope in resource_spans.get("scopeSpans", []):
            for span in scope.get("spans", []):
                spans.append({**span, "service": service})
    return spans


def _attributes(items: list[dict[str, Any]]) -> dict[str, Any]:
    return {a["key"]: next(iter(a["value"].values()), None) for a in items}


def test_a_journey_is_one_trace_in_jaeger(
    jaeger: dict[str, int], connections_file: Path, emulator: Emulator, tmp_path: Path
) -> None:
    otlp = f"http://127.0.0.1:{jaeger['JAEGER_OTLP_GRPC_PORT']}"
    process, port = start_service_process(
        connections_file,
        tmp_path / "service.log",
        {
            "OTP_STEP_SELF_TEST": "off",
            "OTEL_EXPORTER_OTLP_ENDPOINT": otlp,
            "OTEL_SERVICE_NAME": "otp-step-service",
            "OTEL_BSP_SCHEDULE_DELAY": "100",
        },
    )
    orchestrator = TracerProvider(resource=Resource.create({"service.name": "journey-orchestrator"}))
    orchestrator.add_span_processor(SimpleSpanProcessor(OTLPSpanExporter(endpoint=otlp, insecure=True)))
    tracer = orchestrator.get_tracer("orchestrator")
    try:
        with StepExecutorClient(f"127.0.0.1:{port}") as client:
            journeys = Journeys(client, emulator)
            journey = journeys.journey()
            with tracer.start_as_current_span("journey jit-migration", kind=SpanKind.CLIENT) as parent:
                carrier: dict[str, str] = {}
                TraceContextTextMapPropagator().inject(carrier)
                metadata = list(carrier.items())
                before = len(emulator.outbox("ada@example.com"))
                step = Step("demo", "ada@example.com", channel="EMAIL", event_data="STEP_INPUT_OUTPUT")
                client.generate_otp(journey, step, metadata=metadata)
                code = emulator.latest_code("ada@example.com", after=before)
                validated = client.validate_otp(journey.at_step("check-code"), step, code, metadata=metadata)
                assert validated.WhichOneof("outcome") == "success"
        trace_id = format(parent.get_span_context().trace_id, "032x")
    finally:
        orchestrator.shutdown()
        process.send_signal(signal.SIGTERM)
        process.wait(timeout=20)

    url = f"http://127.0.0.1:{jaeger['JAEGER_QUERY_HTTP_PORT']}/api/v3/traces/{trace_id}"
    deadline = time.monotonic() + 20
    while True:
        try:
            spans = _spans(_get(url))
        except OSError:
            spans = []
        names = [s["name"] for s in spans]
        if names.count("cognito_otp_generate") and names.count("cognito_otp_validate") and len(spans) >= 8:
            break
        assert time.monotonic() < deadline, f"incomplete trace in Jaeger: {names}"
        time.sleep(0.2)

    by_id = {_hex_id(s["spanId"]): s for s in spans}

    def parent_of(span: dict[str, Any]) -> dict[str, Any]:
        return by_id[_hex_id(span["parentSpanId"])]

    root = next(s for s in spans if s["name"] == "journey jit-migration")
    assert root["service"] == "journey-orchestrator"
    for rpc, step_name in (("GenerateOtp", "cognito_otp_generate"), ("ValidateOtp", "cognito_otp_validate")):
        server = next(s for s in spans if s["name"] == f"/stepexecutor.v1.StepExecutor/{rpc}")
        step = next(s for s in spans if s["name"] == step_name)
        assert server["service"] == step["service"] == "otp-step-service"
        assert parent_of(server) is root
        assert parent_of(step) is server
        cognito = [
            s
            for s in spans
            if s.get("parentSpanId") and _hex_id(s["parentSpanId"]) == _hex_id(step["spanId"])
        ]
        assert cognito, f"no Cognito span under {step_name}"
        assert all(_attributes(s["attributes"]).get("rpc.system") == "aws-api" for s in cognito)
        attributes = _attributes(step["attributes"])
        assert attributes["journey.run_id"] == journey.run_id
        assert attributes["journey.step.outcome"] == "success"
        event = next(e for e in step["events"] if e["name"] == "journey.step.completed")
        data = _attributes(event["attributes"])
        assert data["journey.event_data.mode"] == "STEP_INPUT_OUTPUT"
        assert json.loads(data["journey.event_data.input"])["user_identifier"] == "a***@e***"
    validate_rpcs = {
        _attributes(s["attributes"]).get("rpc.method")
        for s in spans
        if _attributes(s.get("attributes", [])).get("rpc.system") == "aws-api"
    }
    assert {"InitiateAuth", "RespondToAuthChallenge", "GetUser"} <= validate_rpcs
    assert code not in json.dumps(spans)


def test_an_unreachable_collector_and_a_full_queue_cost_spans_not_journeys(
    connections_file: Path, emulator: Emulator, tmp_path: Path
) -> None:
    process, port = start_service_process(
        connections_file,
        tmp_path / "service.log",
        {
            "OTP_STEP_SELF_TEST": "off",
            "OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{free_port()}",  # nothing listens there
            "OTEL_EXPORTER_OTLP_TIMEOUT": "1",
            "OTEL_BSP_MAX_QUEUE_SIZE": "4",
            "OTEL_BSP_MAX_EXPORT_BATCH_SIZE": "2",
        },
    )
    try:
        with StepExecutorClient(f"127.0.0.1:{port}") as client:
            journeys = Journeys(client, emulator)
            slowest = 0.0
            for _ in range(30):
                started = time.monotonic()
                response, _ = journeys.generate("grace@example.com")
                slowest = max(slowest, time.monotonic() - started)
                assert response.WhichOneof("outcome") == "success"
        assert slowest < 1.0
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
