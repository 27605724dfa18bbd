"""The metrics' meaning, without a server: each outcome lands in the counters an SRE alerts on, Admission's
counts are read at scrape time, and the catalogue in the docs ("Operations", Metrics) lists every metric the registry has."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from otp_step_service.config.settings import ServiceSettings, SettingsError
from otp_step_service.observability.metrics import CATALOGUE, Metrics, Series, destination_country
from otp_step_service.steps.circuit_breaker import CircuitBreaker
from otp_step_service.steps.model import CognitoErrorKind
from otp_step_service.steps.outcomes import FailureBranch, FailureCode, StepFailure, StepOutcome, Success
from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client import Counter as PromCounter

DOCS = Path(__file__).resolve().parents[2] / "docs" / "reference" / "metrics.md"


def _failure(code: FailureCode) -> StepOutcome[Any]:
    return FailureBranch(StepFailure(code, "test"))


def _value(registry: CollectorRegistry, name: str, **labels: str) -> float:
    return registry.get_sample_value(name, labels) or 0.0


def _finish(metrics: Metrics, step_type: str, outcome: StepOutcome[Any], **kwargs: Any) -> None:
    args = {
        "connection": "demo",
        "channel": "SMS",
        "identifier": "+447700900123",
        "default_phone_region": None,
        "outcome": outcome,
        "seconds": 0.01,
        "validating": step_type == "cognito_otp_validate",
    } | kwargs
    metrics.step_finished(step_type, **args)


def test_lockouts_and_budget_trips_are_counted_apart_from_other_failures() -> None:
    metrics = Metrics(CollectorRegistry())
    _finish(metrics, "cognito_otp_generate", _failure(FailureCode.IDENTIFIER_LOCKED))
    _finish(metrics, "cognito_otp_validate", _failure(FailureCode.IDENTIFIER_LOCKED))
    _finish(metrics, "cognito_otp_generate", _failure(FailureCode.RESEND_TOO_SOON))
    _finish(metrics, "cognito_otp_generate", _failure(FailureCode.COGNITO_UNAVAILABLE))
    r = metrics.registry
    assert _value(r, "otp_lockouts_total", step_type="cognito_otp_generate", connection="demo") == 1
    assert _value(r, "otp_lockouts_total", step_type="cognito_otp_validate", connection="demo") == 1
    assert _value(r, "otp_send_budget_trips_total", connection="demo", channel="SMS") == 1
    assert _value(r, "otp_codes_sent_total", connection="demo", channel="SMS", country="GB") == 0
    # A lockout is no judgement of a code; a system failure neither.
    assert _value(r, "otp_validations_total", connection="demo", result="failed") == 0
    assert (
        _value(
            r,
            "otp_steps_total",
            step_type="cognito_otp_generate",
            connection="demo",
            outcome="failure",
            failure_code="COGNITO_UNAVAILABLE",
        )
        == 1
    )


def test_a_series_counts_into_the_instruments_own_children() -> None:
    registry = CollectorRegistry()
    counter = PromCounter("c", "test", ("connection", "outcome"), registry=registry)
    series = Series(counter)
    series.labels("demo", "success").inc()
    series.labels("demo", "success").inc()
    series.labels("demo", "failure").inc()
    assert series.labels("demo", "success") is counter.labels("demo", "success")
    assert _value(registry, "c_total", connection="demo", outcome="success") == 2
    assert _value(registry, "c_total", connection="demo", outcome="failure") == 1


def test_a_code_sent_by_sms_is_counted_by_destination_country() -> None:
    metrics = Metrics(CollectorRegistry())
    _finish(metrics, "cognito_otp_generate", Success(result=None))
    _finish(
        metrics,
        "cognito_otp_generate",
        Success(result=None),
        identifier="0612345678",
        default_phone_region="FR",
    )
    _finish(
        metrics, "cognito_otp_generate", Success(result=None), channel="EMAIL", identifier="a@example.com"
    )
    r = metrics.registry
    assert _value(r, "otp_codes_sent_total", connection="demo", channel="SMS", country="GB") == 1
    assert _value(r, "otp_codes_sent_total", connection="demo", channel="SMS", country="FR") == 1
    assert _value(r, "otp_codes_sent_total", connection="demo", channel="EMAIL", country="unknown") == 1


@pytest.mark.parametrize(
    ("identifier", "region", "country"),
    [
        ("+15555550101", None, "US"),
        ("5555550101", "US", "US"),
        ("not a number", None, "unknown"),
        ("+999", None, "unknown"),
    ],
)
def test_destination_country_is_an_iso_region_or_unknown(
    identifier: str, region: str | None, country: str
) -> None:
    assert destination_country(identifier, region) == country


def test_admission_counts_are_read_at_scrape_time() -> None:
    metrics = Metrics(CollectorRegistry())
    in_flight = [3]
    refusals: Counter[str] = Counter()
    metrics.watch_admission(lambda: in_flight[0], refusals)
    refusals["OVERLOADED"] += 2
    refusals["IDLE_STREAM"] += 1
    in_flight[0] = 1
    r = metrics.registry
    assert _value(r, "otp_steps_in_flight") == 1
    assert _value(r, "otp_rejected_calls_total", reason="OVERLOADED") == 2
    assert _value(r, "otp_rejected_calls_total", reason="IDLE_STREAM") == 1


def test_metrics_are_off_unless_a_scrape_address_is_set() -> None:
    assert ServiceSettings.from_env().metrics_listen == ""
    with pytest.raises(SettingsError, match="OTP_STEP_METRICS_LISTEN"):
        ServiceSettings.from_env(metrics_listen="9464")


def test_the_catalogue_lists_every_metric_the_registry_exposes_and_the_docs_list_the_catalogue() -> None:
    metrics = Metrics(CollectorRegistry())
    metrics.watch_admission(lambda: 0, Counter({"OVERLOADED": 1}))
    metrics.watch_circuits(dict)
    metrics.watch_span_export()
    exposed = set(re.findall(r"^# TYPE (\S+) ", generate_latest(metrics.registry).decode(), re.MULTILINE))
    exposed = {
        name + "_total" if name + "_total" in {m.name for m in CATALOGUE} else name for name in exposed
    }
    assert exposed == {m.name for m in CATALOGUE}
    docs = DOCS.read_text()
    for metric in CATALOGUE:
        assert f"`{metric.name}`" in docs, f"the metrics reference page does not list {metric.name}"


def test_an_open_circuit_shows_at_the_next_scrape() -> None:
    metrics = Metrics(CollectorRegistry())
    breaker = CircuitBreaker(1, 30)
    connection: Any = SimpleNamespace(gateway=SimpleNamespace(breaker=breaker))
    metrics.watch_circuits(lambda: {"demo": connection})
    assert metrics.registry.get_sample_value("otp_cognito_circuit_open", {"connection": "demo"}) == 0
    breaker.record(CognitoErrorKind.UNAVAILABLE)
    assert metrics.registry.get_sample_value("otp_cognito_circuit_open", {"connection": "demo"}) == 1
