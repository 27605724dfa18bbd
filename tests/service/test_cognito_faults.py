"""Cognito faults injected over a real socket: typed failures, safe retries, attempts given back."""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from harness import Emulator, Journeys, build_service, wrong_code
from otp_step_client import Journey, Step, StepExecutorClient, StepExecutorError
from stepexecutor.v1 import step_executor_pb2 as pb


def test_lasting_throttling_is_a_retryable_system_failure(journeys: Journeys, emulator: Emulator) -> None:
    emulator.inject(operation="InitiateAuth", error="TooManyRequestsException", count=10)
    response, _ = journeys.generate("grace@example.com")
    failure = response.failure
    assert failure.code == pb.FAILURE_CODE_THROTTLED
    assert failure.category == pb.ERROR_CATEGORY_SYSTEM
    assert failure.retryable
    assert failure.cognito_error == "TooManyRequestsException"


def test_brief_throttling_is_retried_because_cognito_acted_on_nothing(
    journeys: Journeys, emulator: Emulator
) -> None:
    before = len(emulator.outbox("grace@example.com"))
    emulator.inject(operation="InitiateAuth", error="TooManyRequestsException", count=1)
    response, _ = journeys.generate("grace@example.com")
    assert response.WhichOneof("outcome") == "success"
    assert len(emulator.outbox("grace@example.com")) == before + 1


def test_a_cognito_5xx_is_retryable_but_never_resent(journeys: Journeys, emulator: Emulator) -> None:
    # A 5xx on InitiateAuth may come after the code was sent: the service must not send another one.
    emulator.inject(operation="InitiateAuth", error="InternalErrorException", count=2)
    response, _ = journeys.generate("grace@example.com")
    assert response.failure.code == pb.FAILURE_CODE_COGNITO_UNAVAILABLE
    assert response.failure.retryable
    remaining = [f for f in emulator_faults(emulator) if f.get("operation") == "InitiateAuth"]
    assert remaining and remaining[0]["remaining"] == 1, remaining


def emulator_faults(emulator: Emulator) -> list[dict[str, object]]:
    from harness import http_json

    return list(http_json("GET", f"{emulator.endpoint_url}/_faults")["faults"])


def test_a_dropped_connection_is_cognito_unavailable(journeys: Journeys, emulator: Emulator) -> None:
    emulator.inject(operation="InitiateAuth", error="DropConnection", count=1)
    response, _ = journeys.generate("grace@example.com")
    assert response.failure.code == pb.FAILURE_CODE_COGNITO_UNAVAILABLE
    assert response.failure.retryable


def test_a_slow_cognito_hits_the_connections_call_timeout(journeys: Journeys, emulator: Emulator) -> None:
    emulator.inject(operation="InitiateAuth", latency_ms=1500, count=1)
    response, _ = journeys.generate("grace@example.com", connection="slow")
    assert response.failure.code == pb.FAILURE_CODE_COGNITO_TIMEOUT
    assert response.failure.retryable


def test_throttling_at_validate_gives_the_attempt_back(journeys: Journeys, emulator: Emulator) -> None:
    before = len(emulator.outbox("grace@example.com"))
    sent, journey = journeys.generate("grace@example.com")
    assert sent.WhichOneof("outcome") == "success"
    code = emulator.latest_code("grace@example.com", after=before)
    emulator.inject(operation="RespondToAuthChallenge", error="TooManyRequestsException", count=10)
    throttled = journeys.validate(journey, "grace@example.com", code)
    assert throttled.failure.code == pb.FAILURE_CODE_THROTTLED
    emulator.clear_faults()
    wrong = journeys.validate(journey, "grace@example.com", wrong_code(code))
    assert wrong.failure.attempts_remaining == 2  # the throttled try did not count
    assert journeys.validate(journey, "grace@example.com", code).WhichOneof("outcome") == "success"


def test_when_get_user_fails_the_verified_id_token_supplies_the_attributes(
    journeys: Journeys, emulator: Emulator
) -> None:
    before = len(emulator.outbox("ada@example.com"))
    _, journey = journeys.generate("ada@example.com")
    code = emulator.latest_code("ada@example.com", after=before)
    emulator.inject(operation="GetUser", error="InternalErrorException", count=5)
    response = journeys.validate(journey, "ada@example.com", code)
    assert response.WhichOneof("outcome") == "success"
    assert response.success.attributes["email"] == "ada@example.com"
    assert response.success.attributes["given_name"] == "Ada"


def test_a_timed_out_code_still_counts_because_cognito_may_have_judged_it(
    journeys: Journeys, emulator: Emulator
) -> None:
    before = len(emulator.outbox("grace@example.com"))
    _, journey = journeys.generate("grace@example.com", connection="slow")
    code = emulator.latest_code("grace@example.com", after=before)
    emulator.inject(operation="RespondToAuthChallenge", latency_ms=1000, count=1)
    timed_out = journeys.validate(journey, "grace@example.com", code, connection="slow")
    assert timed_out.failure.code == pb.FAILURE_CODE_COGNITO_TIMEOUT
    wrong = journeys.validate(journey, "grace@example.com", wrong_code(code), connection="slow")
    assert wrong.failure.attempts_remaining == 1


