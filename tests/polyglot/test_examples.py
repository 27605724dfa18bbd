"""The Go and TypeScript example orchestrators run whole journeys against the real service and emulator.

The service is started as a process through its stable interface (`python -m otp_step_service serve`), once
for this module; the examples are built with their own toolchains (go build, tsc) and run as an orchestrator
would run them, configured by environment variables only.
"""

from __future__ import annotations

import http.server
import json
import os
import re
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import Emulator, start_service_process

from .toolchain import ROOT, require_binary, require_path, run

INSTALL_GO = "install Go 1.26+ (apt-get install golang, or https://go.dev/dl) and run `make polyglot`"
INSTALL_NODE = "install Node.js 20+ with npm (apt-get install nodejs npm) and run `make polyglot`"
INSTALL_JAVA = (
    "install a JDK 17+ and Maven 3.8+ (apt-get install openjdk-17-jdk-headless maven) and run `make polyglot`"
)


@dataclass(frozen=True)
class RunningService:
    """The service process of this module, and what an orchestrator needs to reach it."""

    address: str
    outbox_url: str
    log: Path

    def step_log_lines(self, journey_run_id: str) -> list[dict[str, object]]:
        """The service's `step.completed` records of one journey run."""
        records = []
        for line in self.log.read_text().splitlines():
            if not line.startswith("{"):
                continue
            record = json.loads(line)
            if record.get("message") == "step.completed" and record.get("journey_run_id") == journey_run_id:
                records.append(record)
        return records


