"""The gRPC server span of each unary call: what opentelemetry-instrumentation-grpc records, for less.

The same span as the instrumentation's aio server interceptor (name `/package.Service/Method`, kind SERVER,
`rpc.system`, `rpc.service`, `rpc.method`, `rpc.grpc.status_code`, `rpc.user_agent`, `net.peer.ip`,
`net.peer.port`, `net.peer.name`; ERROR status for the codes it maps to ERROR; the W3C trace context of the
caller as parent), recorded without its per-call costs: no wrapt proxy around the servicer context, no dict
of the metadata and no propagator run when the caller sent no trace context, the attributes made once per
method and client rather than per call (docs/tracing.md, "Where the CPU goes").

It is the outermost interceptor after call metrics, so refused calls (unauthenticated, permission denied,
rate-limited, over a bound) get their span too, with the refusal reason as `error.type`
(`telemetry.refused`). Health checks are left out: they would drown journeys in the trace view.
"""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import unquote

import grpc
from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import SpanKind, Status, StatusCode

from otp_step_service.observability.telemetry import tracer
from otp_step_service.transport.interception import HandlerInterceptor, behaviour_of, rebuilt

# The statuses the instrumentation marks ERROR (its `_server_status`); every other code leaves the span UNSET.
ERROR_CODES = frozenset(
    code.value[0]
    for code in (
        grpc.StatusCode.UNKNOWN,
        grpc.StatusCode.DEADLINE_EXCEEDED,
        grpc.StatusCode.UNIMPLEMENTED,
        grpc.StatusCode.INTERNAL,
        grpc.StatusCode.UNAVAILABLE,
        grpc.StatusCode.DATA_LOSS,
    )
)
_OK = grpc.StatusCode.OK.value[0]
_UNKNOWN = grpc.StatusCode.UNKNOWN.value[0]
_CANCELLED = grpc.StatusCode.CANCELLED.value[0]
_NAMES = {code.value[0]: code for code in grpc.StatusCode}


def _code(context: grpc.aio.ServicerContext[Any, Any], default: int) -> int:
    code: Any = context.code()
    if code is None:
        return default
    if isinstance(code, grpc.StatusCode):
        return int(code.value[0])
    return int(code)


def peer_attributes(peer: str) -> dict[str, str]:
    """`net.peer.ip` / `net.peer.port` (and `net.peer.name` on loopback) from a gRPC peer string such as
    `ipv4:127.0.0.1:57284` or `ipv6:[::1]:57284`, as the instrumentation splits it; nothing for unix: peers."""
    if peer.startswith("unix:"):
        return {}
    try:
        ip, port = peer.split(",")[0].split(":", 1)[1].rsplit(":", 1)
    except (IndexError, ValueError):
        return {}
    ip = unquote(ip)
    attributes = {"net.peer.ip": ip, "net.peer.port": port}
    if ip in ("[::1]", "127.0.0.1"):
        attributes["net.peer.name"] = "localhost"
    return attributes


# Attribute sets kept per method for (peer, user agent): a client's calls repeat both; beyond this many
# clients the set starts again.
_KNOWN_CLIENTS = 1024


class ServerSpans(HandlerInterceptor):
    """Records the SERVER span of each unary call (see the module docstring), the parent of the step span."""

    def __init__(self, skipped_methods: frozenset[str]) -> None:
        self._skipped = skipped_methods
        self._per_method: dict[str, dict[tuple[str, str | None], dict[str, Any]]] = {}
        self._fields = frozenset(propagate.get_global_textmap().fields)

    def _attributes(self, method: str, peer: str, user_agent: str | None) -> dict[str, Any]:
        """The span's attributes for a call from `peer` with `user_agent`, made once per such client (the
        SDK copies them into the span)."""
        clients = self._per_method.get(method)
        if clients is None:
            clients = self._per_method[method] = {}
        known = clients.get((peer, user_agent))
        if known is None:
            service, _, name = method.lstrip("/").partition("/")
            known = {
                "rpc.system": "grpc",
                "rpc.method": name,
                "rpc.service": service,
                **peer_attributes(peer),
            }
            if user_agent is not None:
                known["rpc.user_agent"] = user_agent
            if len(clients) >= _KNOWN_CLIENTS:
                clients.clear()
            clients[peer, user_agent] = known
        return known

    def wrap(self, handler: Any, details: grpc.HandlerCallDetails) -> Any:
        """Unary-response calls traced; streams (health Watch, reflection) and skipped methods passed through."""
        if handler.response_streaming or details.method in self._skipped:
            return handler
        name = details.method
        metadata = details.invocation_metadata or ()
        fields = self._fields
        inner = behaviour_of(handler)

        async def traced(request: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            user_agent: str | None = None
            carrier: dict[str, str] | None = None
            for key, value in metadata:
                if key == "user-agent":
                    user_agent = str(value)
                elif key in fields:
                    carrier = carrier or {}
                    carrier[key] = str(value)
            attributes = self._attributes(name, context.peer(), user_agent)
            parent = propagate.extract(carrier) if carrier is not None else None
            span = tracer().start_span(name, parent, SpanKind.SERVER, attributes, record_exception=False)
            token = otel_context.attach(trace.set_span_in_context(span, parent))
            code = _UNKNOWN
            try:
                response = await inner(request, context)
                code = _code(context, _OK)
                return response
            except grpc.aio.AbortError:
                code = _code(context, _UNKNOWN)
                raise
            except asyncio.CancelledError:
                code = _CANCELLED
                raise
            except Exception as error:  # not an abort: a bug, recorded as the instrumentation does
                code = _code(context, _UNKNOWN)
                span.record_exception(error)
                raise
            finally:
                otel_context.detach(token)
                _finish(span, code, context)

        return rebuilt(handler, traced)


def _finish(span: trace.Span, code: int, context: grpc.aio.ServicerContext[Any, Any]) -> None:
    span.set_attribute("rpc.grpc.status_code", code)
    if code in ERROR_CODES:
        span.set_status(Status(StatusCode.ERROR, f"{_NAMES[code]}:{context.details() or ''}"))
    span.end()
