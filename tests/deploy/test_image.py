"""The image as a platform runs it: an arbitrary UID in group 0, a read-only root, no capabilities, secrets
mounted read-only; journeys in plaintext, TLS and mTLS; its HEALTHCHECK; and `podman stop` draining."""

from __future__ import annotations

import json
import re
import threading
import time
from pathlib import Path

import pytest
from harness import Emulator, Journeys, free_port, http_json
from otp_step_client import Credentials, StepExecutorClient, StepExecutorError
from otp_step_demo.local_ca import LocalCa
from otp_step_service.app.health_probe import ProbeTls, check
from podman import IMAGE, ROOT, VERSION, journey, podman, require_image, run_container, share, wait_serving


def _service_env(mounted: Path, port: int, health_port: int, **extra: str) -> dict[str, str]:
    return {
        "OTP_STEP_LISTEN": f"127.0.0.1:{port}",
        "OTP_STEP_HEALTH_LISTEN": f"127.0.0.1:{health_port}",
        "OTP_STEP_CONNECTIONS": str(mounted / "connections.toml"),
        "OTP_STEP_SELF_TEST": "off",
        **extra,
    }


def test_the_image_is_labelled_non_root_and_stops_on_sigterm() -> None:
    require_image()
    image = json.loads(podman("image", "inspect", IMAGE).stdout)[0]
    config = image["Config"]
    assert re.fullmatch(r"\d+:0", config["User"]), config["User"]
    assert config["StopSignal"] == "SIGTERM"
    assert config["Entrypoint"] == ["otp-step-service"]  # exec form: the service is PID 1
    # Kept only by the docker format (`podman build --format docker`); the OCI format has no HEALTHCHECK.
    healthcheck = json.loads(podman("image", "inspect", "--format", "{{json .HealthCheck}}", IMAGE).stdout)
    assert healthcheck["Test"] == ["CMD", "otp-step-service", "health"]
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == VERSION
    assert labels["org.opencontainers.image.licenses"] == "Apache-2.0"
    assert labels["org.opencontainers.image.revision"] not in ("", "unknown")
    assert "org.opencontainers.image.source" in labels
    size = int(podman("image", "inspect", "--format", "{{.Size}}", IMAGE).stdout)
    assert size <= 200e6, f"{size / 1e6:.0f} MB"


def test_the_runtime_holds_the_service_and_no_build_or_test_tooling() -> None:
    require_image()
    probe = (
        "import importlib.util as u, json, shutil; "
        "print(json.dumps({m: u.find_spec(m) is not None for m in "
        "('otp_step_service','grpc_health','moto','pytest','grpc_tools','pip','uv','otp_step_demo')} "
        "| {t: shutil.which(t) is not None for t in ('gcc','cc','pip','uv','apt-get')}))"
    )
    found = json.loads(
        podman(
            "run", "--rm", "--no-healthcheck", "--entrypoint", "/app/.venv/bin/python", IMAGE, "-c", probe
        ).stdout
    )
    assert found.pop("otp_step_service") and found.pop("grpc_health")
    assert not any(found.values()), found
    sbom = json.loads((ROOT / ".cache/image/sbom" / f"otp-step-service-{VERSION}.cdx.json").read_text())
    names = {c["name"] for c in sbom["components"]}
    assert {"grpcio", "aiobotocore", "redis"} <= names and not {"moto", "pytest"} & names


def test_the_containerfile_pins_the_makefiles_uv() -> None:
    pinned = re.search(r"^UV_VERSION\s*:=\s*(\S+)", (ROOT / "Makefile").read_text(), re.M)
    assert pinned, "UV_VERSION is not in the Makefile"
    assert f"ARG UV_IMAGE=ghcr.io/astral-sh/uv:{pinned.group(1)}\n" in (ROOT / "Containerfile").read_text()


def test_a_journey_runs_as_any_uid_on_a_read_only_root_and_the_healthcheck_passes(
    emulator: Emulator, mounted: Path
) -> None:
    port, health_port = free_port(), free_port()
    with run_container(_service_env(mounted, port, health_port), [mounted]) as container:
        wait_serving(f"127.0.0.1:{health_port}", container)
        journey(f"127.0.0.1:{port}", emulator)
        healthcheck = podman("healthcheck", "run", container.name, check=False)
        assert healthcheck.returncode == 0, healthcheck.stdout + healthcheck.stderr + container.logs()
        written = podman("exec", container.name, "/usr/bin/python3", "-c", "open('/app/x', 'w')", check=False)
        assert written.returncode != 0 and "Read-only file system" in written.stderr, written.stderr
        assert podman("exec", container.name, "/usr/bin/id", "-u").stdout.strip() == "12345"


def test_the_health_command_fails_when_nothing_serves() -> None:
    require_image()
    port = free_port()
    result = podman(
        "run", "--rm", "--no-healthcheck", "--network", "host", "--user", "12345:0", "--read-only",
        IMAGE, "health", "--target", f"127.0.0.1:{port}", "--timeout", "1", check=False,
    )  # fmt: skip
    assert result.returncode == 1 and "UNAVAILABLE" in result.stdout, result.stdout + result.stderr


