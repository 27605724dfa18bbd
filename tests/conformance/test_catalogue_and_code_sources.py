"""The rule catalogue is complete and consistent; code sources read codes from what users' tools print."""

from __future__ import annotations

import sys
from collections import Counter

import pytest
from cognito_emulator import EmulatorServer, EmulatorSettings, seed_demo
from cognito_emulator.conformance import (
    RULES,
    CodeSourceError,
    CommandCodeSource,
    ConformanceOptions,
    Verdict,
    run_conformance,
)
from cognito_emulator.conformance.checks import CHECKS


def test_every_rule_is_decided_by_exactly_one_check() -> None:
    decided = Counter(rule_id for _, rule_ids in CHECKS for rule_id in rule_ids)
    assert set(decided) == {rule.id for rule in RULES}
    assert max(decided.values()) == 1


def test_inferred_rules_with_a_knob_name_a_real_emulator_setting() -> None:
    knobs = {rule.knob for rule in RULES if rule.knob}
    assert knobs == {"attempt_cap", "auto_select_single_factor", "default_prevent_user_existence_errors"}
    assert knobs <= set(EmulatorSettings().to_json())
    assert all(rule.mark == "inferred" for rule in RULES if rule.knob)


def test_a_code_command_may_print_the_whole_message() -> None:
    source = CommandCodeSource([sys.executable, "-c", "print('Your sign-in code is 40917355. Ref 2026')"])
    assert source.latest("ada@example.com", "EMAIL") == "40917355"
    assert CommandCodeSource([sys.executable, "-c", "pass"]).latest("ada@example.com", "EMAIL") is None


def test_a_code_command_gets_the_destination_and_medium() -> None:
    script = "import os; print('12345678' if os.environ['CONFORMANCE_MEDIUM'] == 'SMS' else '')"
    source = CommandCodeSource([sys.executable, "-c", script])
    assert source.latest("+15555550100", "SMS") == "12345678"
    assert source.latest("ada@example.com", "EMAIL") is None


def test_a_failing_code_command_is_an_error_that_hides_its_output() -> None:
    source = CommandCodeSource(
        [sys.executable, "-c", "import sys; print('password=hunter2', file=sys.stderr); sys.exit(3)"]
    )
    with pytest.raises(CodeSourceError) as raised:
        source.latest("ada@example.com", "EMAIL")
    assert "exited with 3" in str(raised.value)
    assert "hunter2" not in str(raised.value)


def test_when_the_code_source_fails_only_the_rules_needing_codes_go_unchecked() -> None:
    with EmulatorServer(host="127.0.0.1", port=0) as server:
        seed = seed_demo(server.endpoint_url)
        outcome = run_conformance(
            ConformanceOptions(
                mode="named",
                region=seed.region,
                endpoint_url=server.endpoint_url,
                user_pool_id=seed.user_pool_id,
                client_id=seed.client_id,
                client_secret=seed.client_secret,
                code_source=CommandCodeSource([sys.executable, "-c", "import sys; sys.exit(1)"]),
            )
        )

    results = {r.rule.id: r for r in outcome.report.results}
    assert not outcome.report.failed
    assert results["success.tokens"].verdict is Verdict.NOT_CHECKED
    assert results["success.tokens"].reason.startswith("code source failed: code command")
    assert results["unknown_user.legacy"].verdict is Verdict.PASSED
    # Decided before its check needed a code: kept.
    assert results["select_challenge.preferred_unavailable"].verdict is Verdict.PASSED
    assert results["attempt_cap.per_session"].verdict is Verdict.NOT_CHECKED
    assert results["disabled_user.refused"].verdict is Verdict.PASSED
