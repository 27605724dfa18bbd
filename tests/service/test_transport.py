"""The gRPC surface: statuses for calls that cannot run, health, reflection, deadlines, limits, shutdown."""

from __future__ import annotations

import json
import shutil
import subprocess
import threading
import time
from pathlib import Path

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc
from grpc_status import rpc_status
from harness import Emulator, Journeys, RunningService, build_service
from otp_step_client import Journey, Step, StepExecutorClient, StepExecutorError
from stepexecutor.v1 import step_executor_pb2 as pb
from stepexecutor.v1 import step_executor_pb2_grpc as pb_grpc


def _valid_generate() -> pb.GenerateOtpRequest:
    return pb.GenerateOtpRequest(
        journey=pb.JourneyContext(journey_id="j", journey_run_id="r", step_id="s"),
        step=pb.StepConfiguration(
            connection="demo", user_identifier="ada@example.com", otp_channel=pb.OTP_CHANNEL_EMAIL
        ),
    )


def _without(field: str) -> pb.GenerateOtpRequest:
    request = _valid_generate()
    message, _, name = field.rpartition(".")
    getattr(request, message).ClearField(name) if message else request.ClearField(name)
    return request


@pytest.fixture
def stub(service: RunningService) -> pb_grpc.StepExecutorStub:
    return pb_grpc.StepExecutorStub(grpc.insecure_channel(f"127.0.0.1:{service.port}"))


