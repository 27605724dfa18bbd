"""The Go, TypeScript and Java example orchestrators run whole journeys against the real service and emulator.

The service is started as a process through its stable interface (`python -m otp_step_service serve`), once
for the session (conftest.py); the examples are built with their own toolchains (go build, tsc, mvn) and run as
an orchestrator would run them, configured by environment variables only.
"""

from __future__ import annotations

import json
import re
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from .orchestrators import Example, RunningService, run_example


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
