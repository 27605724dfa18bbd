"""The conformance tool end to end: against its own emulator, and against an emulator treated as a real pool."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cognito_emulator import EmulatorServer, EmulatorSettings, SeedResult, seed_demo
from cognito_emulator.conformance import (
    RULES,
    ConformanceOptions,
    ConformanceReport,
    MailboxCodeSource,
    ReportLeakError,
    RuleResult,
    SuiteLimits,
    Verdict,
    run_conformance,
)
from cognito_emulator.conformance.suite import Redactor
from cognito_emulator.seed import cognito_client

LATEST_CODE_COMMAND = Path(__file__).with_name("latest_outbox_code.py")
NAME_PREFIX = "otp-conformance"


def run_tool(*args: str, out: Path) -> tuple[int, dict[str, Any], str]:
    """`python -m cognito_emulator.conformance ... --out out`: exit status, report.json, report.md."""
    finished = subprocess.run(
        [sys.executable, "-m", "cognito_emulator.conformance", "--out", str(out), *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert finished.returncode in (0, 1), finished.stderr
    markdown = (out / "report.md").read_text()
    assert finished.stdout == markdown  # the tool prints the Markdown report
    return finished.returncode, json.loads((out / "report.json").read_text()), markdown


def by_id(report: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The report's rules by id."""
    return {rule["id"]: rule for rule in report["rules"]}


def assert_no_secret_shapes(text: str) -> None:
    """No JWT and no 128-character session in a report (the tool's own check covers the exact values)."""
    assert "eyJ" not in text
    assert not any(len(word) >= 100 for word in text.replace("|", " ").split())


@pytest.fixture
def capped_emulator() -> Iterator[tuple[EmulatorServer, SeedResult]]:
    """An emulator whose sessions die on the first wrong code, with the demo pool: "a real pool" that differs."""
    with EmulatorServer(host="127.0.0.1", port=0, settings=EmulatorSettings(attempt_cap=1)) as server:
        yield server, seed_demo(server.endpoint_url)


def test_the_suite_passes_against_the_emulator_and_reports_every_rule(tmp_path: Path) -> None:
    status, report, markdown = run_tool(out=tmp_path)

    assert status == 0
    assert report["summary"] == {"passed": len(RULES), "failed": 0, "not checked": 0}
    assert [rule["id"] for rule in report["rules"]] == [rule.id for rule in RULES]
    assert max(report["codes_per_user"].values()) <= 3
    assert report["calls"] <= SuiteLimits().max_calls
    rules = by_id(report)
    assert rules["attempt_cap.per_session"]["emulator_setting"] == "attempt_cap=3"
    assert rules["attempt_cap.per_session"]["connection_setting"] == "max_attempts = 3"
    assert rules["single_factor.auto_select"]["emulator_setting"] == "auto_select_single_factor=false"
    assert (
        rules["unknown_user.unset_setting"]["emulator_setting"]
        == "default_prevent_user_existence_errors=LEGACY"
    )
    assert all(rule["observed"] for rule in report["rules"])
    assert "| Rule | Mark | Result | Observed | Emulator knob | Connection setting |" in markdown
    assert markdown.count("| [inferred] |") == sum(1 for rule in RULES if rule.mark == "inferred")
    assert_no_secret_shapes(markdown + json.dumps(report))


def test_the_emulators_knobs_are_read_back_from_what_it_does(tmp_path: Path) -> None:
    status, report, _ = run_tool(
        "--attempt-cap",
        "2",
        "--auto-select-single-factor",
        "--default-prevent-user-existence-errors",
        "ENABLED",
        out=tmp_path,
    )

    assert status == 0, report["rules"]
    rules = by_id(report)
    assert rules["attempt_cap.per_session"]["connection_setting"] == "max_attempts = 2"
    assert rules["single_factor.auto_select"]["emulator_setting"] == "auto_select_single_factor=true"
    assert (
        rules["unknown_user.unset_setting"]["emulator_setting"]
        == "default_prevent_user_existence_errors=ENABLED"
    )