@pytest.mark.parametrize(
    "field",
    [
        "journey",
        "step",
        "journey.journey_id",
        "journey.journey_run_id",
        "journey.step_id",
        "step.connection",
        "step.user_identifier",
        "step.otp_channel",
    ],
)
def test_each_required_field_missing_is_invalid_argument_naming_it(
    stub: pb_grpc.StepExecutorStub, field: str
) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        stub.GenerateOtp(_without(field), timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(raised.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    assert status.details[0].Unpack(bad)
    fields = {violation.field for violation in bad.field_violations}
    assert field in fields or (field in {"journey", "step"} and any(f.startswith(field) for f in fields))


def test_validate_without_a_code_is_invalid_argument(client: StepExecutorClient) -> None:
    with pytest.raises(StepExecutorError) as raised:
        client.validate_otp(Journey("j", "r", "s"), Step("demo", "ada@example.com"), "")
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert ("otp_code", "required") in raised.value.field_violations


def test_garbage_values_are_rejected_field_by_field(stub: pb_grpc.StepExecutorStub) -> None:
    request = _valid_generate()
    request.step.output_variable = "not a variable!"
    request.step.scopes.append("bad scope")
    request.step.failure_behavior = 99  # type: ignore[assignment]
    request.journey.end_user.ip_address = "999.1.1.1"
    with pytest.raises(grpc.RpcError) as raised:
        stub.GenerateOtp(request, timeout=5)
    status = rpc_status.from_call(raised.value)
    assert status is not None
    bad = error_details_pb2.BadRequest()
    status.details[0].Unpack(bad)
    assert {v.field for v in bad.field_violations} == {
        "step.output_variable",
        "step.scopes[0]",
        "step.failure_behavior",
        "journey.end_user.ip_address",
    }


def test_an_unknown_connection_is_not_found_with_error_info(stub: pb_grpc.StepExecutorStub) -> None:
    request = _valid_generate()
    request.step.connection = "nope"
    with pytest.raises(grpc.RpcError) as raised:
        stub.GenerateOtp(request, timeout=5)
    assert raised.value.code() == grpc.StatusCode.NOT_FOUND
    status = rpc_status.from_call(raised.value)
    assert status is not None
    info = error_details_pb2.ErrorInfo()
    assert status.details[0].Unpack(info)
    assert info.reason == "CONNECTION_NOT_FOUND"
    assert info.metadata["connection"] == "nope"


def test_health_reports_serving_for_the_server_and_the_service(service: RunningService) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
    health = health_pb2_grpc.HealthStub(channel)
    for name in ("", "stepexecutor.v1.StepExecutor"):
        response = health.Check(health_pb2.HealthCheckRequest(service=name), timeout=5)
        assert response.status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_step_executor(service: RunningService) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    responses = reflection.ServerReflectionInfo(
        iter([reflection_pb2.ServerReflectionRequest(list_services="")])
    )
    names = {s.name for r in responses for s in r.list_services_response.service}
    assert {"stepexecutor.v1.StepExecutor", "grpc.health.v1.Health"} <= names


def test_a_deadline_shorter_than_cognito_answers_in_time_with_a_retryable_timeout(
    journeys: Journeys, emulator: Emulator
) -> None:
    # Every Cognito call is bounded by the remaining deadline, so the step answers before the caller gives
    # up, with a typed, retryable failure instead of a bare DEADLINE_EXCEEDED.
    emulator.inject(operation="InitiateAuth", latency_ms=1500, count=1)
    started = time.monotonic()
    response = journeys.client.generate_otp(
        journeys.journey(), Step("demo", "grace@example.com", channel="EMAIL"), timeout=0.6
    )
    assert time.monotonic() - started < 0.6
    assert response.failure.code == pb.FAILURE_CODE_COGNITO_TIMEOUT
    assert response.failure.category == pb.ERROR_CATEGORY_SYSTEM
    assert response.failure.retryable
    again, _ = journeys.generate("grace@example.com")
    assert again.WhichOneof("outcome") == "success"


def test_a_deadline_that_expires_in_the_step_is_deadline_exceeded(
    journeys: Journeys, emulator: Emulator
) -> None:
    emulator.inject(operation="InitiateAuth", latency_ms=1500, count=1)
    with pytest.raises(StepExecutorError) as raised:
        journeys.client.generate_otp(
            journeys.journey(), Step("demo", "grace@example.com", channel="EMAIL"), timeout=0.03
        )
    assert raised.value.code == grpc.StatusCode.DEADLINE_EXCEEDED


def test_the_connection_self_test_passes_a_good_connection_and_names_the_fix_otherwise(
    client: StepExecutorClient,
) -> None:
    good = client.check_connection("demo")
    assert good.ok, good
    assert {c.name for c in good.checks} >= {
        "user_auth_flow",
        "app_client_allows_user_auth",
        "pool_offers_email_otp",
    }
    bad = client.check_connection("no-user-auth")
    assert not bad.ok
    failed = {c.name: c.detail for c in bad.checks if c.status == pb.CONNECTION_CHECK_STATUS_FAILED}
    assert "ALLOW_USER_AUTH" in failed["user_auth_flow"]
    wrong = client.check_connection("wrong-secret")
    assert not wrong.ok
    assert any("secret" in c.detail for c in wrong.checks if c.status == pb.CONNECTION_CHECK_STATUS_FAILED)


def _slow_generate(client: StepExecutorClient, journeys: Journeys, results: list[object]) -> None:
    try:
        results.append(
            client.generate_otp(journeys.journey(), Step("demo", "grace@example.com", channel="EMAIL"))
        )
    except StepExecutorError as exc:
        results.append(exc)


def test_beyond_the_concurrency_bound_calls_get_resource_exhausted(
    connections_file: Path, journeys: Journeys, emulator: Emulator
) -> None:
    service = build_service(connections_file, max_concurrent_steps="1", max_steps_per_caller="1")
    service.start()
    try:
        emulator.inject(operation="InitiateAuth", latency_ms=800, count=1)
        with StepExecutorClient(f"127.0.0.1:{service.port}") as client:
            results: list[object] = []
            first = threading.Thread(target=_slow_generate, args=(client, journeys, results))
            first.start()
            deadline = time.monotonic() + 5
            while not emulator_busy(emulator) and time.monotonic() < deadline:
                time.sleep(0.01)
            with pytest.raises(StepExecutorError) as raised:
                client.generate_otp(journeys.journey(), Step("demo", "ada@example.com", channel="EMAIL"))
            first.join()
        assert raised.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert isinstance(results[0], pb.GenerateOtpResponse)
    finally:
        service.stop(grace=1)


def emulator_busy(emulator: Emulator) -> bool:
    """True once the injected latency fault has been picked up by a call (its count is used)."""
    from harness import http_json

    faults = http_json("GET", f"{emulator.endpoint_url}/_faults")
    return not any(f.get("remaining", f.get("count")) for f in faults.get("faults", []))


def test_shutdown_drains_in_flight_steps_and_refuses_new_ones(
    connections_file: Path, journeys: Journeys, emulator: Emulator
) -> None:
    service = build_service(connections_file)
    service.start()
    client = StepExecutorClient(f"127.0.0.1:{service.port}")
    emulator.inject(operation="InitiateAuth", latency_ms=600, count=1)
    results: list[object] = []
    in_flight = threading.Thread(target=_slow_generate, args=(client, journeys, results))
    in_flight.start()
    deadline = time.monotonic() + 5
    while not emulator_busy(emulator) and time.monotonic() < deadline:
        time.sleep(0.01)
    stopper = threading.Thread(target=service.stop, args=(5,))
    stopper.start()
    in_flight.join()
    stopper.join()
    assert isinstance(results[0], pb.GenerateOtpResponse)
    assert results[0].WhichOneof("outcome") == "success"
    with pytest.raises(StepExecutorError) as raised:
        client.health(timeout=1)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    client.close()


def test_reflection_resolves_method_symbols_as_ghz_and_grpcurl_ask(service: RunningService) -> None:
    channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
    reflection = reflection_pb2_grpc.ServerReflectionStub(channel)
    request = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="stepexecutor.v1.StepExecutor.GenerateOtp"
    )
    (response,) = list(reflection.ServerReflectionInfo(iter([request])))
    assert response.WhichOneof("message_response") == "file_descriptor_response"
    unknown = reflection_pb2.ServerReflectionRequest(
        file_containing_symbol="stepexecutor.v1.StepExecutor.Nope"
    )
    (missing,) = list(reflection.ServerReflectionInfo(iter([unknown])))
    assert missing.WhichOneof("message_response") == "error_response"


def test_ghz_drives_the_service_through_reflection_alone(service: RunningService, emulator: Emulator) -> None:
    ghz = shutil.which("ghz", path=str(Path(__file__).resolve().parents[2] / ".bin")) or shutil.which("ghz")
    assert ghz, "ghz is missing: run `make tools`"
    data = {
        "journey": {"journey_id": "ghz", "journey_run_id": "ghz-{{.RequestNumber}}", "step_id": "send"},
        "step": {
            "connection": "demo",
            "user_identifier": "grace@example.com",
            "otp_channel": "OTP_CHANNEL_EMAIL",
        },
    }
    result = subprocess.run(
        [
            ghz,
            "--insecure",
            "--call",
            "stepexecutor.v1.StepExecutor/GenerateOtp",
            "--data",
            json.dumps(data),
            "-n",
            "20",
            "-c",
            "4",
            "--timeout",
            "5s",
            "--format",
            "json",
            f"127.0.0.1:{service.port}",
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["count"] == 20
    assert report["statusCodeDistribution"] == {"OK": 20}
    assert len(emulator.outbox("grace@example.com")) >= 20


@pytest.mark.parametrize(
    ("payload", "why"), [({"n": float("nan")}, "JSON"), ({"big": "x" * 70_000}, "larger than")]
)
def test_a_custom_payload_that_cannot_be_reported_is_invalid_argument(
    stub: pb_grpc.StepExecutorStub, payload: dict[str, object], why: str
) -> None:
    request = _valid_generate()
    request.step.event_data.mode = pb.EVENT_DATA_MODE_CUSTOM_PAYLOAD
    request.step.event_data.custom_payload.update(payload)
    with pytest.raises(grpc.RpcError) as raised:
        stub.GenerateOtp(request, timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert why in (raised.value.details() or "")


def test_on_shutdown_health_says_not_serving_while_calls_are_still_answered(
    connections_file: Path, journeys: Journeys
) -> None:
    service = build_service(connections_file)
    service.start()
    client = StepExecutorClient(f"127.0.0.1:{service.port}")
    stopper = threading.Thread(target=service.stop, kwargs={"grace": 1, "notice": 1.5})
    stopper.start()
    deadline = time.monotonic() + 2
    while client.health(timeout=1) != "NOT_SERVING":
        assert time.monotonic() < deadline
        time.sleep(0.02)
    # The load balancer has been told; a call that still arrives in the notice window is served.
    sent = client.generate_otp(journeys.journey(), Step("demo", "grace@example.com", channel="EMAIL"))
    assert sent.WhichOneof("outcome") == "success"
    stopper.join()
    with pytest.raises(StepExecutorError) as raised:
        client.health(timeout=1)
    assert raised.value.code == grpc.StatusCode.UNAVAILABLE
    client.close()


@pytest.mark.parametrize("name", ["  ", "../etc", "x" * 65, "a b", "ünïcode"])
def test_a_malformed_connection_name_in_check_connection_is_invalid_argument(
    client: StepExecutorClient, name: str
) -> None:
    with pytest.raises(StepExecutorError) as raised:
        client.check_connection(name)
    assert raised.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert raised.value.field_violations and raised.value.field_violations[0][0] == "connection"
