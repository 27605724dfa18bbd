"""The gRPC server: StepExecutor plus health checking and reflection, bounded and gracefully stoppable.

Why a synchronous grpcio server: boto3 blocks, so every step needs a thread while Cognito answers. The sync
server runs each RPC on a pool thread that makes its boto3 calls directly; grpc.aio would run the same calls
in an executor of the same size, adding a thread hop per Cognito call for no gain (see README, Load testing).
The worker count, the bound on concurrent RPCs and botocore's connection pools are sized together.
"""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass
from types import FrameType

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection, reflection_pb2, reflection_pb2_grpc
from stepexecutor.v1 import step_executor_pb2 as pb
from stepexecutor.v1 import step_executor_pb2_grpc as pb_grpc

from otp_step_service.execution import StepRunner
from otp_step_service.transport.servicer import StepExecutorServicer

log = logging.getLogger(__name__)

SERVICE_NAME = pb.DESCRIPTOR.services_by_name["StepExecutor"].full_name


class MethodAwareReflection(reflection.ReflectionServicer):  # type: ignore[misc]
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
    """Concurrency and size bounds."""

    workers: int = 64
    max_concurrent_steps: int = 256
    max_message_bytes: int = 1 << 20
    reuse_port: bool = False  # several server processes share the port (OTP_STEP_PROCESSES)


class StepExecutorServer:
    """A running server: `port` is the bound port (useful with port 0)."""

    def __init__(
        self, runner: StepRunner, listen: str, limits: ServerLimits = ServerLimits(), tracing: bool = False
    ) -> None:
        interceptors = []
        if tracing:
            from opentelemetry.instrumentation.grpc import filters, server_interceptor

            # Health probes would drown journeys in the trace view; they are left out.
            interceptors.append(server_interceptor(filter_=filters.negate(filters.health_check())))
        self._pool = futures.ThreadPoolExecutor(max_workers=limits.workers, thread_name_prefix="step")
        self._server = grpc.server(
            self._pool,
            interceptors=interceptors,
            # Beyond this many in-flight RPCs grpc answers RESOURCE_EXHAUSTED at once: backpressure the
            # orchestrator can see, instead of an unbounded queue.
            maximum_concurrent_rpcs=limits.max_concurrent_steps,
            options=[
                ("grpc.max_receive_message_length", limits.max_message_bytes),
                ("grpc.max_send_message_length", limits.max_message_bytes),
                # Off unless several processes share the port on purpose: a second instance started by
                # mistake must fail to bind, not silently split the traffic.
                ("grpc.so_reuseport", 1 if limits.reuse_port else 0),
                ("grpc.keepalive_permit_without_calls", 1),
                ("grpc.http2.min_ping_interval_without_data_ms", 10_000),
            ],
        )
        pb_grpc.add_StepExecutorServicer_to_server(StepExecutorServicer(runner), self._server)
        self.health = health.HealthServicer(experimental_non_blocking=True)
        health_pb2_grpc.add_HealthServicer_to_server(self.health, self._server)
        reflection_pb2_grpc.add_ServerReflectionServicer_to_server(
            MethodAwareReflection((SERVICE_NAME, health.SERVICE_NAME, reflection.SERVICE_NAME)), self._server
        )
        try:
            self.port = self._server.add_insecure_port(listen)
        except RuntimeError:  # grpcio reports a failed bind this way
            self.port = 0
        if self.port == 0:
            raise OSError(f"cannot listen on {listen}: address in use or not available (OTP_STEP_LISTEN)")

    def start(self) -> None:
        """Start serving and report SERVING."""
        self._server.start()
        for name in ("", SERVICE_NAME):
            self.health.set(name, health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float) -> None:
        """Report NOT_SERVING, stop accepting, let in-flight steps finish within `grace` seconds."""
        self.health.enter_graceful_shutdown()
        self._server.stop(grace).wait()
        self._pool.shutdown(wait=False, cancel_futures=True)

    def stop_on_signals(self, grace: float) -> threading.Event:
        """Stop gracefully on SIGTERM / SIGINT (main thread only); the event is set once stopped."""
        stopped = threading.Event()

        def handle(signum: int, _frame: FrameType | None) -> None:
            log.info("%s: draining in-flight steps (grace %.0f s)", signal.Signals(signum).name, grace)

            def drain() -> None:
                self.stop(grace)
                stopped.set()

            threading.Thread(target=drain, name="drain", daemon=True).start()

        signal.signal(signal.SIGTERM, handle)
        signal.signal(signal.SIGINT, handle)
        return stopped
