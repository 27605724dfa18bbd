"""Scenario 2f, the floor for this stack: a bare grpc.aio GenerateOtp handler making the same InitiateAuth
(USER_AUTH, PREFERRED_CHALLENGE, SECRET_HASH) with aiobotocore, against the same stand-in, and nothing else.

No validation, no store, no spans, no logs, no admission: what grpc.aio + botocore cost on one core. The
service (scenario 2) is judged against it. Run by `python -m bench` like the service:

    BENCH_OUTCOMES_FILE=outcomes.json python -m bench.aio_floor serve --listen ADDR --connections FILE
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import sys
import tomllib
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
from aiobotocore.config import AioConfig
from aiobotocore.session import get_session
from botocore.exceptions import BotoCoreError, ClientError
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from otp_step_service.adapters.cognito import USER_AGENT, secret_hash
from stepexecutor.v1 import step_executor_pb2 as pb
from stepexecutor.v1 import step_executor_pb2_grpc as pb_grpc


class FloorExecutor(pb_grpc.StepExecutorServicer):
    """GenerateOtp = one InitiateAuth; everything else unimplemented."""

    def __init__(self, client: Any, connection: dict[str, Any], secret: str, counts: Counter[str]) -> None:
        self._client = client
        self._connection = connection
        self._secret = secret
        self._counts = counts

    async def GenerateOtp(self, request: pb.GenerateOtpRequest, context: Any) -> pb.GenerateOtpResponse:  # noqa: N802
        """One InitiateAuth, answered as a success."""
        username = request.step.user_identifier
        client_id = self._connection["client_id"]
        try:
            response = await self._client.initiate_auth(
                ClientId=client_id,
                AuthFlow="USER_AUTH",
                AuthParameters={
                    "USERNAME": username,
                    "PREFERRED_CHALLENGE": "EMAIL_OTP",
                    "SECRET_HASH": secret_hash(
                        username=username, client_id=client_id, client_secret=self._secret
                    ),
                },
            )
        except (ClientError, BotoCoreError) as exc:
            self._counts[f"cognito_otp_generate:failure:{type(exc).__name__}"] += 1
            return pb.GenerateOtpResponse(failure=pb.StepFailure(message=type(exc).__name__))
        self._counts["cognito_otp_generate:success"] += 1
        destination = response.get("ChallengeParameters", {}).get("CODE_DELIVERY_DESTINATION", "")
        return pb.GenerateOtpResponse(
            success=pb.GenerateOtpSuccess(
                delivery_medium=pb.DELIVERY_MEDIUM_EMAIL, masked_destination=destination
            )
        )


async def serve(listen: str, connections_path: Path) -> Counter[str]:
    """Serve until SIGTERM / SIGINT; the outcome counts."""
    tables = tomllib.loads(connections_path.read_text())["connections"]
    connection = next(iter(tables.values()))
    secret = Path(connection["client_secret_file"]).read_text().strip()
    counts: Counter[str] = Counter()
    config = AioConfig(
        region_name=connection["region"],
        max_pool_connections=256,
        retries={"mode": "standard", "total_max_attempts": 1},
        parameter_validation=False,
        user_agent=USER_AGENT,  # as the service configures its client: the floor is the same requests
    )
    async with get_session().create_client(
        "cognito-idp", endpoint_url=connection["endpoint_url"], config=config
    ) as client:
        server = grpc.aio.server()
        floor = FloorExecutor(client, connection, secret, counts)  # type: ignore[abstract]  # only GenerateOtp
        pb_grpc.add_StepExecutorServicer_to_server(floor, server)
        checks = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checks, server)
        server.add_insecure_port(listen)
        await server.start()
        await checks.set("", health_pb2.HealthCheckResponse.SERVING)
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for signum in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(signum, stop.set)
        await stop.wait()
        await server.stop(1)
    return counts


def main(argv: list[str] | None = None) -> int:
    """`serve --listen ADDR --connections FILE`, like the service's entry point."""
    parser = argparse.ArgumentParser(prog="python -m bench.aio_floor")
    parser.add_argument("command", choices=["serve"])
    parser.add_argument("--listen", required=True)
    parser.add_argument("--connections", type=Path, required=True)
    args = parser.parse_args(argv)
    counts = asyncio.run(serve(args.listen, args.connections))
    target = os.environ.get("BENCH_OUTCOMES_FILE")
    if target:
        Path(target).write_text(json.dumps(dict(counts), sort_keys=True))
    return 0


if __name__ == "__main__":
    sys.exit(main())
