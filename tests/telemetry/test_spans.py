"""The span tree, attributes and journey event data of each outcome, from an in-memory exporter."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

import pytest
from google.protobuf import json_format
from harness import FailingStore, Journeys, RunningService, exported, run_sample_journeys, wrong_code
from opentelemetry import propagate, trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import SpanKind, StatusCode
from otp_step_client import Step
from stepexecutor.v1 import step_executor_pb2 as pb


def _by_name(spans: Sequence[ReadableSpan], name: str) -> ReadableSpan:
    found = [s for s in spans if s.name == name]
    assert len(found) == 1, [s.name for s in spans]
    return found[0]


def _cognito_span(spans: Sequence[ReadableSpan], operation: str) -> ReadableSpan:
    return _by_name(spans, f"CognitoIdentityProvider.{operation}")


def _completed_event(span: ReadableSpan) -> dict[str, Any]:
    events = [e for e in span.events if e.name == "journey.step.completed"]
    assert len(events) == 1
    return dict(events[0].attributes or {})


def test_a_journey_reads_as_one_trace_from_the_callers_span_down_to_cognito(
    traced: Journeys, span_exporter: InMemorySpanExporter
) -> None:
    tracer = trace.get_tracer("orchestrator")
    with tracer.start_as_current_span("journey jit-migration", kind=SpanKind.CLIENT) as parent:
        carrier: dict[str, str] = {}
        propagate.inject(carrier)
        traced.client.generate_otp(
            traced.journey(), Step("demo", "ada@example.com", channel="EMAIL"), metadata=list(carrier.items())
        )
    spans = span_exporter.get_finished_spans()
    server = _by_name(spans, "/stepexecutor.v1.StepExecutor/GenerateOtp")
    step = _by_name(spans, "cognito_otp_generate")
    cognito = [s for s in spans if s.attributes and s.attributes.get("rpc.system") == "aws-api"]
    assert server.kind is SpanKind.SERVER
    assert server.context.trace_id == parent.get_span_context().trace_id
    assert server.parent is not None and server.parent.span_id == parent.get_span_context().span_id
    assert step.parent is not None and step.parent.span_id == server.context.span_id
    assert [s.attributes["rpc.method"] for s in cognito if s.attributes] == ["InitiateAuth"]
    assert all(
        s.kind is SpanKind.CLIENT and s.parent and s.parent.span_id == step.context.span_id for s in cognito
    )


def test_the_step_span_carries_the_journey_and_the_outcome(
    traced: Journeys, span_exporter: InMemorySpanExporter
) -> None:
    response, journey = traced.generate("ada@example.com")
    assert response.WhichOneof("outcome") == "success"
    step = _by_name(span_exporter.get_finished_spans(), "cognito_otp_generate")
    assert step.attributes is not None
    assert (
        dict(step.attributes).items()
        >= {
            "journey.id": "jit-migration",
            "journey.run_id": journey.run_id,
            "journey.step.id": "send-code",
            "journey.step.type": "cognito_otp_generate",
            "cognito.connection": "demo",
            "otp.channel": "EMAIL",
            "journey.step.outcome": "success",
        }.items()
    )
    assert step.status.status_code is StatusCode.UNSET
    assert _completed_event(step) == {"journey.step.outcome": "success"}  # reporting NONE: nothing more


def test_a_wrong_code_is_a_failure_branch_not_an_error(
    traced: Journeys, span_exporter: InMemorySpanExporter
) -> None:
    before = len(traced.emulator.outbox("grace@example.com"))
    _, journey = traced.generate("grace@example.com")
    code = traced.emulator.latest_code("grace@example.com", after=before)
    span_exporter.clear()
    traced.validate(journey, "grace@example.com", wrong_code(code))
    step = _by_name(span_exporter.get_finished_spans(), "cognito_otp_validate")
    assert step.attributes is not None
    assert step.attributes["journey.step.outcome"] == "failure"
    assert step.attributes["journey.step.failure.code"] == "INVALID_CODE"
    assert step.attributes["journey.step.failure.category"] == "FLOW_LOGIC"
    assert step.attributes["journey.step.failure.retryable"] is False
    assert step.attributes["otp.attempts_remaining"] == 2
    assert step.status.status_code is StatusCode.UNSET
    # Cognito answered (the code is wrong): its client span says so, without marking an error.
    answer = _cognito_span(span_exporter.get_finished_spans(), "RespondToAuthChallenge")
    assert answer.attributes is not None
    assert answer.attributes["error.type"] == "CodeMismatchException"
    assert answer.attributes["http.response.status_code"] == 400
    assert answer.status.status_code is StatusCode.UNSET


def test_a_cognito_call_is_a_client_span_with_the_aws_attributes(
    traced: Journeys, span_exporter: InMemorySpanExporter
) -> None:
    traced.generate("ada@example.com")
    call = _cognito_span(span_exporter.get_finished_spans(), "InitiateAuth")
    assert call.name == "CognitoIdentityProvider.InitiateAuth"
    assert call.kind is SpanKind.CLIENT
    assert call.attributes is not None
    assert (
        dict(call.attributes).items()
        >= {
            "rpc.system": "aws-api",
            "rpc.service": "CognitoIdentityProvider",
            "rpc.method": "InitiateAuth",
            "cloud.region": "us-east-1",
            "server.address": "127.0.0.1",
            "http.response.status_code": 200,
        }.items()
    )
    assert call.attributes["aws.request_id"]
    assert "error.type" not in call.attributes
    assert call.status.status_code is StatusCode.UNSET


def test_a_user_caused_abort_is_not_an_error(traced: Journeys, span_exporter: InMemorySpanExporter) -> None:
    traced.generate("not-an-identifier", abort_on_failure=True)
    step = _by_name(span_exporter.get_finished_spans(), "cognito_otp_generate")
    assert step.attributes is not None
    assert step.attributes["journey.step.outcome"] == "abort"
    assert step.attributes["journey.step.failure.code"] == "INVALID_IDENTIFIER"
    assert step.status.status_code is StatusCode.UNSET


def test_a_configuration_failure_is_not_an_error_either(
    traced: Journeys, span_exporter: InMemorySpanExporter
) -> None:
    traced.generate("ada@example.com", connection="wrong-secret")
    step = _by_name(span_exporter.get_finished_spans(), "cognito_otp_generate")
    assert step.attributes is not None
    assert step.attributes["journey.step.failure.category"] == "CONFIGURATION"
    assert step.status.status_code is StatusCode.UNSET


def test_a_system_failure_marks_the_step_span_as_error(
    traced: Journeys, span_exporter: InMemorySpanExporter
) -> None:
    traced.emulator.inject(operation="InitiateAuth", error="InternalErrorException", count=1)
    traced.generate("ada@example.com")
    step = _by_name(span_exporter.get_finished_spans(), "cognito_otp_generate")
    assert step.status.status_code is StatusCode.ERROR
    assert step.status.description == "COGNITO_UNAVAILABLE"
    assert step.attributes is not None
    assert step.attributes["journey.step.failure.retryable"] is True
    call = _cognito_span(span_exporter.get_finished_spans(), "InitiateAuth")
    assert call.status.status_code is StatusCode.ERROR
    assert call.attributes is not None
    assert call.attributes["error.type"] == "InternalErrorException"


def test_a_cognito_call_that_gets_no_answer_is_an_error_span_without_response_attributes(
    traced: Journeys, span_exporter: InMemorySpanExporter
) -> None:
    traced.emulator.inject(operation="InitiateAuth", latency_ms=1500, count=1)
    traced.generate("grace@example.com", connection="slow")
    call = _cognito_span(span_exporter.get_finished_spans(), "InitiateAuth")
    assert call.status.status_code is StatusCode.ERROR
    assert call.attributes is not None
    assert call.attributes["error.type"] == "ReadTimeoutError"
    assert "http.response.status_code" not in call.attributes


def test_step_input_and_output_are_reported_masked_on_the_span_and_in_the_response(
    traced: Journeys, span_exporter: InMemorySpanExporter
) -> None:
    response, _ = traced.generate("Ada@Example.com", event_data="STEP_INPUT_OUTPUT")
    event = _completed_event(_by_name(span_exporter.get_finished_spans(), "cognito_otp_generate"))
    assert event["journey.event_data.mode"] == "STEP_INPUT_OUTPUT"
    assert event["journey.event_data.truncated"] is False
    reported_input = json.loads(event["journey.event_data.input"])
    reported_output = json.loads(event["journey.event_data.output"])
    assert reported_input["user_identifier"] == "A***@E***"
    assert reported_input["otp_channel"] == "EMAIL"
    assert reported_input["scopes"] == ["openid", "profile", "email"]
    assert reported_output["outcome"] == "success"
    assert reported_output["result"]["masked_destination"] == "a***@e***"
    returned = response.event_data
    assert returned.mode == pb.EVENT_DATA_MODE_STEP_INPUT_OUTPUT
    assert json_format.MessageToDict(returned.data)["input"] == reported_input


@pytest.mark.parametrize("outcome", ["failure", "abort"])
def test_failures_report_their_error_in_the_event_data(
    traced: Journeys, span_exporter: InMemorySpanExporter, outcome: str
) -> None:
    traced.generate(
        "nobody@example.com",
        connection="legacy-open",
        event_data="STEP_INPUT_OUTPUT",
        abort_on_failure=outcome == "abort",
    )
    event = _completed_event(_by_name(span_exporter.get_finished_spans(), "cognito_otp_generate"))
    output = json.loads(event["journey.event_data.output"])
    assert output["outcome"] == outcome
    assert output["error"]["code"] == "USER_NOT_FOUND"
    assert "nobody@example.com" not in json.dumps(event)


def test_a_custom_payload_is_reported_redacted_and_bounded(
    traced: Journeys, span_exporter: InMemorySpanExporter
) -> None:
    before = len(traced.emulator.outbox("grace@example.com"))
    _, journey = traced.generate("grace@example.com")
    code = traced.emulator.latest_code("grace@example.com", after=before)
    span_exporter.clear()
    payload = {
        "campaign": "spring-migration",
        "typed": code,  # a journey that (wrongly) copies the code into its payload
        "as_number": int(code),
        code: "as a key",
        "session_token": "abc",
        "contact": "grace@example.com",
        "huge": "x" * 20000,
    }
    response = traced.validate(
        journey, "grace@example.com", code, event_data="CUSTOM_PAYLOAD", custom_payload=payload
    )
    assert response.WhichOneof("outcome") == "success"
    event = _completed_event(_by_name(span_exporter.get_finished_spans(), "cognito_otp_validate"))
    assert event["journey.event_data.mode"] == "CUSTOM_PAYLOAD"
    assert event["journey.event_data.campaign"] == "spring-migration"
    assert event["journey.event_data.typed"] == "[REDACTED]"
    assert event["journey.event_data.as_number"] == "[REDACTED]"
    assert code not in json.dumps(event)
    assert event["journey.event_data.session_token"] == "[REDACTED]"
    assert event["journey.event_data.contact"] == "g***@e***"
    assert len(event["journey.event_data.huge"]) <= 1025
    assert response.event_data.data["typed"] == "[REDACTED]"


def test_an_oversized_payload_is_cut_and_marked(
    traced: Journeys, span_exporter: InMemorySpanExporter
) -> None:
    payload = {f"field{i}": "y" * 900 for i in range(20)}
    response, _ = traced.generate("ada@example.com", event_data="CUSTOM_PAYLOAD", custom_payload=payload)
    event = _completed_event(_by_name(span_exporter.get_finished_spans(), "cognito_otp_generate"))
    assert event["journey.event_data.truncated"] is True
    assert response.event_data.truncated
    assert 0 < len(response.event_data.data) < 20
    assert sum(len(v) for k, v in event.items() if k.startswith("journey.event_data.field")) <= 8192


def test_health_checks_are_not_traced(traced: Journeys, span_exporter: InMemorySpanExporter) -> None:
    assert traced.client.health() == "SERVING"
    assert span_exporter.get_finished_spans() == ()


def test_no_code_session_token_or_secret_reaches_any_span(
    traced: Journeys, traced_service: RunningService, span_exporter: InMemorySpanExporter
) -> None:
    stored = len(traced_service.store.sessions)
    secrets = run_sample_journeys(traced, traced.emulator)
    sessions = traced_service.store.sessions[stored:]
    secrets += sessions
    spans = span_exporter.get_finished_spans()
    assert len(spans) > 10
    dump = exported(spans)
    assert "journey.step.completed" in dump
    for secret in secrets:
        assert secret not in dump


def test_a_connection_may_report_identifiers_in_clear(
    traced: Journeys, span_exporter: InMemorySpanExporter
) -> None:
    traced.generate("ada@example.com", connection="reveal", event_data="STEP_INPUT_OUTPUT")
    event = _completed_event(_by_name(span_exporter.get_finished_spans(), "cognito_otp_generate"))
    assert json.loads(event["journey.event_data.input"])["user_identifier"] == "ada@example.com"


def test_a_step_the_store_kept_from_running_is_an_error_span_with_the_refusal_reason(
    traced: Journeys, traced_service: RunningService, span_exporter: InMemorySpanExporter
) -> None:
    real = traced_service.store.inner
    traced_service.store.inner = FailingStore(real, begin_send=1)  # the first Generate finds the store down
    try:
        response, _ = traced.generate("ada@example.com")  # the client's service config tries again by itself
    finally:
        traced_service.store.inner = real
    assert response.WhichOneof("outcome") == "success"
    spans = span_exporter.get_finished_spans()
    steps = [s for s in spans if s.name == "cognito_otp_generate"]
    refused = [s for s in steps if s.attributes and s.attributes.get("error.type")]
    assert len(steps) == 2 and len(refused) == 1, [s.attributes for s in steps]
    assert refused[0].attributes is not None
    assert refused[0].attributes["error.type"] == "CHALLENGE_STORE_UNAVAILABLE"
    assert refused[0].status.status_code is StatusCode.ERROR
    servers = [s for s in spans if s.name == "/stepexecutor.v1.StepExecutor/GenerateOtp"]
    assert sorted(str((s.attributes or {}).get("error.type", "")) for s in servers) == [
        "",
        "CHALLENGE_STORE_UNAVAILABLE",
    ]
