"""Ending a call with a rich gRPC status (google.rpc.Status with details), the one way the transport does it."""

from __future__ import annotations

from typing import Any, NoReturn

import grpc
from google.protobuf import any_pb2, message
from google.rpc import error_details_pb2, status_pb2
from grpc_status import rpc_status

from otp_step_service.observability.telemetry import refused

# google.rpc.ErrorInfo.domain of every error this service reports.
ERROR_DOMAIN = "stepexecutor.v1"


async def abort(
    context: grpc.aio.ServicerContext[Any, Any],
    code: int,
    text: str,
    *details: message.Message,
    reason: str | None = None,
) -> NoReturn:
    """End the RPC with `code` (a google.rpc.Code value), `text` and the packed `details`; the refusal
    `reason` (else the ErrorInfo's) goes on the call's span as `error.type`."""
    status = status_pb2.Status(code=code, message=text)
    for detail in details:
        if reason is None and isinstance(detail, error_details_pb2.ErrorInfo):
            reason = detail.reason
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    if reason is not None:
        refused(reason)
    await context.abort_with_status(rpc_status.to_status(status))
    raise AssertionError("abort_with_status returned")  # pragma: no cover - grpc raises