@pytest.fixture(scope="module")
def certificates(mounted: Path) -> dict[str, Path]:
    """A local CA, a loopback server certificate and a client certificate, as files the container reads."""
    ca = LocalCa()
    (mounted / "ca.crt").write_bytes(ca.pem)
    server_crt, server_key = ca.server().write(mounted, "server")
    client_crt, client_key = ca.issue("orchestrator", client=True).write(mounted, "client")
    # With mTLS callers authenticate, and each must be named: the orchestrator by its certificate.
    (mounted / "connections-mtls.toml").write_text(
        (mounted / "connections.toml").read_text()
        + '\n[callers.orchestrator]\ncertificate_identities = ["orchestrator"]\nconnections = ["*"]\n'
    )
    share(mounted)
    return {
        "ca": mounted / "ca.crt",
        "server_crt": server_crt,
        "server_key": server_key,
        "client_crt": client_crt,
        "client_key": client_key,
    }


def test_tls_from_mounted_certificates(
    emulator: Emulator, mounted: Path, certificates: dict[str, Path]
) -> None:
    port, health_port = free_port(), free_port()
    env = _service_env(
        mounted,
        port,
        health_port,
        OTP_STEP_TLS_CERT=str(certificates["server_crt"]),
        OTP_STEP_TLS_KEY=str(certificates["server_key"]),
    )
    ca = certificates["ca"].read_bytes()
    with run_container(env, [mounted]) as container:
        wait_serving(f"127.0.0.1:{health_port}", container)
        journey(f"127.0.0.1:{port}", emulator, credentials=Credentials(root_certificates=ca))
        # The gRPC port speaks TLS only; the health-only port answers in plaintext, and the health command
        # reaches the TLS port too when given the CA.
        assert check(f"127.0.0.1:{port}", timeout=2) == "UNAVAILABLE"
        assert check(f"127.0.0.1:{port}", tls=ProbeTls(certificates["ca"]), timeout=5) == "SERVING"
        assert podman("healthcheck", "run", container.name, check=False).returncode == 0


def test_mtls_admits_a_client_certificate_and_refuses_a_caller_without_one(
    emulator: Emulator, mounted: Path, certificates: dict[str, Path]
) -> None:
    port, health_port = free_port(), free_port()
    env = _service_env(
        mounted,
        port,
        health_port,
        OTP_STEP_TLS_CERT=str(certificates["server_crt"]),
        OTP_STEP_TLS_KEY=str(certificates["server_key"]),
        OTP_STEP_TLS_CLIENT_CA=str(certificates["ca"]),
        OTP_STEP_CONNECTIONS=str(mounted / "connections-mtls.toml"),
    )
    ca = certificates["ca"].read_bytes()
    with run_container(env, [mounted]) as container:
        wait_serving(f"127.0.0.1:{health_port}", container)
        client = Credentials(
            root_certificates=ca,
            certificate_chain=certificates["client_crt"].read_bytes(),
            private_key=certificates["client_key"].read_bytes(),
        )
        journey(f"127.0.0.1:{port}", emulator, credentials=client)
        with pytest.raises(StepExecutorError):
            journey(f"127.0.0.1:{port}", emulator, credentials=Credentials(root_certificates=ca))
        probe = ProbeTls(certificates["ca"], certificates["client_crt"], certificates["client_key"])
        assert check(f"127.0.0.1:{port}", tls=probe, timeout=5) == "SERVING"
        assert check(f"127.0.0.1:{port}", tls=ProbeTls(certificates["ca"]), timeout=5) == "UNAVAILABLE"
        assert podman("healthcheck", "run", container.name, check=False).returncode == 0


def test_podman_stop_drains_the_step_in_flight_and_exits_0(emulator: Emulator, mounted: Path) -> None:
    port, health_port = free_port(), free_port()
    env = _service_env(mounted, port, health_port, OTP_STEP_GRACE_SECONDS="20")
    with run_container(env, [mounted]) as container:
        wait_serving(f"127.0.0.1:{health_port}", container)
        emulator.inject(operation="InitiateAuth", latency_ms=3000, count=1)
        outcome: list[object] = []

        def in_flight() -> None:
            try:
                with StepExecutorClient(f"127.0.0.1:{port}", timeout=30) as client:
                    response, _ = Journeys(client, emulator).generate("ada@example.com")
                    outcome.append(response.WhichOneof("outcome"))
            except Exception as exc:
                outcome.append(exc)

        caller = threading.Thread(target=in_flight)
        try:
            caller.start()
            # The fault is removed when its one call consumes it: from then on that call is in flight.
            deadline = time.monotonic() + 15
            while http_json("GET", f"{emulator.endpoint_url}/_faults")["faults"]:
                assert time.monotonic() < deadline, "the step never reached Cognito"
                time.sleep(0.02)
            stopped = podman("stop", "-t", "30", container.name, timeout=60)
            caller.join(30)
        finally:
            emulator.clear_faults()
        assert outcome == ["success"], outcome  # the Generate in flight when SIGTERM came finished
        assert stopped.returncode == 0
        assert container.state("ExitCode") == "0", container.logs()
        logs = container.logs()
        assert "SIGTERM" in logs and "stopped" in logs, logs
