"""The Python client gives each Generate call an execution id when the journey has none, so the service
config's retries of that call (the same request, sent again on UNAVAILABLE) are one execution to the service:
answered with the code already sent, never held to the resend cooldown as a second Generate would be."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent import futures

import grpc
import pytest
from otp_step_client import Journey, Step, StepExecutorClient
from stepexecutor.v1 import step_executor_pb2 as pb


class _Flaky:
    """Answers UNAVAILABLE to the first Generate, then success; keeps every request it saw."""

    def __init__(self) -> None:
        self.seen: list[pb.GenerateOtpRequest] = []

    def generate(
        self, request: pb.GenerateOtpRequest, context: grpc.ServicerContext
    ) -> pb.GenerateOtpResponse:
        self.seen.append(request)
        if len(self.seen) == 1:
            context.abort(grpc.StatusCode.UNAVAILABLE, "the store failed before Cognito was asked")
        return pb.GenerateOtpResponse(success=pb.GenerateOtpSuccess())


@pytest.fixture
def flaky() -> Iterator[tuple[_Flaky, int]]:
    servicer = _Flaky()
    server = grpc.server(futures.ThreadPoolExecutor(2))
    handler = grpc.method_handlers_generic_handler(
        "stepexecutor.v1.StepExecutor",
        {
            "GenerateOtp": grpc.unary_unary_rpc_method_handler(
                servicer.generate,
                request_deserializer=pb.GenerateOtpRequest.FromString,
                response_serializer=pb.GenerateOtpResponse.SerializeToString,
            )
        },
    )
    server.add_generic_rpc_handlers((handler,))
    port = server.add_insecure_port("127.0.0.1:0")
    server.start()
    try:
        yield servicer, port
    finally:
        server.stop(None)


def test_a_retried_generate_is_one_execution_and_each_call_another(flaky: tuple[_Flaky, int]) -> None:
    servicer, port = flaky
    journey = Journey("jit-migration", run_id="run-1", step_id="send-code")
    with StepExecutorClient(f"127.0.0.1:{port}", timeout=5) as client:
        answer = client.generate_otp(journey, Step("demo", "ada@example.com"))
        client.generate_otp(journey, Step("demo", "ada@example.com"))
    assert answer.WhichOneof("outcome") == "success"
    first, retry, second_call = (r.journey.step_execution_id for r in servicer.seen)
    assert first and retry == first  # the library's retry: the same execution
    assert second_call and second_call != first  # a second call of the run: another execution


def test_an_execution_id_the_caller_set_is_kept(flaky: tuple[_Flaky, int]) -> None:
    servicer, port = flaky
    journey = Journey(
        "jit-migration", run_id="run-1", step_id="send-code", step_execution_id="run-1/send-code/1"
    )
    with StepExecutorClient(f"127.0.0.1:{port}", timeout=5) as client:
        client.generate_otp(journey, Step("demo", "ada@example.com"))
    assert {r.journey.step_execution_id for r in servicer.seen} == {"run-1/send-code/1"}
