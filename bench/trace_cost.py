"""What tracing costs a step, in one process: CPU time per GenerateOtp, untraced and traced in turns.

    python -m bench.trace_cost [--blocks 40] [--steps 200] [--variants sdk,service,...]

The real transport handler chain (the server span interceptor, the servicer, the message mapping), the real
StepRunner and AioCognitoGateway (its client span, retry and circuit code), the in-memory challenge store,
and a stub aiobotocore client answering InitiateAuth at once: the service's own code per step, without gRPC's
and botocore's. Steps run 50 at a time on one event loop, each in its own task, as grpc.aio runs calls.

Every variant is a tracer provider built up front; the process uses them in turns, `--steps` steps at a
time, `--blocks` times each (untraced included), so they share one heap, one set of warm caches and the same
moment's load on a shared machine: the ratios hold to a few percent where separate processes or runs moved
by tens. Each block ends with the provider's flush (inside the timing), so a variant's encoding and export
are counted in its own blocks. The figure is the process's CPU time (every thread) per step, the median of
the blocks. Variants:

- `sdk`: the SDK's defaults, BatchSpanProcessor and its OTLP/gRPC exporter (to Jaeger, started here);
- `service`, `service-http`: what the service configures from OTEL_* (telemetry.tracer_provider), OTLP/gRPC
  or OTLP/HTTP to the same Jaeger;
- `recorded`: the service's spans and span processor sending nowhere (recording and encoding, no network);
- `sdk-spans`: the same with the SDK's spans in place of the service's (step_tracer.py);
- `sdk-recorded`: the SDK recording spans into a processor that keeps nothing (the spans alone).
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, ClassVar

IN_FLIGHT = 50
VARIANTS = ("sdk", "sdk-spans", "recorded", "service", "service-http")


class _StubClient:
    """What the gateway needs of an aiobotocore client: InitiateAuth answered at once, as the stand-in does."""

    class meta:  # noqa: N801 - mirrors aiobotocore's attribute
        method_to_api_mapping: ClassVar[dict[str, str]] = {"initiate_auth": "InitiateAuth"}

    def __init__(self) -> None:
        self.serial = 0

    async def initiate_auth(self, **request: Any) -> dict[str, Any]:
        self.serial += 1
        return {
            "ChallengeName": "EMAIL_OTP",
            "Session": f"stub-session-{self.serial:012d}",
            "ChallengeParameters": {
                "CODE_DELIVERY_DELIVERY_MEDIUM": "EMAIL",
                "CODE_DELIVERY_DESTINATION": "a***@e***",
                "USERNAME": request["AuthParameters"]["USERNAME"],
            },
            "ResponseMetadata": {
                "RequestId": f"req-{self.serial}",
                "HTTPStatusCode": 200,
                "RetryAttempts": 0,
            },
        }


class _Context:
    """The part of grpc.aio's ServicerContext the handler chain reads."""

    def peer(self) -> str:
        return "ipv4:127.0.0.1:50123"

    def code(self) -> Any:
        return None

    def details(self) -> str:
        return ""

    def time_remaining(self) -> float:
        return 10.0

    def invocation_metadata(self) -> tuple[tuple[str, str], ...]:
        return (("user-agent", "grpc-go/1.70.0"),)


def _with_environment(variables: Mapping[str, str], build: Callable[[], Any]) -> Any:
    """`build()` with `variables` set (the SDK's exporters read OTEL_* when they are made), then restored."""
    saved = {name: os.environ.get(name) for name in variables}
    os.environ.update(variables)
    try:
        return build()
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def _provider(variant: str, jaeger: Mapping[str, str]) -> Any:
    from opentelemetry.sdk.trace import SpanProcessor, TracerProvider
    from otp_step_service.observability import span_export, telemetry
    from otp_step_service.observability.step_tracer import StepTracerProvider

    if variant.startswith("service"):
        http = variant == "service-http"
        otlp = {
            "OTEL_TRACES_EXPORTER": "otlp",
            "OTEL_EXPORTER_OTLP_ENDPOINT": jaeger["http" if http else "grpc"],
            "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf" if http else "grpc",
        }
        return _with_environment(otlp, telemetry.tracer_provider)
    if variant == "recorded":
        provider: Any = StepTracerProvider(resource=telemetry.tracing_resource())
    else:
        provider = TracerProvider(resource=telemetry.tracing_resource())
    if variant == "sdk":
        from opentelemetry.exporter.otlp.proto.grpc.trace_exporter import OTLPSpanExporter
        from opentelemetry.sdk.trace.export import BatchSpanProcessor

        exporter = OTLPSpanExporter(endpoint=jaeger["grpc"], insecure=True)
        provider.add_span_processor(BatchSpanProcessor(exporter))
    elif variant in ("recorded", "sdk-spans"):

        class Nowhere:
            def send(self, batch: span_export.EncodedBatch) -> bool:
                return True

            def shutdown(self) -> None:
                pass

        provider.add_span_processor(span_export.span_processor(Nowhere()))
    elif variant == "sdk-recorded":
        provider.add_span_processor(SpanProcessor())
    else:
        raise SystemExit(f"unknown variant {variant}")
    return provider


def _use(provider: Any) -> None:
    """Make `provider` the process's tracer provider. The API sets it once per process; a benchmark of
    several swaps its global (and the service's cached tracer) directly."""
    from opentelemetry import trace
    from otp_step_service.observability import telemetry

    trace._TRACER_PROVIDER = provider  # see the docstring
    telemetry._sdk_tracer = None


