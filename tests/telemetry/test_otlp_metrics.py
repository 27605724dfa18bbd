"""OTLP metrics (OTEL_METRICS_EXPORTER=otlp) into a real collector: Jaeger v2's OTLP receiver, its metrics
served back by the contrib `prometheus` exporter. The service runs as its own process, configured only by the
standard OTEL_* variables and with no scrape port of its own (OTP_STEP_METRICS_LISTEN unset).
"""

from __future__ import annotations

import signal
import time
import urllib.request
import uuid
from collections.abc import Iterator, Mapping
from pathlib import Path

import pytest
from harness import Emulator, Journeys, start_service_process, wrong_code
from otp_step_client import StepExecutorClient
from prometheus_client.parser import text_string_to_metric_families

from .jaeger import running_jaeger

CONFIG = Path(__file__).with_name("jaeger-metrics.yaml")
Series = dict[tuple[str, frozenset[tuple[str, str]]], float]


@pytest.fixture(scope="module")
def collector(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, int]]:
    """Jaeger with a metrics pipeline: OTLP/HTTP in, a Prometheus endpoint out."""
    with running_jaeger(
        CONFIG,
        ("JAEGER_OTLP_HTTP_PORT", "JAEGER_PROMETHEUS_PORT"),
        tmp_path_factory.mktemp("jaeger-metrics"),
        "JAEGER_PROMETHEUS_PORT",
        "metrics",
    ) as ports:
        yield ports


def _otlp_env(collector: Mapping[str, int], instance: str, interval_ms: int) -> dict[str, str]:
    return {
        "OTP_STEP_SELF_TEST": "off",
        "OTP_STEP_METRICS_LISTEN": "",
        "OTEL_METRICS_EXPORTER": "otlp",
        "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
        "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT": f"http://127.0.0.1:{collector['JAEGER_OTLP_HTTP_PORT']}/v1/metrics",
        "OTEL_METRIC_EXPORT_INTERVAL": str(interval_ms),
        "OTEL_SERVICE_NAME": "otp-step-service",
        # One id per test, so each reads only its own process's series from the shared collector.
        "OTEL_RESOURCE_ATTRIBUTES": f"service.instance.id={instance}",
    }


def _series(collector: Mapping[str, int], instance: str) -> Series:
    """The collector's samples that came from `instance`, keyed by name and labels (resource labels dropped)."""
    url = f"http://127.0.0.1:{collector['JAEGER_PROMETHEUS_PORT']}/metrics"
    with urllib.request.urlopen(url, timeout=5) as response:  # loopback only
        text = response.read().decode()
    resource = {"instance", "job", "service_instance_id", "service_name", "otel_scope_name"}
    series: Series = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.labels.get("service_instance_id") != instance:
                continue
            labels = {
                k: v
                for k, v in sample.labels.items()
                if k not in resource and not k.startswith(("otel_", "telemetry_"))
            }
            series[(sample.name, frozenset(labels.items()))] = sample.value
    return series


def _total(series: Series, name: str, **labels: str) -> float:
    return sum(v for (n, ls), v in series.items() if n == name and set(labels.items()) <= ls)


def _wait_for(
    collector: Mapping[str, int],
    instance: str,
    expected: Mapping[tuple[str, frozenset[tuple[str, str]]], float],
) -> Series:
    deadline = time.monotonic() + 20
    while True:
        series = _series(collector, instance)
        got = {key: _total(series, key[0], **dict(key[1])) for key in expected}
        if got == dict(expected):
            return series
        assert time.monotonic() < deadline, f"the collector has {got}, expected {dict(expected)}"
        time.sleep(0.2)


def _key(name: str, **labels: str) -> tuple[str, frozenset[tuple[str, str]]]:
    return name, frozenset(labels.items())


