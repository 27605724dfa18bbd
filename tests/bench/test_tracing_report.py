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

def verdicts(dropped, refused_on_ms, side_by_side=None):

    on = ScenarioResult("t-tracing-on", "on", "req/s", [run()])
    on.extra = {"cpu_ms_per_step_at_fixed_rate": [2.0, 2.2, 2.1], "fixed_rate": 200,
                "spans": {"exported": 900, "dropped": dropped}}
    off = ScenarioResult("t-tracing-off", "off", "req/s", [run()])
    off.extra = {"cpu_ms_per_step_at_fixed_rate": [1.9], "fixed_rate": 200}
    refused_off = ScenarioResult("t-refused-off", "off", "calls/s", [run(cpu_ms_per_call=0.5)] * 3)
    refused_off.extra = {"fixed_rate": 200}
    added = {"cpu_ms_added": side_by_side["refused_added_ms"]} if side_by_side else {}
    refused_on = ScenarioResult("t-refused-on", "on", "calls/s", [run(cpu_ms_per_call=refused_on_ms, **added)] * 3)
    if side_by_side:
        on.extra["throughput_ratio_side_by_side"] = side_by_side["throughput"]
        on.extra["cpu_ratio_at_fixed_rate"] = side_by_side["cpu"]
    refused_on.extra = {"fixed_rate": 200, "spans": {"exported": 50, "dropped": {}}}
    judged = judge([off, on, refused_off, refused_on], Plan.full(tracing=True))
    return {v.target: [v.measured, v.passed] for v in judged}

print(json.dumps([verdicts(*case) for case in json.loads(sys.argv[1])]))
"""

CASES: list[tuple[Any, ...]] = [
    ({}, 0.6),
    ({"queue_full": 7}, 0.6),
    ({}, 0.8),
    # Side by side: each window's ratio (both services measured at once), judged on their median.
    ({}, 0.8, {"throughput": [0.93, 0.88, 0.91], "cpu": [1.12, 1.05, 1.08], "refused_added_ms": 0.05}),
    ({}, 0.6, {"throughput": [0.89, 0.85, 0.91], "cpu": [1.12, 1.11, 1.08], "refused_added_ms": 0.3}),
]


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


def test_side_by_side_windows_are_judged_on_their_median_ratio(judged: list[dict[str, Any]]) -> None:
    measured, passed = _verdict(judged[3], "Tracing costs at most 10% of saturated throughput")
    assert passed is True and measured.startswith("0.910") and "0.880 to 0.930" in measured
    # The runs one after the other are reported beside it, not judged.
    assert judged[3][
        "(variant, not a target) Tracing costs at most 10% of saturated throughput (on / off), one after the other"
    ] == ["100 vs 100 req/s = 1.00", None]
    measured, passed = _verdict(judged[3], "Tracing costs at most x 1.10 CPU per step")
    assert passed is True and "x 1.080 side by side" in measured
    measured, passed = _verdict(judged[4], "Tracing costs at most 10% of saturated throughput")
    assert passed is False and measured.startswith("0.890")
    _, passed = _verdict(judged[4], "Tracing costs at most x 1.10 CPU per step")
    assert passed is False  # median x 1.11


def test_a_refused_call_s_span_is_read_per_window_when_measured_side_by_side(
    judged: list[dict[str, Any]],
) -> None:
    # The per-window difference wins over the difference of medians (0.8 - 0.5 = +300 µs, which would fail).
    measured, passed = _verdict(judged[3], "A refused call's span")
    assert passed is True and "+50 µs" in measured
    _, passed = _verdict(judged[4], "A refused call's span")  # +300 µs a window, against +100 µs of medians
    assert passed is False


def test_without_side_by_side_windows_the_sequential_medians_are_judged(judged: list[dict[str, Any]]) -> None:
    measured, passed = _verdict(judged[0], "Tracing costs at most 10% of saturated throughput")
    assert passed is True and measured == "100 vs 100 req/s = 1.00"
    measured, passed = _verdict(judged[0], "Tracing costs at most x 1.10 CPU per step")
    assert passed is False and measured == "2.10 vs 1.90 ms = x 1.11"
