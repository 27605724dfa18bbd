"""Running the built image with podman, as the deploy tests need it (the repository's containers.conf)."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import pytest
from harness import Emulator, Journeys
from otp_step_client import StepExecutorClient
from otp_step_service.app.health_probe import ProbeTls, check

ROOT = Path(__file__).resolve().parents[2]
CONTAINERS_CONF = ROOT / "deploy" / "podman" / "containers.conf"
VERSION = re.search(
    r'^version = "(.+)"', (ROOT / "server/otp-step-service/pyproject.toml").read_text(), re.M
).group(1)  # type: ignore[union-attr]
IMAGE = f"localhost/otp-step-service:{VERSION}"
# What the service needs of AWS in a test: dummy credentials, never the machine's configuration.
AWS_ENV = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_CONFIG_FILE": "/dev/null",
    "AWS_SHARED_CREDENTIALS_FILE": "/dev/null",
}
# How every container of these tests runs: an unprivileged random UID in group 0, nothing writable.
HARDENED = [
    "--user",
    "12345:0",
    "--read-only",
    "--cap-drop",
    "ALL",
    "--security-opt",
    "no-new-privileges",
    "--network",
    "host",
]


def podman(*args: str, check: bool = True, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run podman with the repository's containers.conf."""
    binary = shutil.which("podman")
    if binary is None:
        pytest.fail("podman is missing: `make podman` installs it (apt-get install podman runc mmdebstrap)")
    return subprocess.run(
        [binary, *args],
        env={**os.environ, "CONTAINERS_CONF": str(CONTAINERS_CONF)},
        capture_output=True,
        text=True,
        check=check,
        timeout=timeout,
    )


def require_image() -> None:
    """Fail, naming the fix, when `make image` has not built the image."""
    if podman("image", "exists", IMAGE, check=False).returncode != 0:
        pytest.fail(f"{IMAGE} is missing: run `make image`")


@contextmanager
def shared_folder() -> Iterator[Path]:
    """A folder the container's UID can read (pytest's tmp folders are 0700): files in it are made
    readable by group 0, as Kubernetes mounts Secrets for a pod's fsGroup, and by no one else."""
    folder = Path(tempfile.mkdtemp(prefix="otp-step-deploy-"))
    folder.chmod(0o755)
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def share(folder: Path) -> None:
    """Make every file in `folder` root:root 0640 (readable by the container's group 0)."""
    for path in folder.rglob("*"):
        if path.is_file():
            path.chmod(0o640)


@dataclass
class Container:
    """A running container of the image."""

    name: str

    def logs(self) -> str:
        """Its output so far (the service logs to stderr)."""
        result = podman("logs", self.name, check=False)
        return result.stdout + result.stderr

    def state(self, field: str) -> str:
        """A field of `podman inspect`'s State ('Status', 'ExitCode', ...)."""
        return podman("inspect", "--format", "{{.State." + field + "}}", self.name).stdout.strip()


@contextmanager
def run_container(
    env: dict[str, str], mounts: Sequence[Path], args: Sequence[str] = ("serve",)
) -> Iterator[Container]:
    """The image, hardened, with `mounts` bind-mounted read-only at their own paths; removed afterwards."""
    require_image()
    name = f"otp-step-test-{uuid.uuid4().hex[:10]}"
    command = ["run", "-d", "--name", name, *HARDENED]
    for mount in mounts:
        command += ["-v", f"{mount}:{mount}:ro"]
    for key, value in {**AWS_ENV, **env}.items():
        command += ["-e", f"{key}={value}"]
    podman(*command, IMAGE, *args)
    container = Container(name)
    try:
        yield container
    finally:
        podman("rm", "-f", "-t", "0", name, check=False)


def wait_serving(
    target: str, container: Container | None = None, tls: ProbeTls | None = None, timeout: float = 60
) -> None:
    """Poll the health service until SERVING, failing early with the logs if the container exited."""
    deadline = time.monotonic() + timeout
    status = ""
    while time.monotonic() < deadline:
        status = check(target, tls=tls, timeout=1)
        if status == "SERVING":
            return
        if container is not None and container.state("Status") == "exited":
            raise AssertionError(f"the container exited: {container.logs()}")
        time.sleep(0.2)
    raise AssertionError(
        f"{target} not SERVING ({status}) within {timeout} s: {container.logs() if container else ''}"
    )


def journey(target: str, emulator: Emulator, **client: object) -> None:
    """Generate, read the code from the emulator's outbox, Validate: a whole journey, or an assertion."""
    with StepExecutorClient(target, timeout=15, **client) as connected:  # type: ignore[arg-type]
        journeys = Journeys(connected, emulator)
        before = len(emulator.outbox("ada@example.com"))
        generated, run = journeys.generate("ada@example.com")
        assert generated.WhichOneof("outcome") == "success", generated
        code = emulator.latest_code("ada@example.com", after=before)
        validated = journeys.validate(run, "ada@example.com", code)
        assert validated.WhichOneof("outcome") == "success", validated
        assert validated.success.username == "ada"
