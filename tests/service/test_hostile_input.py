"""Hostile input gets a documented, typed status and no stack trace: deep nesting, invalid UTF-8, garbage."""

from __future__ import annotations

import grpc
import pytest
from google.protobuf import struct_pb2
from harness import RunningService
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from otp_step_client import StepExecutorClient
from stepexecutor.v1 import step_executor_pb2 as pb

GENERATE = "/stepexecutor.v1.StepExecutor/GenerateOtp"


def _nested(depth: int) -> struct_pb2.Struct:
    top = struct_pb2.Struct()
    level = top
    for _ in range(depth):
        level = level.fields["a"].struct_value
    return top


def _request_with_payload(payload: struct_pb2.Struct) -> pb.GenerateOtpRequest:
    request = pb.GenerateOtpRequest(
        journey=pb.JourneyContext(journey_id="j", journey_run_id="r-nested", step_id="s"),
        step=pb.StepConfiguration(
            connection="demo", user_identifier="ada@example.com", otp_channel=pb.OTP_CHANNEL_EMAIL
        ),
    )
    request.step.event_data.mode = pb.EVENT_DATA_MODE_CUSTOM_PAYLOAD
    request.step.event_data.custom_payload.CopyFrom(payload)
    return request


def _raw(service: RunningService) -> grpc.UnaryUnaryMultiCallable:
    channel = grpc.insecure_channel(f"127.0.0.1:{service.port}")
    return channel.unary_unary(GENERATE, request_serializer=None, response_deserializer=None)


@pytest.mark.parametrize("depth", [33, 45, 60, 200])
def test_a_deeply_nested_custom_payload_is_invalid_argument(service: RunningService, depth: int) -> None:
    with pytest.raises(grpc.RpcError) as raised:
        _raw(service)(_request_with_payload(_nested(depth)).SerializeToString(), timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT, raised.value.details()


def test_a_payload_of_ordinary_depth_is_reported(service: RunningService) -> None:
    response = pb.GenerateOtpResponse.FromString(
        _raw(service)(_request_with_payload(_nested(31)).SerializeToString(), timeout=10)
    )
    assert response.event_data.truncated is False


def _length_delimited(field: int, body: bytes) -> bytes:
    return bytes([field << 3 | 2, len(body)]) + body


def test_invalid_utf8_in_a_string_field_is_invalid_argument(service: RunningService) -> None:
    # GenerateOtpRequest.journey (1) -> JourneyContext.journey_id (1) = bytes that are not UTF-8.
    garbage = _length_delimited(1, _length_delimited(1, b"\xff\xfe\xfd"))
    with pytest.raises(grpc.RpcError) as raised:
        _raw(service)(garbage, timeout=5)
    assert raised.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    with StepExecutorClient(f"127.0.0.1:{service.port}") as client:
        assert client.health() == "SERVING"


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.binary(max_size=600))
def test_any_bytes_get_a_documented_status_and_the_server_stays_up(
    service: RunningService, data: bytes
) -> None:
    documented = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND}
    for method in (
        GENERATE,
        "/stepexecutor.v1.StepExecutor/ValidateOtp",
        "/stepexecutor.v1.StepExecutor/CheckConnection",
    ):
        channel = _channels.setdefault(service.port, grpc.insecure_channel(f"127.0.0.1:{service.port}"))
        call = channel.unary_unary(method, request_serializer=None, response_deserializer=None)
        try:
            call(data, timeout=10)
            status = grpc.StatusCode.OK
        except grpc.RpcError as exc:
            status = exc.code()
        assert status in documented, (method, status, data)


_channels: dict[int, grpc.Channel] = {}
