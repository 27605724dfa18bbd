"""The one way an interceptor here wraps a method handler: `HandlerInterceptor.wrap`, and `rebuilt`.

grpc.aio hands an interceptor the next handler (an `RpcMethodHandler`: four shapes, a behaviour per shape,
and the message (de)serializers); wrapping it means building a new handler of a shape with a new behaviour
and the same serializers. Every interceptor of the transport (call metrics, authentication, admission,
server spans) does exactly that, through this module.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

import grpc

Behaviour = Callable[..., Any]


def behaviour_of(handler: Any) -> Behaviour:
    """The handler's behaviour for its shape (unary_unary, unary_stream, stream_unary or stream_stream)."""
    if handler.request_streaming:
        return handler.stream_stream if handler.response_streaming else handler.stream_unary  # type: ignore[no-any-return]
    return handler.unary_stream if handler.response_streaming else handler.unary_unary  # type: ignore[no-any-return]


_MAKERS = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def rebuilt(handler: Any, behaviour: Behaviour, *, request_streaming: bool | None = None) -> Any:
    """A handler of the same shape (or, with `request_streaming`, that request side) running `behaviour`,
    with `handler`'s serializers."""
    streaming = handler.request_streaming if request_streaming is None else request_streaming
    make = _MAKERS[(streaming, handler.response_streaming)]
    return make(
        behaviour,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class HandlerInterceptor(grpc.aio.ServerInterceptor):
    """Base of the transport's interceptors: `wrap` gets the next handler (never None) and the call details,
    and returns the handler to serve: the same one to pass the call through, or one made with `rebuilt`."""

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[Any]],
        details: grpc.HandlerCallDetails,
    ) -> Any:
        """grpc.aio's hook: resolves the next handler, then `wrap`s it."""
        handler: Any = await continuation(details)
        if handler is None:  # no such method: grpc answers UNIMPLEMENTED
            return None
        return self.wrap(handler, details)

    def wrap(self, handler: Any, details: grpc.HandlerCallDetails) -> Any:
        """The handler to serve this call with (subclasses override)."""
        return handler
