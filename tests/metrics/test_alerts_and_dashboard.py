"""The alert rules pass promtool's check and their unit tests, load into the real Prometheus, and every query
of the Grafana dashboard runs there without an error (and finds data once journeys have run)."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path
from typing import Any

from harness import Journeys

from .prometheus import RULES, Prometheus, binary

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "dashboard.json"
RULE_FILE = RULES / "otp-step-service.rules.yml"
# What Grafana substitutes before a query reaches Prometheus.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$connection": ".*"}


def _promtool(*args: str, cwd: Path = RULES) -> str:
    result = subprocess.run([binary("promtool"), *args], cwd=cwd, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def test_the_alert_rules_pass_promtool_check() -> None:
    assert "SUCCESS" in _promtool("check", "rules", str(RULE_FILE))


def test_the_alert_rules_pass_their_unit_tests() -> None:
    assert "SUCCESS" in _promtool("test", "rules", "otp-step-service.rules_test.yml")


def test_prometheus_loads_and_evaluates_every_alert_rule(prometheus: Prometheus) -> None:
    names = set(re.findall(r"^\s+- alert: (\S+)", RULE_FILE.read_text(), re.MULTILINE))
    groups = prometheus.api("rules")["groups"]
    rules = {rule["name"]: rule for group in groups for rule in group["rules"]}
    assert set(rules) == names
    # Evaluated at least once (every second) and healthy: no rule errors against the service's real series.
    prometheus.wait_until(
        lambda: all(r.get("health") == "ok" for r in prometheus_rules(prometheus).values()),
        "every rule evaluated with health ok",
    )


def prometheus_rules(prometheus: Prometheus) -> dict[str, Any]:
    """The loaded rules by name."""
    return {r["name"]: r for g in prometheus.api("rules")["groups"] for r in g["rules"]}


def _dashboard_queries() -> list[tuple[str, str]]:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = []
    for panel in dashboard["panels"]:
        for target in panel.get("targets", []):
            expr = target["expr"]
            for variable, value in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, value)
            queries.append((f"{panel['title']} / {target['refId']}", expr))
    return queries


def test_every_dashboard_query_runs_in_prometheus_and_finds_the_journeys(
    prometheus: Prometheus, metered_journeys: Journeys
) -> None:
    metered_journeys.generate("ada@example.com")
    metered_journeys.generate("+15555550101", channel="SMS")
    prometheus.wait_for('sum(otp_codes_sent_total{channel="SMS"}) > bool 0', 1)
    queries = _dashboard_queries()
    assert len(queries) >= 15
    for where, expr in queries:
        assert "$" not in expr, f"{where}: a Grafana variable the test does not substitute: {expr}"
        prometheus.query(expr)  # raises with Prometheus' error on a bad query
    # Panels over counters that moved have data once two scrapes have seen them.
    with_data = {
        "Steps by outcome and failure code / A",
        "Codes sent by channel / A",
        "Steps in flight and refused calls / A",
    }
    for where, expr in queries:
        if where in with_data:
            prometheus.wait_until(lambda expr=expr: bool(prometheus.query(expr)), f"{where} has data")


def test_the_dashboard_connection_variable_lists_the_configured_connections(
    prometheus: Prometheus, metered_journeys: Journeys
) -> None:
    metered_journeys.generate("ada@example.com")
    prometheus.wait_until(
        lambda: "demo" in prometheus.api("label/connection/values", **{"match[]": "otp_steps_total"}),
        "label_values(otp_steps_total, connection) lists demo",
    )