def _email_journey(journeys: Journeys, emulator: Emulator, identifier: str) -> str:
    """Generate, a wrong code, the right code; returns the code (which must appear nowhere in the metrics)."""
    before = len(emulator.outbox(identifier))
    response, journey = journeys.generate(identifier)
    assert response.WhichOneof("outcome") == "success", response
    code = emulator.latest_code(identifier, after=before)
    assert journeys.validate(journey, identifier, wrong_code(code)).WhichOneof("outcome") == "failure"
    assert journeys.validate(journey, identifier, code).WhichOneof("outcome") == "success"
    return code


JOURNEY = {
    _key("otp_steps_total", step_type="cognito_otp_generate", connection="demo", outcome="success"): 1,
    _key(
        "otp_steps_total", step_type="cognito_otp_validate", outcome="failure", failure_code="INVALID_CODE"
    ): 1,
    _key("otp_steps_total", step_type="cognito_otp_validate", outcome="success", failure_code=""): 1,
    _key("otp_codes_sent_total", connection="demo", channel="EMAIL", country="unknown"): 1,
    _key("otp_validations_total", connection="demo", result="failed"): 1,
    _key("otp_validations_total", connection="demo", result="succeeded"): 1,
    _key(
        "otp_cognito_calls_total",
        connection="demo",
        operation="RespondToAuthChallenge",
        error_type="code_mismatch",
    ): 1,
    _key(
        "rpc_server_call_duration_seconds_count",
        rpc_system="grpc",
        rpc_service="stepexecutor.v1.StepExecutor",
        rpc_method="GenerateOtp",
        rpc_grpc_status_code="0",
    ): 1,
    _key("rpc_server_call_duration_seconds_count", rpc_method="ValidateOtp", rpc_grpc_status_code="0"): 2,
    _key("otp_steps_in_flight"): 0,
}


def test_a_journey_arrives_in_the_collector_every_interval_without_a_scrape_port(
    collector: dict[str, int], connections_file: Path, emulator: Emulator, tmp_path: Path
) -> None:
    instance = uuid.uuid4().hex
    process, port = start_service_process(
        connections_file, tmp_path / "service.log", _otlp_env(collector, instance, interval_ms=200)
    )
    try:
        with StepExecutorClient(f"127.0.0.1:{port}") as client:
            journeys = Journeys(client, emulator)
            code = _email_journey(journeys, emulator, "ada@example.com")
        # While the service runs: the periodic export, not the shutdown flush, brought these.
        series = _wait_for(collector, instance, JOURNEY)
        assert process.poll() is None
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    # Cognito calls are all counted and timed, and the histogram's buckets are OTLP's explicit bounds again.
    calls = _total(series, "otp_cognito_calls_total", connection="demo")
    assert calls >= 4
    assert _total(series, "otp_cognito_call_duration_seconds_count", connection="demo") == calls
    generate = {"rpc_method": "GenerateOtp"}
    assert _total(series, "rpc_server_call_duration_seconds_bucket", le="+Inf", **generate) == 1
    took = _total(series, "rpc_server_call_duration_seconds_sum", **generate)
    assert took > 0
    # One observation: each bucket holds it exactly when its bound is at or above it.
    for bound in ("0.005", "0.025", "0.1"):
        expected = 1 if took <= float(bound) else 0
        assert _total(series, "rpc_server_call_duration_seconds_bucket", le=bound, **generate) == expected
    labels = {value for (_, ls) in series for _, value in ls}
    assert code not in labels and not any(run in labels for run in journeys.runs)
    assert "OTLP export failed" not in (tmp_path / "service.log").read_text()


def test_the_last_counts_are_flushed_on_shutdown(
    collector: dict[str, int], connections_file: Path, emulator: Emulator, tmp_path: Path
) -> None:
    instance = uuid.uuid4().hex
    # An interval no test waits for: only the flush at SIGTERM can bring the journey's counts.
    process, port = start_service_process(
        connections_file, tmp_path / "service.log", _otlp_env(collector, instance, interval_ms=600_000)
    )
    try:
        with StepExecutorClient(f"127.0.0.1:{port}") as client:
            _email_journey(Journeys(client, emulator), emulator, "grace@example.com")
        assert _series(collector, instance) == {}
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=20) == 0
    _wait_for(collector, instance, JOURNEY)