class Steps:
    """GenerateOtp through the service's handler chain, `count` at a time, 50 in flight."""

    def __init__(self) -> None:
        import grpc
        from otp_step_service.adapters.cognito import AioCognitoGateway, CognitoTarget
        from otp_step_service.adapters.memory_store import InMemoryChallengeStore
        from otp_step_service.app.execution import StepRunner
        from otp_step_service.config.connections import ConnectionConfig, policy_from_config
        from otp_step_service.observability.telemetry import CognitoCallSpan
        from otp_step_service.steps.ports import Connection
        from otp_step_service.transport.server import HEALTH_METHODS
        from otp_step_service.transport.server_spans import ServerSpans
        from otp_step_service.transport.servicer import StepExecutorServicer

        config = ConnectionConfig.model_validate(
            {"region": "us-east-1", "user_pool_id": "us-east-1_Bench0001", "client_id": "benchclient"}
        )
        target = CognitoTarget(
            "us-east-1", "us-east-1_Bench0001", "benchclient", "bench-secret", "http://127.0.0.1:9",
            False, 256, 1.0, 5.0, 0, config.channels,
        )  # fmt: skip
        gateway = AioCognitoGateway(target, spans=CognitoCallSpan)
        gateway._client = _StubClient()
        connection = Connection(policy_from_config("standin", config), gateway, None)  # type: ignore[arg-type]
        servicer = StepExecutorServicer(StepRunner({"standin": connection}, InMemoryChallengeStore()))
        self._untraced: Any = servicer.GenerateOtp
        details: Any = type("Details", (), {})()
        details.method = "/stepexecutor.v1.StepExecutor/GenerateOtp"
        details.invocation_metadata = _Context().invocation_metadata()
        handler: Any = grpc.unary_unary_rpc_method_handler(servicer.GenerateOtp)
        self._traced: Any = ServerSpans(HEALTH_METHODS).wrap(handler, details).unary_unary

    async def run(self, count: int, traced: bool) -> None:
        from stepexecutor.v1 import step_executor_pb2 as pb

        call = self._traced if traced else self._untraced

        async def one(number: int) -> None:
            request = pb.GenerateOtpRequest(
                journey=pb.JourneyContext(
                    journey_id="bench", journey_run_id=f"run-{time.monotonic_ns()}", step_id="send-code"
                ),
                step=pb.StepConfiguration(
                    connection="standin",
                    user_identifier=f"u{number}-{time.monotonic_ns() % 999_983}@example.com",
                    otp_channel=pb.OTP_CHANNEL_EMAIL,
                ),
            )
            response = await call(request, _Context())
            if not response.HasField("success"):
                raise SystemExit(f"step failed: {response}")

        for start in range(0, count, IN_FLIGHT):
            await asyncio.gather(*(one(n) for n in range(start, min(count, start + IN_FLIGHT))))


def measure(
    variants: list[str], blocks: int, steps: int, jaeger: Mapping[str, str]
) -> dict[str, list[float]]:
    """CPU µs per step of each block, by variant (`off` first), the variants taking turns."""
    from opentelemetry import trace

    providers: dict[str, Any] = {"off": trace.get_tracer_provider()}
    providers |= {variant: _provider(variant, jaeger) for variant in variants}
    runner = Steps()
    loop = asyncio.new_event_loop()
    for name, provider in providers.items():  # warm-up: first-call paths, each exporter's connection
        _use(provider)
        loop.run_until_complete(runner.run(300, name != "off"))
        if name != "off":
            provider.force_flush()
    gc.collect()
    gc.freeze()  # as the service does once it serves (app/cli.py)
    figures: dict[str, list[float]] = {name: [] for name in providers}
    order = list(providers)
    for block in range(blocks):
        for name in order if block % 2 == 0 else reversed(order):
            provider = providers[name]
            _use(provider)
            started = time.process_time()
            loop.run_until_complete(runner.run(steps, name != "off"))
            if name != "off":
                provider.force_flush()
            figures[name].append((time.process_time() - started) / steps * 1e6)
    for name, provider in providers.items():
        if name != "off":
            provider.shutdown()
    loop.close()
    return figures


def main(argv: list[str] | None = None) -> int:
    """Measure, then print µs of CPU per step and each variant's cost over untraced."""
    parser = argparse.ArgumentParser(prog="python -m bench.trace_cost", description=__doc__.split("\n")[0])
    parser.add_argument("--blocks", type=int, default=40, help="turns of each variant")
    parser.add_argument("--steps", type=int, default=200, help="steps per turn")
    parser.add_argument("--variants", default=",".join(VARIANTS))
    args = parser.parse_args(argv)
    import logging

    from bench.processes import stop_all
    from bench.stack import ROOT, start_jaeger

    logging.basicConfig(level=logging.WARNING)
    variants = [v for v in args.variants.split(",") if v]
    jaeger: dict[str, str] = {}
    try:
        if any(v == "sdk" or v.startswith("service") for v in variants):
            binary = shutil.which("jaeger", path=str(ROOT / ".bin")) or shutil.which("jaeger")
            if binary is None:
                raise SystemExit("bench.trace_cost: needs .bin/jaeger (make tools)")
            collector = start_jaeger(Path(tempfile.mkdtemp(prefix="trace-cost-")), binary)
            jaeger = {"grpc": collector.otlp_grpc, "http": collector.otlp_http}
        load = os.getloadavg()
        figures = measure(variants, args.blocks, args.steps, jaeger)
    finally:
        stop_all()
    base = statistics.median(figures["off"])
    print(
        f"{args.blocks} turns of {args.steps} steps per variant; load average {load[0]:.1f} at the start, "
        f"{os.getloadavg()[0]:.1f} at the end"
    )
    print(f"{'off':>13}: {base:7.1f} µs CPU per step")
    for variant in variants:
        median = statistics.median(figures[variant])
        print(
            f"{variant:>13}: {median:7.1f} µs CPU per step, +{median - base:6.1f} µs = x {median / base:.3f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
