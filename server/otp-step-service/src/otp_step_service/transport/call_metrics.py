"""`rpc.server.call.duration` for every unary RPC: the OpenTelemetry gRPC instrumentation for Python records
no metrics, so the server records them itself.

The interceptor is the outermost one, so the duration covers everything the caller waited for (Admission's
request read and its refusals included) and the status is the one the caller saw.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc
from prometheus_client import Histogram

from otp_step_service.observability.metrics import Series
from otp_step_service.transport.interception import HandlerInterceptor, behaviour_of, rebuilt

_OK = str(grpc.StatusCode.OK.value[0])
_UNKNOWN = str(grpc.StatusCode.UNKNOWN.value[0])
_CANCELLED = str(grpc.StatusCode.CANCELLED.value[0])


def _status(context: grpc.aio.ServicerContext[Any, Any], default: str) -> str:
    code: Any = context.code()
    if code is None:
        return default
    if isinstance(code, grpc.StatusCode):
        return str(code.value[0])
    return str(int(code))


class CallDuration(HandlerInterceptor):
    """Observes `rpc_server_call_duration_seconds{rpc_system, rpc_service, rpc_method, rpc_grpc_status_code}`
    (OTel's numeric status code) for each unary RPC; streaming RPCs (health Watch, reflection) pass through."""

    def __init__(self, histogram: Series[Histogram]) -> None:
        self._histogram = histogram

    def wrap(self, handler: Any, details: grpc.HandlerCallDetails) -> Any:
        """Unary-response handlers timed; streaming responses passed through."""
        if handler.response_streaming:
            return handler
        service, _, method = details.method.lstrip("/").rpartition("/")
        # The series keeps each (method, status) child once found.
        series = self._histogram.labels
        inner = behaviour_of(handler)

        async def timed(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            started = time.perf_counter()
            status = _UNKNOWN
            try:
                response = await inner(request, context)
                status = _status(context, _OK)
                return response
            except asyncio.CancelledError:
                status = _CANCELLED
                raise
            except Exception:
                status = _status(context, _UNKNOWN)
                raise
            finally:
                series("grpc", service, method, status).observe(time.perf_counter() - started)

        return rebuilt(handler, timed)
