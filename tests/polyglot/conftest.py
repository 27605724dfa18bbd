"""What the polyglot tests share, made once a session: the service process the examples call, and the
examples built with their own toolchains (go build, tsc, mvn package)."""

from __future__ import annotations

import http.server
import os
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from harness import Emulator, start_service_process

from .orchestrators import (
    INSTALL_GO,
    INSTALL_JAVA,
    INSTALL_NODE,
    MIN_CLIENT_PING_SECONDS,
    Example,
    RunningService,
)
from .toolchain import ROOT, require_binary, require_path, run


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


@pytest.fixture(scope="session")
def otlp_sink() -> Iterator[str]:
    """An OTLP/HTTP endpoint that accepts spans, so the service's exporter neither retries nor delays exit."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
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
        "OTP_STEP_MIN_CLIENT_PING_SECONDS": str(MIN_CLIENT_PING_SECONDS),
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


@pytest.fixture(scope="session")
def go_example(tmp_path_factory: pytest.TempPathFactory) -> Example:
    """examples/go, vetted and built with the Go toolchain."""
    go = require_binary("go", INSTALL_GO)
    folder = ROOT / "examples" / "go"
    run([go, "vet", "./..."], folder)
    binary = tmp_path_factory.mktemp("go-example") / "journey"
    run([go, "build", "-o", str(binary), "."], folder)
    return Example([str(binary)], folder)


@pytest.fixture(scope="session")
def ts_example() -> Example:
    """examples/ts, type-checked and compiled with its pinned tsc into examples/ts/dist."""
    node = require_binary("node", INSTALL_NODE)
    folder = ROOT / "examples" / "ts"
    require_path(folder / "node_modules" / ".package-lock.json", "run `make polyglot` (npm ci)")
    run([node, str(folder / "node_modules" / "typescript" / "bin" / "tsc"), "-p", "tsconfig.json"], folder)
    return Example([node, "dist/main.js"], folder)


@pytest.fixture(scope="session")
def java_example() -> Example:
    """examples/java, built by Maven (protoc and protoc-gen-grpc-java from Maven Central, pinned in its pom)."""
    mvn = require_binary("mvn", INSTALL_JAVA)
    java = require_binary("java", INSTALL_JAVA)
    folder = ROOT / "examples" / "java"
    run([mvn, "-B", "-q", "-Dstyle.color=never", "package"], folder, timeout=600)
    return Example([java, "-cp", "target/classes:target/lib/*", "example.Journey"], folder)
