"""The service's own StepRunner behind grpc.aio instead of the sync server: a measurement, not a product path.

The README's "Why a synchronous grpcio server" rests on scenario 2a: the same steps, connections and
boto3 clients, with the gRPC side on an asyncio event loop and each step handed to a thread pool of the
same size (boto3 blocks, so a step needs a thread either way). Run by `python -m bench` through
`bench.counted_service` when BENCH_SERVER=aio.
"""

from __future__ import annotations

import asyncio
import signal
from concurrent import futures
from typing import Any

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from otp_step_service.adapters.memory_store import InMemoryChallengeStore
from otp_step_service.connections import build_connections
from otp_step_service.execution import StepRunner
from otp_step_service.settings import ServiceSettings
from otp_step_service.steps.deadline import Deadline
from otp_step_service.transport import messages
from stepexecutor.v1 import step_executor_pb2 as pb
from stepexecutor.v1 import step_executor_pb2_grpc as pb_grpc


class AioStepExecutor(pb_grpc.StepExecutorServicer):
    """GenerateOtp / ValidateOtp on the event loop, each step on a worker thread."""

    def __init__(self, runner: StepRunner, pool: futures.ThreadPoolExecutor) -> None:
        self._runner = runner
        self._pool = pool

    async def GenerateOtp(self, request: pb.GenerateOtpRequest, context: Any) -> pb.GenerateOtpResponse:  # noqa: N802
        """Generate, off the loop."""
        step = messages.generate_request(request)
        deadline = Deadline.after(context.time_remaining())
        loop = asyncio.get_running_loop()
        executed = await loop.run_in_executor(self._pool, self._runner.generate, step, deadline)
        return messages.generate_response(executed)

    async def ValidateOtp(self, request: pb.ValidateOtpRequest, context: Any) -> pb.ValidateOtpResponse:  # noqa: N802
        """Validate, off the loop."""
        step = messages.validate_request(request)
        deadline = Deadline.after(context.time_remaining())
        loop = asyncio.get_running_loop()
        executed = await loop.run_in_executor(self._pool, self._runner.validate, step, deadline)
        return messages.validate_response(executed)

    async def CheckConnection(  # noqa: N802
        self, request: pb.CheckConnectionRequest, context: Any
    ) -> pb.CheckConnectionResponse:
        """The self-test, off the loop."""
        deadline = Deadline.after(context.time_remaining())
        loop = asyncio.get_running_loop()
        checks = await loop.run_in_executor(
            self._pool, self._runner.check_connection, request.connection, deadline
        )
        return messages.check_response(list(checks))


async def serve(settings: ServiceSettings) -> None:
    """Serve until SIGTERM / SIGINT."""
    connections = build_connections(settings.connections_path, max_connections=settings.workers)
    runner = StepRunner(connections, InMemoryChallengeStore())
    pool = futures.ThreadPoolExecutor(settings.workers, thread_name_prefix="step")
    server = grpc.aio.server(maximum_concurrent_rpcs=settings.max_concurrent_steps)
    pb_grpc.add_StepExecutorServicer_to_server(AioStepExecutor(runner, pool), server)
    health_servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    server.add_insecure_port(settings.listen)
    await server.start()
    await health_servicer.set("", health_pb2.HealthCheckResponse.SERVING)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signum, stop.set)
    await stop.wait()
    await server.stop(settings.grace_seconds)
    pool.shutdown(wait=False, cancel_futures=True)


def main(argv: list[str] | None = None) -> int:
    """`serve --listen ADDR --connections FILE`, like the real entry point."""
    import argparse

    parser = argparse.ArgumentParser()
    parser.add_argument("command")
    parser.add_argument("--listen")
    parser.add_argument("--connections", dest="connections_path")
    args = parser.parse_args(argv)
    settings = ServiceSettings.from_env(listen=args.listen, connections_path=args.connections_path)
    asyncio.run(serve(settings))
    return 0
