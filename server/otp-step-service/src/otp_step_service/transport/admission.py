"""Admission: what every RPC passes before the service spends anything on it.

An asyncio server costs an idle stream no thread, but gRPC's own `maximum_concurrent_rpcs` counts a stream from
the moment its headers arrive, so one client opening hundreds of streams that never send their request would
use up the bound for everyone. So:
- unary methods are served as client-streaming ones (identical on the wire): the handler starts when the stream
  opens and reads the one request message itself, with a time limit (`idle_stream_seconds`), so an idle or
  half-open stream is ended instead of held;
- steps (Generate, Validate, CheckConnection) are counted only once their request has arrived: beyond
  `max_concurrent_steps` in the process, or `max_steps_per_caller` for one caller, new ones get
  RESOURCE_EXHAUSTED at once (backpressure the orchestrator can see, never an unbounded queue), while health
  checks and reflection are never refused for load.
- any unary RPC (health checks included) counts while open against `max_open_rpcs_per_caller`, so one
  caller cannot fill gRPC's own bound on open RPCs (`max_open_rpcs`) with idle streams spread over many
  connections.
The caller is the authenticated caller (transport/auth.py), else the client's host (its peer address without
the port: a second connection from the same host is the same caller).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import grpc
from google.protobuf import duration_pb2, message
from google.rpc import code_pb2, error_details_pb2

from otp_step_service.transport.auth import caller_key
from otp_step_service.transport.interception import HandlerInterceptor, rebuilt
from otp_step_service.transport.status import ERROR_DOMAIN, abort

_EOF: Any = grpc.aio.EOF


@dataclass(frozen=True, slots=True)
class AdmissionLimits:
    """The bounds Admission enforces (from ServiceSettings)."""

    max_concurrent_steps: int
    max_steps_per_caller: int
    max_open_rpcs_per_caller: int
    idle_stream_seconds: float


class Admission(HandlerInterceptor):
    """Bounds steps in flight (per process and per caller) and ends streams that send no request."""

    def __init__(self, limits: AdmissionLimits, step_methods: frozenset[str]) -> None:
        self._limits = limits
        self._steps = step_methods
        self._in_flight = 0
        self._per_caller: Counter[str] = Counter()
        self._open_per_caller: Counter[str] = Counter()
        # Calls refused, by reason: plain counts, read by the metrics at scrape time (no cost per call).
        self.refusals: Counter[str] = Counter()

    @property
    def steps_in_flight(self) -> int:
        """Steps running now."""
        return self._in_flight

    def wrap(self, handler: Any, details: grpc.HandlerCallDetails) -> Any:
        """Unary methods served as client-streaming ones that read their request themselves (see above)."""
        if handler.request_streaming or handler.response_streaming:
            return handler
        unary = handler.unary_unary
        is_step = details.method in self._steps

        async def read_then_run(requests: Any, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
            caller = caller_key(context)  # the authenticated caller, else the client host
            if self._open_per_caller[caller] >= self._limits.max_open_rpcs_per_caller:
                self.refusals["CALLER_OVERLOADED"] += 1
                await abort(
                    context,
                    code_pb2.RESOURCE_EXHAUSTED,
                    f"this caller has {self._limits.max_open_rpcs_per_caller} calls open already",
                    *overloaded_details("CALLER_OVERLOADED"),
                )
            with _counted(self._open_per_caller, caller):
                request = await self._read_request(context)
                if not is_step:
                    return await unary(request, context)
                refused = self._refusal(caller)
                if refused is not None:
                    reason, message = refused
                    self.refusals[reason] += 1
                    await abort(context, code_pb2.RESOURCE_EXHAUSTED, message, *overloaded_details(reason))
                self._in_flight += 1
                try:
                    with _counted(self._per_caller, caller):
                        return await unary(request, context)
                finally:
                    self._in_flight -= 1

        return rebuilt(handler, read_then_run, request_streaming=True)

    async def _read_request(self, context: grpc.aio.ServicerContext[Any, Any]) -> Any:
        try:
            # asyncio.timeout, not wait_for: no extra task per call on the hot path.
            async with asyncio.timeout(self._limits.idle_stream_seconds):
                request = await context.read()
        except message.DecodeError:
            await abort(
                context, code_pb2.INVALID_ARGUMENT, "the request message is not a valid protobuf message"
            )
        except TimeoutError:
            self.refusals["IDLE_STREAM"] += 1
            await abort(
                context,
                code_pb2.DEADLINE_EXCEEDED,
                f"no request message within {self._limits.idle_stream_seconds:g} s of opening the stream",
                reason="IDLE_STREAM",
            )
        if request is _EOF:
            await abort(context, code_pb2.INVALID_ARGUMENT, "the stream ended without a request message")
        return request

    def _refusal(self, caller: str) -> tuple[str, str] | None:
        """(reason, message) when a step from `caller` must wait, else None."""
        limits = self._limits
        if self._in_flight >= limits.max_concurrent_steps:
            return "OVERLOADED", f"{limits.max_concurrent_steps} steps in flight already: back off and retry"
        if self._per_caller[caller] >= limits.max_steps_per_caller:
            return (
                "CALLER_OVERLOADED",
                f"this caller has {limits.max_steps_per_caller} steps in flight already: back off and retry",
            )
        return None


def overloaded_details(reason: str) -> tuple[error_details_pb2.ErrorInfo, error_details_pb2.RetryInfo]:
    """ErrorInfo naming the bound that was hit, and a short RetryInfo hint."""
    return (
        error_details_pb2.ErrorInfo(reason=reason, domain=ERROR_DOMAIN),
        error_details_pb2.RetryInfo(retry_delay=duration_pb2.Duration(nanos=100_000_000)),
    )


@contextlib.contextmanager
def _counted(counter: Counter[str], caller: str) -> Iterator[None]:
    """One more for `caller` while the block runs; the entry goes when it drops to zero (no unbounded dict)."""
    counter[caller] += 1
    try:
        yield
    finally:
        counter[caller] -= 1
        if counter[caller] <= 0:
            del counter[caller]
