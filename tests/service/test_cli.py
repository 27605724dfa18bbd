"""The `otp-step` CLI: a whole journey from a shell, with the emulator's outbox in between."""

from __future__ import annotations

import json

import pytest
from harness import Emulator, RunningService
from otp_step_client.cli import main


def test_a_whole_journey_runs_from_the_command_line(
    service: RunningService, emulator: Emulator, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"127.0.0.1:{service.port}"
    assert main(["--target", target, "health"]) == 0
    assert capsys.readouterr().out.strip() == "SERVING"
    before = len(emulator.outbox("grace@example.com"))
    assert (
        main(
            [
                "--target",
                target,
                "generate",
                "--identifier",
                "grace@example.com",
                "--channel",
                "email",
                "--run",
                "cli-1",
            ]
        )
        == 0
    )
    sent = json.loads(capsys.readouterr().out)
    assert sent["success"]["deliveryMedium"] == "DELIVERY_MEDIUM_EMAIL"
    code = emulator.latest_code("grace@example.com", after=before)
    args = ["--target", target, "validate", "--identifier", "grace@example.com", "--run", "cli-1"]
    assert main([*args, "--code", "00000000" if code != "00000000" else "11111111"]) == 1
    assert json.loads(capsys.readouterr().out)["failure"]["attemptsRemaining"] == 2
    assert main([*args, "--code", code]) == 0
    assert json.loads(capsys.readouterr().out)["success"]["username"] == "grace"


def test_the_cli_reports_calls_that_cannot_run(
    service: RunningService, capsys: pytest.CaptureFixture[str]
) -> None:
    target = f"127.0.0.1:{service.port}"
    assert (
        main(
            [
                "--target",
                target,
                "generate",
                "--connection",
                "nope",
                "--identifier",
                "a@b.co",
                "--channel",
                "sms",
            ]
        )
        == 2
    )
    assert "NOT_FOUND" in capsys.readouterr().err
    assert main(["--target", target, "check-connection", "demo"]) == 0
