"""The StepExecutor gRPC servicer: status codes for calls that cannot run, outcomes for steps that ran."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import any_pb2
from google.rpc import code_pb2, error_details_pb2, status_pb2
from grpc_status import rpc_status
from stepexecutor.v1 import step_executor_pb2 as pb
from stepexecutor.v1 import step_executor_pb2_grpc as pb_grpc

from otp_step_service.execution import Executed, StepRunner, UnknownConnectionError
from otp_step_service.steps.deadline import Deadline
from otp_step_service.steps.outcomes import S
from otp_step_service.transport import messages

log = logging.getLogger(__name__)

ERROR_DOMAIN = "stepexecutor.v1"
R = TypeVar("R")


def _abort(context: grpc.ServicerContext, code: int, message: str, *details: Any) -> NoReturn:
    status = status_pb2.Status(code=code, message=message)
    for detail in details:
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status returned")  # pragma: no cover - grpc raises


# Below this, no Cognito call can complete: the step cannot run at all.
MIN_STEP_SECONDS = 0.05


def _deadline(context: grpc.ServicerContext) -> Deadline:
    remaining = context.time_remaining()
    if remaining is not None and remaining < MIN_STEP_SECONDS:
        _abort(context, code_pb2.DEADLINE_EXCEEDED, f"less than {MIN_STEP_SECONDS} s left to run the step")
    return Deadline.after(remaining)


class StepExecutorServicer(pb_grpc.StepExecutorServicer):
    """Maps RPCs onto the StepRunner."""

    def __init__(self, runner: StepRunner) -> None:
        self._runner = runner

    def GenerateOtp(
        self, request: pb.GenerateOtpRequest, context: grpc.ServicerContext
    ) -> pb.GenerateOtpResponse:
        """Run Cognito OTP Generate."""
        return self._execute(
            context,
            lambda: self._runner.generate(messages.generate_request(request), _deadline(context)),
            messages.generate_response,
        )

    def ValidateOtp(
        self, request: pb.ValidateOtpRequest, context: grpc.ServicerContext
    ) -> pb.ValidateOtpResponse:
        """Run Cognito OTP Validate."""
        return self._execute(
            context,
            lambda: self._runner.validate(messages.validate_request(request), _deadline(context)),
            messages.validate_response,
        )

    def _execute(
        self,
        context: grpc.ServicerContext,
        run: Callable[[], Executed[S]],
        respond: Callable[[Executed[S]], R],
    ) -> R:
        """Run a step; statuses for calls that cannot run, the response for steps that ran."""
        try:
            executed = run()
        except messages.InvalidRequestError as exc:
            self._invalid(context, exc)
        except UnknownConnectionError as exc:
            self._unknown_connection(context, exc)
        self._deadline_check(context)
        return respond(executed)

    def CheckConnection(
        self, request: pb.CheckConnectionRequest, context: grpc.ServicerContext
    ) -> pb.CheckConnectionResponse:
        """Run the connection self-test."""
        if not request.connection.strip():
            self._invalid(context, messages.InvalidRequestError([("connection", "required")]))
        try:
            checks = self._runner.check_connection(request.connection.strip(), _deadline(context))
        except UnknownConnectionError as exc:
            self._unknown_connection(context, exc)
        return messages.check_response(list(checks))

    @staticmethod
    def _invalid(context: grpc.ServicerContext, exc: messages.InvalidRequestError) -> NoReturn:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in exc.violations
            ]
        )
        _abort(context, code_pb2.INVALID_ARGUMENT, f"invalid request: {exc}", bad)

    @staticmethod
    def _unknown_connection(context: grpc.ServicerContext, exc: UnknownConnectionError) -> NoReturn:
        # NOT_FOUND: the step cannot run at all, and no failure branch could fix a journey that names a
        # connection the service does not have; the orchestrator surfaces it as a configuration error.
        info = error_details_pb2.ErrorInfo(
            reason="CONNECTION_NOT_FOUND", domain=ERROR_DOMAIN, metadata={"connection": exc.name}
        )
        _abort(context, code_pb2.NOT_FOUND, str(exc), info)

    @staticmethod
    def _deadline_check(context: grpc.ServicerContext) -> None:
        # The caller has given up: say so plainly rather than send a response nobody reads.
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            _abort(context, code_pb2.DEADLINE_EXCEEDED, "the deadline expired while the step ran")
