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
    pushback_seconds: float | None = None,
) -> NoReturn:
    """End the RPC with `code` (a google.rpc.Code value), `text` and the packed `details`; the refusal
    `reason` (else the ErrorInfo's) goes on the call's span as `error.type`. `pushback_seconds` tells a gRPC
    client's retry policy when to try this call again (`grpc-retry-pushback-ms`, gRFC A6); negative: not at
    all, the caller gets this status at once (a pushback past the deadline would leave it only a deadline)."""
    status = status_pb2.Status(code=code, message=text)
    for detail in details:
        if reason is None and isinstance(detail, error_details_pb2.ErrorInfo):
            reason = detail.reason
        packed = any_pb2.Any()
        packed.Pack(detail)
        status.details.append(packed)
    if reason is not None:
        refused(reason)
    answer = rpc_status.to_status(status)
    if pushback_seconds is not None:
        milliseconds = int(pushback_seconds * 1000) if pushback_seconds >= 0 else -1
        pushback = ("grpc-retry-pushback-ms", str(milliseconds))
        answer = answer._replace(trailing_metadata=(*answer.trailing_metadata, pushback))
    await context.abort_with_status(answer)
    raise AssertionError("abort_with_status returned")  # pragma: no cover - grpc raises
