"""`rpc.server.call.duration` for every unary RPC: the OpenTelemetry gRPC instrumentation for Python records
no metrics, so the server records them itself.

The interceptor is the outermost one, so the duration covers everything the caller waited for (Admission's
request read and its refusals included) and the status is the one the caller saw.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
from prometheus_client import Histogram

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


class CallDuration(grpc.aio.ServerInterceptor):
    """Observes `rpc_server_call_duration_seconds{rpc_system, rpc_service, rpc_method, rpc_grpc_status_code}`
    (OTel's numeric status code) for each unary RPC; streaming RPCs (health Watch, reflection) pass through."""

    def __init__(self, histogram: Histogram) -> None:
        self._histogram = histogram

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        handler: Any = await continuation(details)
        if handler is None or handler.response_streaming:
            return handler
        service, _, method = details.method.lstrip("/").rpartition("/")
        # Children are resolved once per status at most; the method labels once per call.
        series = self._histogram.labels
        request_streaming = handler.request_streaming
        inner = handler.stream_unary if request_streaming else handler.unary_unary

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

        make = (
            grpc.stream_unary_rpc_method_handler if request_streaming else grpc.unary_unary_rpc_method_handler
        )
        return make(
            timed,
            request_deserializer=handler.request_deserializer,
            response_serializer=handler.response_serializer,
        )
