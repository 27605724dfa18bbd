"""The distributions ship: each wheel builds, the service's installs into a clean environment outside the
source tree with no test tooling, and serves a real journey step against the emulator from there."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import time
import zipfile
from pathlib import Path

import pytest
from harness import Emulator, Journeys
from otp_step_client import StepExecutorClient

ROOT = Path(__file__).resolve().parent.parent
UV = ROOT / ".bin" / "uv"


def _requirements(wheel: Path) -> list[str]:
    with zipfile.ZipFile(wheel) as archive:
        metadata = next(n for n in archive.namelist() if n.endswith(".dist-info/METADATA"))
        text = archive.read(metadata).decode()
    return [line.split(":", 1)[1].strip() for line in text.splitlines() if line.startswith("Requires-Dist:")]


@pytest.fixture(scope="module")
def wheels(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Every workspace distribution built as a wheel (uv build, the uv_build backend)."""
    if not UV.exists():
        pytest.fail("uv is missing: `make venv` installs it into .bin/")
    out = tmp_path_factory.mktemp("dist")
    subprocess.run(
        [str(UV), "build", "--all-packages", "--wheel", "--out-dir", str(out), "-q"], cwd=ROOT, check=True
    )
    built = {re.sub(r"-\d.*$", "", p.name): p for p in out.glob("*.whl")}
    assert set(built) == {
        "stepexecutor_proto",
        "otp_step_client",
        "otp_step_service",
        "cognito_emulator",
        "otp_step_demo",
    }
    return built


def test_the_service_wheel_holds_every_layer_and_no_test_tooling(wheels: dict[str, Path]) -> None:
    with zipfile.ZipFile(wheels["otp_step_service"]) as archive:
        names = set(archive.namelist())
    for module in (
        "adapters/cognito.py",
        "steps/generate.py",
        "transport/server.py",
        "app/cli.py",
        "py.typed",
    ):
        assert f"otp_step_service/{module}" in names, module
    # The demo and its certificate authority are a development distribution of their own.
    assert not [n for n in names if re.search(r"demo|local_ca", n)], sorted(names)
    runtime = [r for r in _requirements(wheels["otp_step_service"]) if "extra ==" not in r]
    assert not [r for r in runtime if re.match(r"(moto|boto3|pytest|hypothesis|cognito-emulator)\b", r)], (
        runtime
    )


def test_the_client_needs_grpcio_and_the_contract_only(wheels: dict[str, Path]) -> None:
    names = {re.split(r"[<>=;\[ ]", r)[0] for r in _requirements(wheels["otp_step_client"])}
    assert names == {"stepexecutor-proto", "grpcio", "grpcio-status", "grpcio-health-checking"}
    with zipfile.ZipFile(wheels["stepexecutor_proto"]) as archive:
        assert "stepexecutor/py.typed" in archive.namelist()
        assert "stepexecutor/v1/step_executor_pb2.pyi" in archive.namelist()


def test_the_installed_service_serves_from_a_clean_environment(
    wheels: dict[str, Path], connections_file: Path, emulator: Emulator, tmp_path: Path
) -> None:
    constraints = tmp_path / "constraints.txt"
    subprocess.run(
        [
            str(UV),
            "export",
            "--frozen",
            "--no-hashes",
            "--no-emit-workspace",
            "--all-packages",
            "-q",
            "-o",
            str(constraints),
        ],
        cwd=ROOT,
        check=True,
    )
    venv = tmp_path / "venv"
    subprocess.run([str(UV), "venv", "-q", str(venv)], cwd=tmp_path, check=True)
    subprocess.run(
        [
            str(UV),
            "pip",
            "install",
            "-q",
            "--python",
            str(venv / "bin" / "python"),
            "-c",
            str(constraints),
            str(wheels["stepexecutor_proto"]),
            str(wheels["otp_step_service"]),
        ],
        cwd=tmp_path,
        check=True,
        timeout=300,
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    where = subprocess.run(
        [
            str(venv / "bin" / "python"),
            "-c",
            "import otp_step_service, sys; print(otp_step_service.__file__)",
        ],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert where.startswith(str(venv)), where  # the installed copy, not the source tree
    assert (
        subprocess.run(
            [str(venv / "bin" / "python"), "-c", "import moto"], cwd=tmp_path, env=env, capture_output=True
        ).returncode
        != 0
    )
    helped = subprocess.run(
        [str(venv / "bin" / "otp-step-service"), "--help"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
    )
    assert helped.returncode == 0 and "OTP_STEP_MAX_CONCURRENT_STEPS" in helped.stdout

    log = tmp_path / "service.log"
    with log.open("w") as sink:
        process = subprocess.Popen(
            [
                str(venv / "bin" / "otp-step-service"),
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--connections",
                str(connections_file),
            ],
            cwd=tmp_path,
            env={**env, "OTP_STEP_SELF_TEST": "warn"},
            stderr=sink,
        )
    try:
        deadline = time.monotonic() + 30
        while not (ports := re.findall(r"\(port (\d+);", log.read_text())):
            assert process.poll() is None and time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        with StepExecutorClient(f"127.0.0.1:{ports[0]}") as client:
            assert client.health() == "SERVING"
            sent, _ = Journeys(client, emulator).generate("ada@example.com")
            assert sent.WhichOneof("outcome") == "success", sent
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=15) == 0
    finally:
        if process.poll() is None:
            process.kill()
    shutil.rmtree(venv, ignore_errors=True)
