"""A real Prometheus scrapes the service during journeys: the counters and histograms move as they did."""

from __future__ import annotations

from harness import Emulator, Journeys, wrong_code

from .prometheus import Prometheus

GENERATE = 'step_type="cognito_otp_generate"'
VALIDATE = 'step_type="cognito_otp_validate"'


def _journeys(journeys: Journeys, emulator: Emulator) -> None:
    """An email journey with one wrong code, an SMS journey, and three codes for one identifier on a
    connection whose send budget is two."""
    for identifier, channel, wrong in (("ada@example.com", "EMAIL", True), ("+15555550101", "SMS", False)):
        before = len(emulator.outbox(identifier))
        response, journey = journeys.generate(identifier, channel=channel)
        assert response.WhichOneof("outcome") == "success", response
        code = emulator.latest_code(identifier, after=before)
        if wrong:
            assert journeys.validate(journey, identifier, wrong_code(code)).WhichOneof("outcome") == "failure"
        assert journeys.validate(journey, identifier, code).WhichOneof("outcome") == "success"
    outcomes = [
        journeys.generate("grace@example.com", connection="send-cap")[0].WhichOneof("outcome")
        for _ in range(3)
    ]
    assert outcomes == ["success", "success", "failure"]


def test_a_journey_moves_the_counters_and_histograms_prometheus_scrapes(
    prometheus: Prometheus, metered_journeys: Journeys, emulator: Emulator
) -> None:
    _journeys(metered_journeys, emulator)
    expected = {
        # steps by type, outcome and failure code
        f'sum(otp_steps_total{{{GENERATE},outcome="success"}})': 4,
        f'sum(otp_steps_total{{{GENERATE},failure_code="RESEND_TOO_SOON"}})': 1,
        f'sum(otp_steps_total{{{VALIDATE},outcome="success"}})': 2,
        f'sum(otp_steps_total{{{VALIDATE},failure_code="INVALID_CODE"}})': 1,
        f"sum(otp_step_duration_seconds_count{{{GENERATE}}})": 5,
        # codes sent by connection, channel and destination country
        'otp_codes_sent_total{connection="demo",channel="SMS",country="US"}': 1,
        'otp_codes_sent_total{connection="demo",channel="EMAIL",country="unknown"}': 1,
        'otp_codes_sent_total{connection="send-cap",channel="EMAIL",country="unknown"}': 2,
        'otp_send_budget_trips_total{connection="send-cap",channel="EMAIL"}': 1,
        'otp_validations_total{connection="demo",result="succeeded"}': 2,
        'otp_validations_total{connection="demo",result="failed"}': 1,
        # the gRPC layer: OTel's rpc.server.call.duration, status code 0 (the failure branch is an OK RPC)
        'rpc_server_call_duration_seconds_count{rpc_system="grpc",rpc_service="stepexecutor.v1.StepExecutor",'
        'rpc_method="GenerateOtp",rpc_grpc_status_code="0"}': 5,
        'rpc_server_call_duration_seconds_count{rpc_method="ValidateOtp",rpc_grpc_status_code="0"}': 3,
        # the challenge store: two operations per Generate, one or two per Validate; the refused third
        # Generate asks begin_send a second time, for the identifier alone (a refusal earned through another
        # alias would answer as a sent code under enumeration protection; this one is its own)
        'otp_challenge_store_operation_duration_seconds_count{operation="begin_send"}': 6,
        'otp_challenge_store_operation_duration_seconds_count{operation="finish_send"}': 4,
        'otp_challenge_store_operation_duration_seconds_count{operation="begin_attempt"}': 3,
        "sum(otp_challenge_store_errors_total) or vector(0)": 0,
        "otp_steps_in_flight": 0,
        'otp_cognito_circuit_open{connection="demo"}': 0,
    }
    for expr, value in expected.items():
        prometheus.wait_for(expr, value)
    # Cognito: every try counted and timed; the one wrong code is Cognito's one error, and no call was retried.
    calls = prometheus.value("sum(otp_cognito_calls_total)")
    assert calls is not None and calls >= 4 + 3
    errors = prometheus.query('sum by (operation, error_type) (otp_cognito_calls_total{error_type!=""})')
    assert [(e["metric"], e["value"][1]) for e in errors] == [
        ({"operation": "RespondToAuthChallenge", "error_type": "code_mismatch"}, "1")
    ]
    assert prometheus.value("sum(otp_cognito_retries_total) or vector(0)") == 0
    assert prometheus.value("sum(otp_cognito_call_duration_seconds_count)") == calls
    assert (prometheus.value('sum(otp_cognito_calls_total{operation="InitiateAuth"})') or 0) >= 4
    # The histograms answer the dashboard's questions with real numbers.
    sum_seconds = prometheus.value('sum(rpc_server_call_duration_seconds_sum{rpc_method="GenerateOtp"})')
    assert sum_seconds is not None and sum_seconds > 0
    p99 = prometheus.value(
        "histogram_quantile(0.99, sum by (le) (rpc_server_call_duration_seconds_bucket"
        '{rpc_method="GenerateOtp"}))'
    )
    assert p99 is not None and 0 < p99 <= 10


def test_no_label_carries_an_identifier_a_code_or_a_run_id(
    prometheus: Prometheus, metered_journeys: Journeys, emulator: Emulator
) -> None:
    _, journey = metered_journeys.generate("ada@example.com")
    prometheus.wait_for("otp_steps_in_flight", 0)
    series = prometheus.api("series", **{"match[]": '{job="otp-step-service"}'})
    values = {value for labels in series for value in labels.values()}
    for secret in (
        "ada@example.com",
        "+15555550101",
        journey.run_id,
        emulator.latest_code("ada@example.com"),
    ):
        assert secret not in values