def test_a_named_pool_with_a_code_command_shows_which_settings_fit_it(
    capped_emulator: tuple[EmulatorServer, SeedResult], tmp_path: Path
) -> None:
    server, seed = capped_emulator
    secret_file = tmp_path / "client.secret"
    secret_file.write_text(seed.client_secret)

    # The "real pool" mode: credentials from boto3's chain (the suite's dummies), AWS_REGION, a named pool.
    status, report, markdown = run_tool(
        "--region",
        seed.region,
        "--endpoint-url",
        server.endpoint_url,
        "--user-pool-id",
        seed.user_pool_id,
        "--client-id",
        seed.client_id,
        "--client-secret-file",
        str(secret_file),
        "--code-command",
        f"{sys.executable} {LATEST_CODE_COMMAND} {server.endpoint_url}",
        out=tmp_path / "report",
    )

    rules = by_id(report)
    assert status == 1  # compared with the emulator's defaults, this pool differs
    assert report["target"]["mode"] == "named"
    assert report["target"]["codes from"] == f"command {Path(sys.executable).name}"
    failed = {rule_id for rule_id, rule in rules.items() if rule["verdict"] == "failed"}
    assert failed == {"wrong_code.session_survives", "attempt_cap.per_session"}
    assert rules["wrong_code.session_survives"]["emulator_setting"] == "attempt_cap=1"
    assert rules["wrong_code.session_survives"]["connection_setting"] == "max_attempts = 1"
    assert rules["attempt_cap.per_session"]["connection_setting"] == "max_attempts = 1"
    assert "NotAuthorizedException" in " ".join(rules["wrong_code.session_survives"]["observed"])
    # Not checkable here, and saying why: no phone, no emulator control, no message text.
    assert rules["session.expires"]["verdict"] == "not checked"
    assert "--check-expiry" in rules["session.expires"]["reason"]
    assert rules["sms_otp.preferred_sends_code"]["verdict"] == "not checked"
    assert rules["message_template.used"]["verdict"] == "not checked"
    assert all(
        rule["verdict"] == "passed"
        for rule in report["rules"]
        if rule["mark"] != "inferred"
        and rule["id"] not in {"session.expires", "sms_otp.preferred_sends_code"}
    )
    assert seed.client_secret not in markdown + json.dumps(report)
    assert_no_secret_shapes(markdown)
    # Everything it added to the named pool is gone; the pool and its client are untouched.
    admin = cognito_client(server.endpoint_url, seed.region)
    users = admin.list_users(UserPoolId=seed.user_pool_id)["Users"]
    clients = admin.list_user_pool_clients(UserPoolId=seed.user_pool_id, MaxResults=60)["UserPoolClients"]
    assert not [u for u in users if u["Username"].startswith(NAME_PREFIX)]
    assert [c["ClientId"] for c in clients] == [seed.client_id]


def test_a_throw_away_pool_with_a_mailbox_url_is_deleted_afterwards() -> None:
    settings = EmulatorSettings(auto_select_single_factor=True)
    with EmulatorServer(host="127.0.0.1", port=0, settings=settings) as server:
        outcome = run_conformance(
            ConformanceOptions(
                mode="create",
                region="us-east-1",
                endpoint_url=server.endpoint_url,
                email="mailbox+{role}@example.com",
                code_source=MailboxCodeSource(f"{server.endpoint_url}/_outbox?destination={{destination}}"),
            )
        )
        pools = cognito_client(server.endpoint_url).list_user_pools(MaxResults=60)["UserPools"]

    rules = {result.rule.id: result for result in outcome.report.results}
    assert [r.rule.id for r in outcome.report.failed] == ["single_factor.auto_select"]
    assert rules["single_factor.auto_select"].emulator_setting == "auto_select_single_factor=true"
    assert rules["email_otp.preferred_sends_code"].verdict is Verdict.PASSED
    assert "m***@e***" in " ".join(rules["email_otp.preferred_sends_code"].observed)
    assert outcome.report.target["codes from"] == "mailbox http://127.0.0.1"
    assert outcome.report.left_behind == []
    assert not [p for p in pools if p["Name"].startswith(NAME_PREFIX)]


def test_a_run_out_of_calls_reports_the_rest_as_not_checked_and_still_cleans_up() -> None:
    with EmulatorServer(host="127.0.0.1", port=0) as server:
        outcome = run_conformance(
            ConformanceOptions(
                mode="create",
                region="us-east-1",
                endpoint_url=server.endpoint_url,
                code_source=MailboxCodeSource(f"{server.endpoint_url}/_outbox?destination={{destination}}"),
                limits=SuiteLimits(max_calls=30),
            )
        )
        pools = cognito_client(server.endpoint_url).list_user_pools(MaxResults=60)["UserPools"]

    verdicts = {result.verdict for result in outcome.report.results}
    assert Verdict.NOT_CHECKED in verdicts
    assert not outcome.report.failed
    assert any("call budget of 30 used" in r.reason for r in outcome.report.results)
    assert outcome.report.calls > 30  # clean-up ran beyond the budget
    assert not [p for p in pools if p["Name"].startswith(NAME_PREFIX)]


def test_a_real_pool_run_without_region_or_code_source_stops_before_any_call(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AWS_REGION", raising=False)
    monkeypatch.delenv("AWS_DEFAULT_REGION", raising=False)
    finished = subprocess.run(
        [
            sys.executable,
            "-m",
            "cognito_emulator.conformance",
            "--user-pool-id",
            "us-east-1_x",
            "--client-id",
            "c",
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert finished.returncode == 2
    assert "AWS_REGION" in finished.stderr
    monkeypatch.setenv("AWS_REGION", "us-east-1")
    finished = subprocess.run(
        [sys.executable, "-m", "cognito_emulator.conformance", "--mode", "create"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
    )
    assert finished.returncode == 2
    assert "--code-command or --mailbox-url" in finished.stderr


def test_a_report_holding_a_code_is_refused(tmp_path: Path) -> None:
    redactor = Redactor()
    redactor.remember("40917355")
    report = ConformanceReport(
        target={"mode": "emulator"},
        results=[RuleResult(RULES[0], Verdict.PASSED, ["the code was 40917355"])],
        calls=1,
        seconds=0.1,
        codes_per_user={},
    )
    with pytest.raises(ReportLeakError):
        report.write(tmp_path, redactor)
    assert not (tmp_path / "report.md").exists()
