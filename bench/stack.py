"""The processes a scenario needs: the service, the canned stand-in, the emulator, Jaeger — each its own process.

Everything listens on 127.0.0.1 on a free port. Each process logs to `<results>/logs/<name>.log`.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import grpc
from cognito_emulator.connections_file import write_connections_file, write_secret_file
from grpc_health.v1 import health_pb2, health_pb2_grpc

from bench.processes import ManagedProcess, free_port

REGION = "us-east-1"
ROOT = Path(__file__).resolve().parent.parent
# Dummy credentials and no shared config: nothing started here can ever reach real AWS.
SAFE_AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": REGION,
    "AWS_CONFIG_FILE": os.devnull,
    "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
    "AWS_EC2_METADATA_DISABLED": "true",
}
_OTEL_VARIABLES = (
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
)


def child_env(extra: Mapping[str, str] | None = None, root: Path | None = None) -> dict[str, str]:
    """The harness's environment, made safe (dummy AWS credentials, no tracing), plus `extra`; `root` is the
    checkout whose `bench` package the child imports (this one by default)."""
    env = {k: v for k, v in os.environ.items() if k not in _OTEL_VARIABLES}
    env.update(SAFE_AWS_ENV)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(root or ROOT), os.environ.get("PYTHONPATH", "")) if p)
    env.update(extra or {})
    return env


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1):  # noqa: S310 - loopback URL built here
            return True
    except OSError:
        return False


@dataclass(frozen=True, slots=True)
class CognitoApp:
    """An app client a connection points at."""

    endpoint_url: str
    user_pool_id: str
    client_id: str
    client_secret: str


def write_connections(
    folder: Path, name: str, app: CognitoApp, options: Mapping[str, Any] | None = None
) -> Path:
    """A connections file with one `[connections.<name>]` table (secret in its own 0600 file)."""
    secret = write_secret_file(folder / f"{name}.secret", app.client_secret)
    values: dict[str, Any] = {
        "region": REGION,
        "user_pool_id": app.user_pool_id,
        "client_id": app.client_id,
        "client_secret_file": str(secret),
        "endpoint_url": app.endpoint_url,
        "api": "public",
        **(options or {}),
    }
    return write_connections_file(folder / f"{name}.toml", {name: values})


@dataclass
class Standin:
    """The canned Cognito responder."""

    process: ManagedProcess
    url: str


def start_standin(
    logs: Path, name: str, delay_ms: float = 0.0, cpus: frozenset[int] | None = None
) -> Standin:
    """`python -m bench.cognito_standin` on a free port (on `cpus`, if given)."""
    port = free_port()
    command = [
        sys.executable,
        "-m",
        "bench.cognito_standin",
        "--port",
        str(port),
        "--delay-ms",
        str(delay_ms),
    ]
    process = ManagedProcess.start(name, command, logs / f"{name}.log", child_env(), cpus=cpus)
    url = f"http://127.0.0.1:{port}"
    process.wait_ready(lambda: _http_ok(f"{url}/_stats"), timeout=30)
    return Standin(process, url)


STANDIN_APP = CognitoApp("", "us-east-1_Bench0001", "benchstandinclient0000000001", "bench-standin-secret")


@dataclass
class ServiceProcess:
    """The StepExecutor service, run by `bench.counted_service` (the real entry point plus a counter)."""

    process: ManagedProcess
    address: str
    outcomes_path: Path
    log_level: str
    env: dict[str, str] = field(default_factory=dict)

    def outcomes(self) -> dict[str, int]:
        """Step outcomes counted by the service (available once it has stopped)."""
        try:
            return {k: int(v) for k, v in json.loads(self.outcomes_path.read_text()).items()}
        except (OSError, ValueError):
            return {}

    def span_counts(self) -> dict[str, Any]:
        """Spans the service exported and dropped, by reason (once it has stopped; empty if unknown)."""
        try:
            counts: dict[str, Any] = json.loads(self.outcomes_path.with_suffix(".spans.json").read_text())
        except (OSError, ValueError):
            return {}
        return counts


def _serving(address: str) -> bool:
    with grpc.insecure_channel(address) as channel:
        try:
            answer = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=1)
        except grpc.RpcError:
            return False
    return bool(answer.status == health_pb2.HealthCheckResponse.SERVING)


def start_service(
    logs: Path,
    name: str,
    connections: Path,
    log_level: str,
    extra_env: Mapping[str, str] | None = None,
    module: str = "bench.counted_service",
    python: str = sys.executable,
    cwd: Path | None = None,
    cpus: frozenset[int] | None = None,
) -> ServiceProcess:
    """The service on a free port, self-test off, logging at `log_level` to its log file. `module` runs another
    server the same way (the aio floor); `python` and `cwd` run another checkout's service (the sync one)."""
    address = f"127.0.0.1:{free_port()}"
    outcomes = logs / f"{name}.outcomes.json"
    outcomes.unlink(missing_ok=True)
    env = {
        "OTP_STEP_SELF_TEST": "off",
        "OTP_STEP_LOG_LEVEL": log_level,
        "OTP_STEP_GRACE_SECONDS": "2",
        "OTEL_SERVICE_NAME": f"otp-step-service-{name}",
        "BENCH_OUTCOMES_FILE": str(outcomes),
        **(extra_env or {}),
    }
    command = [
        python,
        "-m",
        module,
        "serve",
        "--listen",
        address,
        "--connections",
        str(connections),
    ]
    process = ManagedProcess.start(
        name, command, logs / f"{name}.log", child_env(env, root=cwd), cwd=cwd, cpus=cpus
    )
    process.wait_ready(lambda: _serving(address), timeout=60)
    return ServiceProcess(process, address, outcomes, log_level, env)


