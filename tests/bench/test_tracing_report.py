"""The tracing group's verdicts, from canned results: span drops, and what a refused call's span costs.

The harness's `bench` package is run in a child process from the repository root (here `bench` names this
test folder), as test_chart.py runs the chart.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]

JUDGE = """
import json, sys
from bench.ghz import LoadResult
from bench.report import judge
from bench.scenarios import Plan, ScenarioResult

def run(**extra):
    return LoadResult(100, 100, {}, 1.0, 100.0, 1.0, 2.0, 3.0, 0.1, {"service": 0.2}, extra)

def verdicts(dropped, refused_on_ms):

    on = ScenarioResult("t-tracing-on", "on", "req/s", [run()])
    on.extra = {"cpu_ms_per_step_at_fixed_rate": [2.0, 2.2, 2.1], "fixed_rate": 200,
                "spans": {"exported": 900, "dropped": dropped}}
    off = ScenarioResult("t-tracing-off", "off", "req/s", [run()])
    off.extra = {"cpu_ms_per_step_at_fixed_rate": [1.9], "fixed_rate": 200}
    refused_off = ScenarioResult("t-refused-off", "off", "calls/s", [run(cpu_ms_per_call=0.5)] * 3)
    refused_off.extra = {"fixed_rate": 200}
    refused_on = ScenarioResult("t-refused-on", "on", "calls/s", [run(cpu_ms_per_call=refused_on_ms)] * 3)
    refused_on.extra = {"fixed_rate": 200, "spans": {"exported": 50, "dropped": {}}}
    judged = judge([off, on, refused_off, refused_on], Plan.full(tracing=True))
    return {v.target: [v.measured, v.passed] for v in judged}

print(json.dumps([verdicts(*case) for case in json.loads(sys.argv[1])]))
"""

CASES = [({}, 0.6), ({"queue_full": 7}, 0.6), ({}, 0.8)]


@pytest.fixture(scope="module")
def judged() -> list[dict[str, Any]]:
    """The verdicts of each of CASES (span drops, CPU ms per refused call traced), judged in one child."""
    finished = subprocess.run(
        [sys.executable, "-c", JUDGE, json.dumps(CASES)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        timeout=60,
    )
    cases: list[dict[str, Any]] = json.loads(finished.stdout)
    return cases


def _verdict(verdicts: dict[str, Any], starts: str) -> tuple[str, bool | None]:
    measured, passed = next(value for target, value in verdicts.items() if target.startswith(starts))
    return measured, passed


def test_no_span_dropped_passes_and_any_drop_fails_with_its_reason(judged: list[dict[str, Any]]) -> None:
    assert _verdict(judged[0], "Tracing drops no span") == ("950 exported, 0 dropped", True)
    measured, passed = _verdict(judged[1], "Tracing drops no span")
    assert passed is False and "queue_full: 7" in measured


def test_a_refused_call_s_span_is_judged_against_a_traced_step(judged: list[dict[str, Any]]) -> None:
    measured, passed = _verdict(judged[0], "A refused call's span")  # +100 µs against a 2.1 ms traced step
    assert passed is True and "+100 µs" in measured and "4.8%" in measured
    _, passed = _verdict(judged[2], "A refused call's span")  # +300 µs: 14%
    assert passed is False
