"""The service as a process: JSON logs, one line per step, graceful SIGTERM — and no secret anywhere."""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
from harness import (
    Emulator,
    Journeys,
    RunningService,
    connections_subset,
    free_port,
    run_sample_journeys,
    start_service_process,
)
from otp_step_client import Step, StepExecutorClient
from otp_step_service.observability.step_log import JsonFormatter, configure_logging


@pytest.fixture
def captured_logs() -> Iterator[list[str]]:
    """Every log line the service's own logging set-up would write, at DEBUG."""
    lines: list[str] = []

    class Capture(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            lines.append(self.format(record))

    root = logging.getLogger()
    saved = (root.handlers[:], root.level)
    configure_logging("DEBUG")
    handler = Capture()
    handler.setFormatter(JsonFormatter())
    root.addHandler(handler)
    yield lines
    root.handlers[:], _ = saved
    root.setLevel(saved[1])


def test_no_code_session_token_or_secret_reaches_the_logs(
    journeys: Journeys, emulator: Emulator, service: RunningService, captured_logs: list[str]
) -> None:
    stored = len(service.store.sessions)
    secrets = run_sample_journeys(journeys, emulator)
    sessions = service.store.sessions[stored:]
    secrets += sessions
    assert len(sessions) >= 2
    text = "\n".join(captured_logs)
    assert "step.completed" in text
    for secret in secrets:
        assert secret not in text
    assert "ada@example.com" not in text  # identifiers are masked unless the connection reveals them


def test_the_service_process_logs_json_steps_and_stops_gracefully_on_sigterm(
    connections_file: Path, emulator: Emulator, tmp_path: Path
) -> None:
    log_file = tmp_path / "service.log"
    process, port = start_service_process(
        connections_file,
        log_file,
        {"OTP_STEP_LOG_LEVEL": "DEBUG", "OTP_STEP_SELF_TEST": "warn", "OTP_STEP_MAX_CONCURENT_STEPS": "5"},
    )
    try:
        with StepExecutorClient(f"127.0.0.1:{port}") as client:
            assert client.health() == "SERVING"
            secrets = run_sample_journeys(Journeys(client, emulator), emulator)
            client.generate_otp(Journeys(client, emulator).journey(), Step("demo", "x", channel="EMAIL"))
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the whole group, forked servers included
    lines = log_file.read_text().splitlines()
    records = [json.loads(line) for line in lines]  # every line is one JSON object
    steps = [r for r in records if r["message"] == "step.completed"]
    assert len(steps) >= 9
    assert {"journey_id", "journey_run_id", "step_id", "connection", "outcome", "duration_ms"} <= set(
        steps[0]
    )
    assert any(r.get("failure_code") == "INVALID_CODE" and r.get("attempts_remaining") == 2 for r in steps)
    assert any("self-test" in r["message"] or "user_auth_flow" in r["message"] for r in records)
    assert records[-1]["message"] == "stopped"
    # A mistyped setting is named, with the one it probably means, instead of silently falling back.
    assert any(
        "OTP_STEP_MAX_CONCURENT_STEPS" in r["message"] and "OTP_STEP_MAX_CONCURRENT_STEPS" in r["message"]
        for r in records
    )
    text = log_file.read_text()
    for secret in secrets:
        assert secret not in text


def test_a_broken_connections_file_stops_start_up_naming_the_field(tmp_path: Path) -> None:
    bad = tmp_path / "connections.toml"
    bad.write_text(
        '[connections.demo]\nregion = "mars"\nuser_pool_id = "x"\nclient_id = "abc"\nmax_attempts = 99\n'
    )
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "otp_step_service",
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--connections",
            str(bad),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "connections.demo.region" in result.stderr
    assert "connections.demo.max_attempts" in result.stderr
    assert "connections.demo.user_pool_id" in result.stderr


def test_several_processes_share_the_port_and_the_challenges(
    connections_file: Path, emulator: Emulator, redis_url: str, tmp_path: Path, keys_file: Path
) -> None:
    port, metrics_port = free_port(), _two_free_ports()
    log_file = tmp_path / "service.log"
    env = {
        "OTP_STEP_PROCESSES": "2",
        "OTP_STEP_CHALLENGE_STORE": redis_url,
        "OTP_STEP_CHALLENGE_KEYS_FILE": str(keys_file),
        "OTP_STEP_SELF_TEST": "off",
        # Each process serves its own metrics: this port and the next.
        "OTP_STEP_METRICS_LISTEN": f"127.0.0.1:{metrics_port}",
    }
    # Only the connection the journeys use: each process warms up every connection it has before serving.
    demo_only = connections_subset(connections_file, tmp_path / "connections.toml", ["demo"])
    process, _ = start_service_process(demo_only, log_file, env, listen=f"127.0.0.1:{port}", servers=2)
    try:
        # grpc shares one TCP connection between channels to the same target unless told otherwise.
        clients = [
            StepExecutorClient(
                "",
                channel=grpc.insecure_channel(f"127.0.0.1:{port}", [("grpc.use_local_subchannel_pool", 1)]),
            )
            for _ in range(16)
        ]
        try:
            for generate_with, validate_with in zip(clients, reversed(clients), strict=True):
                journeys = Journeys(generate_with, emulator)
                before = len(emulator.outbox("grace@example.com"))
                sent, journey = journeys.generate("grace@example.com")
                assert sent.WhichOneof("outcome") == "success"
                code = emulator.latest_code("grace@example.com", after=before)
                validated = Journeys(validate_with, emulator).validate(journey, "grace@example.com", code)
                assert validated.WhichOneof("outcome") == "success", validated
        finally:
            for client in clients:
                client.close()
        # Both processes' scrape endpoints answer, and together they count every step of the 16 journeys.
        steps_by_process = [_steps_total(metrics_port + index) for index in range(2)]
        assert sum(steps_by_process) == 32 and all(steps_by_process), steps_by_process
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)  # the whole group, forked servers included
    records = [json.loads(line) for line in log_file.read_text().splitlines()]
    serving = {r["pid"] for r in records if r["message"].startswith("serving StepExecutor")}
    steps = {r["pid"] for r in records if r["message"] == "step.completed"}
    assert len(serving) == 2
    assert steps == serving  # both processes ran steps (16 connections: all on one is a 1-in-32768 chance)


def _two_free_ports() -> int:
    """A port that is free, and the next one too."""
    for _ in range(50):
        port = free_port()
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port + 1))
            except OSError:
                continue
        return port
    raise AssertionError("no two consecutive free ports")


def _steps_total(port: int) -> float:
    """The sum of otp_steps_total over its series, scraped from one process's endpoint."""
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5).read().decode()
    return sum(
        float(line.rsplit(" ", 1)[1]) for line in text.splitlines() if line.startswith("otp_steps_total{")
    )


def test_several_processes_refuse_the_in_memory_store(connections_file: Path) -> None:
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "otp_step_service",
            "serve",
            "--listen",
            "127.0.0.1:50999",
            "--processes",
            "2",
            "--connections",
            str(connections_file),
        ],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert result.returncode == 2
    assert "OTP_STEP_CHALLENGE_STORE=redis://" in result.stderr