def start_emulator(logs: Path) -> tuple[ManagedProcess, str]:
    """`python -m cognito_emulator` on a free port (unseeded: the scenario creates its own pool)."""
    port = free_port()
    command = [sys.executable, "-m", "cognito_emulator", "--host", "127.0.0.1", "--port", str(port)]
    process = ManagedProcess.start("emulator", command, logs / "emulator.log", child_env())
    url = f"http://127.0.0.1:{port}"
    process.wait_ready(lambda: _http_ok(f"{url}/_health"), timeout=60)
    return process, url


JAEGER_CONFIG = Path(__file__).with_name("jaeger.yaml")


def tcp_open(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


@dataclass
class Jaeger:
    """A running Jaeger: its process and where it listens."""

    process: ManagedProcess
    otlp_grpc: str  # http://127.0.0.1:<port>, what OTEL_EXPORTER_OTLP_ENDPOINT takes for grpc
    otlp_http: str  # the same for http/protobuf (the exporter adds /v1/traces)
    ui: str


def start_jaeger(logs: Path, binary: str, cpus: frozenset[int] | None = None) -> Jaeger:
    """Jaeger v2 all-in-one, in-memory, on free ports (bench/jaeger.yaml), on `cpus` if given."""
    ports = {name: free_port() for name in ("OTLP_GRPC", "OTLP_HTTP", "QUERY_HTTP", "QUERY_GRPC", "HEALTH")}
    env = child_env({f"BENCH_JAEGER_{name}": str(port) for name, port in ports.items()})
    command = [binary, "--config", f"file:{JAEGER_CONFIG}"]
    process = ManagedProcess.start("jaeger", command, logs / "jaeger.log", env, cpus=cpus)
    ui = f"http://127.0.0.1:{ports['QUERY_HTTP']}"
    process.wait_ready(
        lambda: tcp_open(ports["OTLP_GRPC"]) and tcp_open(ports["OTLP_HTTP"]) and _http_ok(ui), timeout=60
    )
    return Jaeger(
        process, f"http://127.0.0.1:{ports['OTLP_GRPC']}", f"http://127.0.0.1:{ports['OTLP_HTTP']}", ui
    )
