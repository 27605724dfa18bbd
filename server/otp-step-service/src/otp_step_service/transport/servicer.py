"""The StepExecutor gRPC servicer: status codes for calls that cannot run, outcomes for steps that ran."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any, NoReturn, TypeVar

import grpc
from google.protobuf import duration_pb2
from google.rpc import code_pb2, error_details_pb2
from stepexecutor.v1 import step_executor_pb2 as pb
from stepexecutor.v1 import step_executor_pb2_grpc as pb_grpc

from otp_step_service.app.execution import Executed, StepRunner
from otp_step_service.steps.deadline import Deadline
from otp_step_service.steps.errors import StepNotRunError, UnknownConnectionError
from otp_step_service.steps.journey import CallerQuota
from otp_step_service.steps.outcomes import CodeSent, CodeVerified, S
from otp_step_service.transport import messages
from otp_step_service.transport.auth import authorize, current_caller
from otp_step_service.transport.status import ERROR_DOMAIN, abort

log = logging.getLogger(__name__)

R = TypeVar("R")
Context = grpc.aio.ServicerContext[Any, Any]

# Below this, no Cognito call can complete: the step cannot run at all.
MIN_STEP_SECONDS = 0.05


async def _deadline(context: Context) -> Deadline:
    remaining = context.time_remaining()
    if remaining is not None and remaining < MIN_STEP_SECONDS:
        await abort(
            context, code_pb2.DEADLINE_EXCEEDED, f"less than {MIN_STEP_SECONDS} s left to run the step"
        )
    return Deadline.after(remaining)


class StepExecutorServicer(pb_grpc.StepExecutorServicer):
    """Maps RPCs onto the StepRunner, one coroutine per call."""

    def __init__(self, runner: StepRunner) -> None:
        self._runner = runner

    async def GenerateOtp(self, request: pb.GenerateOtpRequest, context: Context) -> pb.GenerateOtpResponse:
        """Run Cognito OTP Generate."""
        await authorize(context, request.step.connection, request.journey.tenant_id)

        async def run() -> Executed[CodeSent]:
            parsed = messages.generate_request(request)  # malformed beats late: INVALID_ARGUMENT first
            caller = current_caller()
            if caller is not None and caller.send_budgets:
                parsed = replace(parsed, caller=CallerQuota(caller.name, caller.send_budgets))
            return await self._runner.generate(parsed, await _deadline(context))

        return await self._execute(context, run, messages.generate_response)

    async def ValidateOtp(self, request: pb.ValidateOtpRequest, context: Context) -> pb.ValidateOtpResponse:
        """Run Cognito OTP Validate."""
        await authorize(context, request.step.connection, request.journey.tenant_id)

        async def run() -> Executed[CodeVerified]:
            parsed = messages.validate_request(request)
            return await self._runner.validate(parsed, await _deadline(context))

        return await self._execute(context, run, messages.validate_response)

    async def CheckConnection(
        self, request: pb.CheckConnectionRequest, context: Context
    ) -> pb.CheckConnectionResponse:
        """Run the connection self-test."""
        name = request.connection.strip()
        await authorize(context, name, None)
        problem = messages.connection_name_problem(name)
        if problem:
            await self._invalid(context, messages.InvalidRequestError([("connection", problem)]))
        deadline = await _deadline(context)
        try:
            checks = await self._runner.check_connection(name, deadline)
        except UnknownConnectionError as exc:
            await self._unknown_connection(context, exc)
        return messages.check_response(checks)

    async def _execute(
        self,
        context: Context,
        run: Callable[[], Awaitable[Executed[S]]],
        respond: Callable[[Executed[S]], R],
    ) -> R:
        """Run a step; statuses for calls that cannot run, the response for steps that ran."""
        try:
            executed = await run()
        except messages.InvalidRequestError as exc:
            await self._invalid(context, exc)
        except UnknownConnectionError as exc:
            await self._unknown_connection(context, exc)
        except StepNotRunError as exc:
            await self._not_run(context, exc)
        remaining = context.time_remaining()
        if remaining is not None and remaining <= 0:
            # The caller has given up: say so plainly rather than send a response nobody reads.
            await abort(context, code_pb2.DEADLINE_EXCEEDED, "the deadline expired while the step ran")
        return respond(executed)

    @staticmethod
    async def _invalid(context: Context, exc: messages.InvalidRequestError) -> NoReturn:
        bad = error_details_pb2.BadRequest(
            field_violations=[
                error_details_pb2.BadRequest.FieldViolation(field=f, description=d) for f, d in exc.violations
            ]
        )
        await abort(context, code_pb2.Code.Value(exc.status.value), f"invalid request: {exc}", bad)

    @staticmethod
    async def _not_run(context: Context, exc: StepNotRunError) -> NoReturn:
        # UNAVAILABLE: the step did nothing a repeat could double, so the call may be made again as it is (the
        # shipped service config retries GenerateOtp by itself, unless told the call's deadline leaves no room
        # for it); RetryInfo says how soon it may succeed.
        delay = exc.retry_after_seconds
        await abort(
            context,
            code_pb2.Code.Value(exc.status.value),
            str(exc),
            error_details_pb2.ErrorInfo(reason=exc.reason, domain=ERROR_DOMAIN),
            error_details_pb2.RetryInfo(
                retry_delay=duration_pb2.Duration(seconds=int(delay), nanos=int(delay % 1 * 1e9))
            ),
            pushback_seconds=None if exc.retry_within_call else -1,
        )

    @staticmethod
    async def _unknown_connection(context: Context, exc: UnknownConnectionError) -> NoReturn:
        # NOT_FOUND: the step cannot run at all, and no failure branch could fix a journey that names a
        # connection the service does not have; the orchestrator surfaces it as a configuration error. The
        # configured names are not listed: a caller learns only that this one does not exist.
        info = error_details_pb2.ErrorInfo(
            reason="CONNECTION_NOT_FOUND", domain=ERROR_DOMAIN, metadata={"connection": exc.name}
        )
        await abort(context, code_pb2.Code.Value(exc.status.value), str(exc), info)
