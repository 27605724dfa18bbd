"""The example orchestrators as the polyglot tests run them: the service they call, the built examples, and
running one as an orchestrator would (configured by environment variables only)."""

from __future__ import annotations

import json
import os
import subprocess
from dataclasses import dataclass
from pathlib import Path

INSTALL_GO = "install Go 1.26+ (apt-get install golang, or https://go.dev/dl) and run `make polyglot`"
INSTALL_NODE = "install Node.js 20+ with npm (apt-get install nodejs npm) and run `make polyglot`"
INSTALL_JAVA = (
    "install a JDK 17+ and Maven 3.8+ (apt-get install openjdk-17-jdk-headless maven) and run `make polyglot`"
)

# How often the service lets a client ping (OTP_STEP_MIN_CLIENT_PING_SECONDS) in these tests: low enough that a
# client pinging every 10 s (the least grpc-go and grpc-java send) is seen pinging twice in 20 s, not the
# minutes the shipped pair (pings every 30 s, one per 20 s allowed) would take. No other test minds it.
MIN_CLIENT_PING_SECONDS = 5


@dataclass(frozen=True)
class RunningService:
    """The service process the examples call, and what an orchestrator needs to reach it."""

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


@dataclass(frozen=True)
class Example:
    """A built example: the command that runs it, and its folder."""

    command: list[str]
    folder: Path


def example_env(service: RunningService, **extra: str) -> dict[str, str]:
    """An example's environment: what an orchestrator is configured by (its flags have defaults from it)."""
    return {
        **os.environ,
        "OTP_STEP_TARGET": service.address,
        "OTP_STEP_OUTBOX_URL": service.outbox_url,
        "OTP_STEP_IDENTIFIER": "ada@example.com",
        "OTP_STEP_CONNECTION": "demo",
        **extra,
    }


def run_example(
    command: list[str], cwd: Path, service: RunningService, **extra: str
) -> subprocess.CompletedProcess[str]:
    """Run an example as an orchestrator would, configured by its environment variables only."""
    env = example_env(service, **extra)
    return subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=120, check=False)
