"""The gRPC server: StepExecutor plus health checking and reflection on one asyncio event loop, bounded
(`admission`) and gracefully stoppable.

Why grpc.aio: every step mostly waits on Cognito or Redis. On an event loop a waiting step is a coroutine, not
a thread, so the process spends its core on steps instead of on switching 64 threads around one interpreter
lock, and an idle stream costs nothing (see docs, Load testing).
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from stepexecutor.v1 import step_executor_pb2 as pb
from stepexecutor.v1 import step_executor_pb2_grpc as pb_grpc

from otp_step_service.app.execution import StepRunner
from otp_step_service.transport.admission import Admission, AdmissionLimits
from otp_step_service.transport.security import PortSecurity
from otp_step_service.transport.server_spans import ServerSpans
from otp_step_service.transport.servicer import StepExecutorServicer

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StepExecutor"].full_name
HEALTH_METHODS = frozenset(f"/{health.SERVICE_NAME}/{m}" for m in ("Check", "Watch"))
# A health service name that is SERVING while the process serves, whatever Cognito's state: what a liveness
# probe asks (the overall "" follows the connections' circuits, and restarting a pod cannot mend Cognito).
LIVENESS_SERVICE = "liveness"
STEP_METHODS = frozenset(f"/{SERVICE_NAME}/{m}" for m in ("GenerateOtp", "ValidateOtp", "CheckConnection"))


class MethodAwareReflection(reflection.aio.ReflectionServicer):  # type: ignore[misc]
    """Server reflection that also resolves method symbols ("stepexecutor.v1.StepExecutor.GenerateOtp").

    ghz and grpcurl ask for the file containing the *method*; protobuf's upb descriptor pool indexes only
    services, so the stock servicer answers NOT_FOUND and `ghz --call` fails without a .proto (bojand/ghz#419).
    """

    def _file_containing_symbol(
        self, request: reflection_pb2.ServerReflectionRequest, fully_qualified_name: str
    ) -> reflection_pb2.ServerReflectionResponse:
        response = super()._file_containing_symbol(request, fully_qualified_name)
        if response.HasField("error_response"):
            service_name, _, method = fully_qualified_name.rpartition(".")
            try:
                service = self._pool.FindServiceByName(service_name)
            except KeyError:
                return response
            if method in service.methods_by_name:
                return super()._file_containing_symbol(request, service_name)
        return response


@dataclass(frozen=True, slots=True)
class ServerLimits:
    """Concurrency and size bounds (from ServiceSettings, where their defaults are defined)."""

    max_concurrent_steps: int
    max_steps_per_caller: int
    max_streams_per_connection: int
    max_open_rpcs: int
    max_open_rpcs_per_caller: int
    idle_stream_seconds: float
    max_message_bytes: int
    reuse_port: bool  # several server processes share the port (OTP_STEP_PROCESSES)
    max_connection_age_seconds: float  # 0: connections live as long as their clients keep them
    max_connection_age_grace_seconds: float
    min_client_ping_seconds: float  # the most often a client may send keepalive pings


class StepExecutorServer:
    """The server for one process. `start()` binds and serves; `port` is the bound port (useful with port 0)."""

    def __init__(
        self,
        runner: StepRunner,
        listen: str,
        limits: ServerLimits,
        tracing: bool = False,
        security: PortSecurity | None = None,
        health_listen: str = "",
    ) -> None:
        self.security = security or PortSecurity(None, None)
        self._health_listen = health_listen
        self._health_server: grpc.aio.Server | None = None
        self.health_port = 0
        self._runner = runner
        self._listen = listen
        self._limits = limits
        self._tracing = tracing
        self._server: grpc.aio.Server | None = None
        self.admission = Admission(
            AdmissionLimits(
                limits.max_concurrent_steps,
                limits.max_steps_per_caller,
                limits.max_open_rpcs_per_caller,
                limits.idle_stream_seconds,
            ),
            STEP_METHODS,
        )
        self.health = health.aio.HealthServicer()
        self.port = 0
        # Interceptors that must see every call before Admission does (call metrics), set before start().
        self.outer_interceptors: list[grpc.aio.ServerInterceptor] = []

    @staticmethod
    def _connection_age(limits: ServerLimits) -> list[tuple[str, int]]:
        """gRFC A9: a client connection older than the age gets GOAWAY, its open calls the grace to finish, and
        the client reconnects, resolving the name again: after a scale-out, load reaches the new instances."""
        if limits.max_connection_age_seconds <= 0:
            return []
        return [
            ("grpc.max_connection_age_ms", int(limits.max_connection_age_seconds * 1000)),
            ("grpc.max_connection_age_grace_ms", int(limits.max_connection_age_grace_seconds * 1000)),
        ]

    async def start(self) -> None:
        """Bind, start serving and report SERVING; OSError when the address cannot be bound."""
        interceptors: list[Any] = [self.admission]
        if self.security.authentication is not None:
            interceptors.insert(0, self.security.authentication)  # who calls, before anything else
        if self._tracing:
            # Outside authentication and admission, so a refused call has its span; health probes would
            # drown journeys in the trace view, so they are left out.
            interceptors.insert(0, ServerSpans(HEALTH_METHODS))
        interceptors[:0] = self.outer_interceptors
        limits = self._limits
        server = grpc.aio.server(
            interceptors=interceptors,
            # An outer bound on open RPCs of every kind; steps have their own, tighter bounds (Admission).
            maximum_concurrent_rpcs=limits.max_open_rpcs,
            options=[
                ("grpc.max_receive_message_length", limits.max_message_bytes),
                ("grpc.max_send_message_length", limits.max_message_bytes),
                ("grpc.max_concurrent_streams", limits.max_streams_per_connection),
                # Off unless several processes share the port on purpose: a second instance started by
                # mistake must fail to bind, not silently split the traffic.
                ("grpc.so_reuseport", 1 if limits.reuse_port else 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
                # Accept client keepalive pings this often (20 s by default; the shipped client config sends
                # one every 30 s): the default enforcement (5 min) would answer them with GOAWAY too_many_pings.
                (
                    "grpc.http2.min_recv_ping_interval_without_data_ms",
                    int(limits.min_client_ping_seconds * 1000),
                ),
                *self._connection_age(limits),
            ],
        )
        pb_grpc.add_StepExecutorServicer_to_server(StepExecutorServicer(self._runner), server)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            MethodAwareReflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)), server
        )
        try:
            port = self.security.bind(server, self._listen)
        except RuntimeError:  # grpcio reports a failed bind this way
            port = 0
        if port == 0:
            raise OSError(
                f"cannot listen on {self._listen}: address in use or not available (OTP_STEP_LISTEN)"
            )
        await server.start()
        self._server, self.port = server, port
        if self._health_listen:
            try:
                await self._start_health_port()
            except OSError:
                await server.stop(0)
                self._server = None
                raise
        for name in ("", SERVICE_NAME, LIVENESS_SERVICE):
            await self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    async def _start_health_port(self) -> None:
        """A second, plaintext server with the same health servicer and nothing else on it.

        Kubernetes' gRPC probes speak plaintext only: with TLS on the main port they could never pass. This
        port answers `grpc.health.v1` (the same statuses, drain included) and serves no step, no reflection,
        so leaving it unencrypted discloses a serving status and nothing more.
        """
        server = grpc.aio.server(
            maximum_concurrent_rpcs=64,
            options=[("grpc.so_reuseport", 1 if self._limits.reuse_port else 0)],
        )
        health_pb2_grpc.add_HealthServicer_to_server(self.health, server)
        try:
            port = server.add_insecure_port(self._health_listen)
        except RuntimeError:
            port = 0
        if port == 0:
            raise OSError(
                f"cannot listen on {self._health_listen} for health: address in use or not available "
                "(OTP_STEP_HEALTH_LISTEN)"
            )
        await server.start()
        self._health_server, self.health_port = server, port

    async def stop(self, grace: float, notice: float = 0.0) -> None:
        """Report NOT_SERVING, keep serving for `notice` seconds (load balancers see it and stop sending),
        then stop accepting and let in-flight steps finish within `grace` seconds."""
        if self._server is None:
            return
        await self.health.enter_graceful_shutdown()
        if notice > 0:
            await asyncio.sleep(notice)
        await self._server.stop(grace)
        self._server = None
        # Last: probes keep seeing NOT_SERVING (not a refused connection) until the steps have drained.
        if self._health_server is not None:
            await self._health_server.stop(0)
            self._health_server = None
        if self.security.authentication is not None:
            await self.security.authentication.aclose()

    async def wait_for_termination(self) -> None:
        """Until the server stops."""
        if self._server is not None:
            await self._server.wait_for_termination()