def test_concurrent_wrong_codes_cannot_outrun_the_identifier_lockout(
    journeys: Journeys, emulator: Emulator
) -> None:
    # lockout_threshold = 4 on this connection; Cognito answers slowly so all Validates overlap.
    runs = []
    for _ in range(3):
        sent, journey = journeys.generate("+15555550101", channel="SMS", connection="lockout")
        assert sent.WhichOneof("outcome") == "success"
        runs.append(journey)
    emulator.inject(operation="RespondToAuthChallenge", latency_ms=300)
    with ThreadPoolExecutor(max_workers=9) as pool:
        results = list(
            pool.map(
                lambda journey: journeys.validate(journey, "+15555550101", "12345678", connection="lockout"),
                [journey for journey in runs for _ in range(3)],
            )
        )
    judged = [
        r
        for r in results
        if r.failure.code in (pb.FAILURE_CODE_INVALID_CODE, pb.FAILURE_CODE_ATTEMPTS_EXHAUSTED)
    ]
    locked = [r for r in results if r.failure.code == pb.FAILURE_CODE_IDENTIFIER_LOCKED]
    assert len(judged) <= 4
    assert len(judged) + len(locked) == 9


def test_the_call_timeout_is_the_configured_one_not_a_bucket_below_it(
    journeys: Journeys, emulator: Emulator
) -> None:
    # call_timeout_seconds = 5 (the default, connection "demo") and a Cognito answering in 3.2 s: the answer
    # is waited for (the synchronous service's timeout buckets cut it at 3.0 s while the code was delivered).
    emulator.inject(operation="InitiateAuth", latency_ms=3200, count=1)
    response, _ = journeys.generate("grace@example.com")
    assert response.WhichOneof("outcome") == "success", response


def test_short_deadlines_over_a_slow_cognito_deliver_no_more_codes_than_the_budget(
    connections_file: Path, emulator: Emulator
) -> None:
    # The attack: InitiateAuth slowed to 400 ms, 30 Generates for one address with 0.3 s deadlines, 15 in one
    # journey run and 15 in new runs. Each times out at the caller, yet Cognito (the emulator) still sends: every
    # such send counts, so at most send_limit (10) codes arrive.
    service = build_service(connections_file)
    service.start()
    try:
        emulator.inject(operation="InitiateAuth", latency_ms=400, count=30)
        before = len(emulator.outbox("ada@example.com"))
        with StepExecutorClient(f"127.0.0.1:{service.port}") as client:
            journeys = Journeys(client, emulator)
            one_run = journeys.journey()
            runs = [one_run] * 15 + [journeys.journey() for _ in range(15)]

            def attempt(journey: Journey) -> str:
                try:
                    sent = client.generate_otp(
                        journey, Step("budget", "ada@example.com", channel="EMAIL"), timeout=0.3
                    )
                    return (sent.failure.code and pb.FailureCode.Name(sent.failure.code)) or "SENT"
                except StepExecutorError as exc:
                    return exc.code.name

            with ThreadPoolExecutor(max_workers=6) as pool:
                answers = list(pool.map(attempt, runs))
        until = time.monotonic() + 10
        while emulator_faults(emulator) and time.monotonic() < until:  # the last delayed sends land
            time.sleep(0.05)
        time.sleep(0.6)
        delivered = len(emulator.outbox("ada@example.com")) - before
        assert delivered <= 10, (delivered, answers)
        assert "FAILURE_CODE_RESEND_TOO_SOON" in answers
    finally:
        emulator.clear_faults()
        service.stop(1)


def test_right_codes_lost_to_dropped_connections_do_not_lock_the_user_out(
    connections_file: Path, emulator: Emulator
) -> None:
    # lockout_threshold = 4 on this connection (a service of its own: fresh counters). Five Validates whose
    # answers never arrive: each spends its attempt, none counts as a wrong code: no lockout.
    service = build_service(connections_file)
    service.start()
    client = StepExecutorClient(f"127.0.0.1:{service.port}")
    try:
        _five_lost_answers_then_a_generate(Journeys(client, emulator), emulator)
    finally:
        emulator.clear_faults()
        client.close()
        service.stop(1)


def _five_lost_answers_then_a_generate(journeys: Journeys, emulator: Emulator) -> None:
    for _ in range(5):
        before = len(emulator.outbox("+15555550101"))
        sent, journey = journeys.generate("+15555550101", channel="SMS", connection="lockout")
        assert sent.WhichOneof("outcome") == "success", sent
        code = emulator.latest_code("+15555550101", after=before)
        emulator.inject(operation="RespondToAuthChallenge", error="DropConnection", count=1)
        lost = journeys.validate(journey, "+15555550101", code, connection="lockout")
        assert lost.failure.code == pb.FAILURE_CODE_COGNITO_UNAVAILABLE
    again, _ = journeys.generate("+15555550101", channel="SMS", connection="lockout")
    assert again.WhichOneof("outcome") == "success", again