class _Sink(http.server.BaseHTTPRequestHandler):
    """Accepts OTLP/HTTP exports and drops them."""

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", 0)))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def otlp_sink() -> Iterator[str]:
    """An OTLP/HTTP endpoint that accepts spans, so the service's exporter neither retries nor delays exit."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="module")
def step_service(
    emulator: Emulator, connections_file: Path, otlp_sink: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningService]:
    """`otp_step_service serve` on a free loopback port, with tracing on so the step log carries trace ids:
    the log line's trace_id is what proves the examples' traceparent reached the service."""
    log = tmp_path_factory.mktemp("polyglot") / "service.log"
    env = {
        "OTEL_TRACES_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_ENDPOINT": otlp_sink,
    }
    process, port = start_service_process(connections_file, log, env=env)
    try:
        yield RunningService(f"127.0.0.1:{port}", f"{emulator.endpoint_url}/_outbox", log)
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            assert process.wait(timeout=30) == 0, log.read_text()
        finally:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGKILL)


@dataclass(frozen=True)
class JourneyRun:
    """What one example printed, parsed."""

    output: str
    run_id: str
    trace_id: str

    def line(self, prefix: str) -> str:
        lines = [line for line in self.output.splitlines() if line.startswith(prefix)]
        assert lines, f"no line starting with {prefix!r} in:\n{self.output}"
        return lines[0]

    def variable(self, name: str) -> dict[str, object]:
        value = json.loads(self.line(f"variable {name}: ").split(": ", 1)[1])
        assert isinstance(value, dict)
        return value


def run_example(
    command: list[str], cwd: Path, service: RunningService, **extra: str
) -> subprocess.CompletedProcess[str]:
    """Run an example as an orchestrator would, configured by its environment variables only."""
    env = {
        **os.environ,
        "OTP_STEP_TARGET": service.address,
        "OTP_STEP_OUTBOX_URL": service.outbox_url,
        "OTP_STEP_IDENTIFIER": "ada@example.com",
        "OTP_STEP_CONNECTION": "demo",
        **extra,
    }
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)


def run_journey(command: list[str], cwd: Path, service: RunningService) -> JourneyRun:
    result = run_example(command, cwd, service)
    output = result.stdout + result.stderr
    assert result.returncode == 0, f"the journey failed (exit {result.returncode}):\n{output}"
    header = re.search(r"^journey: run=(\S+) trace_id=([0-9a-f]{32}) ", output, re.MULTILINE)
    assert header, output
    return JourneyRun(output, header.group(1), header.group(2))


def assert_whole_journey(journey: JourneyRun, service: RunningService) -> None:
    """Generate, a wrong code on the failure branch with two attempts left, the right code, one trace."""
    assert journey.line("generate: ").startswith("generate: success medium=DELIVERY_MEDIUM_EMAIL")
    wrong = journey.line("validate: failure ")
    assert "code=FAILURE_CODE_INVALID_CODE" in wrong
    assert "category=ERROR_CATEGORY_FLOW_LOGIC" in wrong
    assert "retryable=false" in wrong
    assert "attempts_remaining=2" in wrong
    error = journey.variable("otp_error")
    assert error["code"] == "INVALID_CODE"
    assert error["attempts_remaining"] == 2
    assert "back to the code form (2 attempts left)" in journey.output
    success = journey.line("validate: success ")
    assert re.search(r"sub=[0-9a-f-]{36} username=ada email=ada@example.com", success), success
    result = journey.variable("otp_result")
    assert result["username"] == "ada"
    assert journey.output.rstrip().endswith("journey: completed")
    # One trace: every step the service ran for this journey continued the example's trace.
    deadline = time.monotonic() + 10
    while len(steps := service.step_log_lines(journey.run_id)) < 3 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [s["outcome"] for s in steps] == ["success", "failure", "success"], steps
    assert {s["trace_id"] for s in steps} == {journey.trace_id}, steps


@dataclass(frozen=True)
class Example:
    """A built example: the command that runs it, and its folder."""

    command: list[str]
    folder: Path


@pytest.fixture(scope="module")
def go_example(tmp_path_factory: pytest.TempPathFactory) -> Example:
    """examples/go, vetted and built with the Go toolchain."""
    go = require_binary("go", INSTALL_GO)
    folder = ROOT / "examples" / "go"
    run([go, "vet", "./..."], folder)
    binary = tmp_path_factory.mktemp("go-example") / "journey"
    run([go, "build", "-o", str(binary), "."], folder)
    return Example([str(binary)], folder)


@pytest.fixture(scope="module")
def ts_example() -> Example:
    """examples/ts, type-checked and compiled with its pinned tsc into examples/ts/dist."""
    node = require_binary("node", INSTALL_NODE)
    folder = ROOT / "examples" / "ts"
    require_path(folder / "node_modules" / ".package-lock.json", "run `make polyglot` (npm ci)")
    run([node, str(folder / "node_modules" / "typescript" / "bin" / "tsc"), "-p", "tsconfig.json"], folder)
    return Example([node, "dist/main.js"], folder)


@pytest.fixture(scope="module")
def java_example() -> Example:
    """examples/java, built by Maven (protoc and protoc-gen-grpc-java from Maven Central, pinned in its pom)."""
    mvn = require_binary("mvn", INSTALL_JAVA)
    java = require_binary("java", INSTALL_JAVA)
    folder = ROOT / "examples" / "java"
    run([mvn, "-B", "-q", "-Dstyle.color=never", "package"], folder, timeout=600)
    return Example([java, "-cp", "target/classes:target/lib/*", "example.Journey"], folder)


def test_the_go_orchestrator_runs_a_whole_journey(step_service: RunningService, go_example: Example) -> None:
    assert_whole_journey(run_journey(go_example.command, go_example.folder, step_service), step_service)


def test_the_typescript_orchestrator_runs_a_whole_journey(
    step_service: RunningService, ts_example: Example
) -> None:
    assert_whole_journey(run_journey(ts_example.command, ts_example.folder, step_service), step_service)


def test_the_java_orchestrator_runs_a_whole_journey(
    step_service: RunningService, java_example: Example
) -> None:
    assert_whole_journey(run_journey(java_example.command, java_example.folder, step_service), step_service)


@pytest.mark.parametrize("language", ["go", "ts", "java"])
def test_an_orchestrator_stops_with_the_status_when_a_step_cannot_run(
    step_service: RunningService, request: pytest.FixtureRequest, language: str
) -> None:
    """A connection the service does not know: NOT_FOUND, reported, exit 1, and no retry (not a deadline)."""
    example: Example = request.getfixturevalue(f"{language}_example")
    result = run_example(
        example.command, example.folder, step_service, OTP_STEP_CONNECTION="no-such-connection"
    )
    assert result.returncode == 1, result
    assert re.search(r"journey: FAILED: generate could not run: (NOT_FOUND|NotFound)", result.stderr), result
    assert "retrying" not in result.stdout
