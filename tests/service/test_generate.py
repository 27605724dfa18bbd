"""Cognito OTP Generate against the real server and the emulator over HTTP."""

from __future__ import annotations

import re
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from harness import Emulator, Journeys, fresh_journeys
from stepexecutor.v1 import step_executor_pb2 as pb


def test_email_code_is_sent_and_the_challenge_described(journeys: Journeys) -> None:
    before = len(journeys.emulator.outbox("ada@example.com"))
    response, _ = journeys.generate("Ada@Example.com ")
    assert response.WhichOneof("outcome") == "success"
    success = response.success
    assert success.delivery_medium == pb.DELIVERY_MEDIUM_EMAIL
    assert success.masked_destination == "a***@e***"
    assert success.max_attempts == 3
    expires = success.expires_at.ToDatetime(UTC)
    assert timedelta(minutes=2) < expires - datetime.now(UTC) <= timedelta(minutes=3, seconds=5)
    messages = journeys.emulator.outbox("ada@example.com")
    assert len(messages) == before + 1
    assert messages[-1]["medium"] == "EMAIL"
    assert re.fullmatch(r"\d{8}", messages[-1]["code"])
    assert response.variables["otp_result"]["delivery_medium"] == "EMAIL"
    assert "otp_error" not in response.variables


def test_sms_code_is_sent_to_the_phone_in_e164(journeys: Journeys) -> None:
    before = len(journeys.emulator.outbox("+15555550101"))
    response, _ = journeys.generate("+1 555-555-0101", channel="SMS")
    assert response.WhichOneof("outcome") == "success", response
    assert response.success.delivery_medium == pb.DELIVERY_MEDIUM_SMS
    assert response.success.masked_destination.endswith("0101")
    assert len(journeys.emulator.outbox("+15555550101")) == before + 1


def test_a_national_number_uses_the_connections_default_region(journeys: Journeys) -> None:
    response, _ = journeys.generate("(555) 555-0101", channel="SMS")
    assert response.WhichOneof("outcome") == "success"


def test_an_invalid_identifier_takes_the_failure_branch_without_calling_cognito(journeys: Journeys) -> None:
    response, _ = journeys.generate("not an identifier")
    assert response.WhichOneof("outcome") == "failure"
    failure = response.failure
    assert failure.code == pb.FAILURE_CODE_INVALID_IDENTIFIER
    assert failure.category == pb.ERROR_CATEGORY_FLOW_LOGIC
    assert not failure.retryable
    assert response.variables["otp_error"]["code"] == "INVALID_IDENTIFIER"
    assert response.variables["otp_error"]["category"] == "FLOW_LOGIC"


def test_an_invalid_identifier_with_abort_gives_a_stranger_safe_error(journeys: Journeys) -> None:
    response, _ = journeys.generate("ada@@example", abort_on_failure=True)
    assert response.WhichOneof("outcome") == "abort"
    assert response.abort.client_error.code == "OTP_NOT_SENT"
    assert "example" not in response.abort.client_error.message
    assert response.abort.failure.code == pb.FAILURE_CODE_INVALID_IDENTIFIER
    assert response.variables["otp_error"]["code"] == "INVALID_IDENTIFIER"


def test_an_unknown_user_looks_like_a_sent_code_when_the_pool_hides_users(journeys: Journeys) -> None:
    response, journey = journeys.generate("nobody@example.com")
    assert response.WhichOneof("outcome") == "success"
    assert journeys.emulator.outbox("nobody@example.com") == []
    validated = journeys.validate(journey, "nobody@example.com", "12345678")
    assert validated.failure.code == pb.FAILURE_CODE_INVALID_CODE
    assert validated.failure.attempts_remaining == 2


def test_an_unknown_user_is_reported_when_enumeration_protection_is_off(journeys: Journeys) -> None:
    response, _ = journeys.generate("nobody@example.com", connection="legacy-open")
    assert response.failure.code == pb.FAILURE_CODE_USER_NOT_FOUND
    assert response.failure.cognito_error == "UserNotFoundException"


def test_enumeration_protection_hides_an_unknown_user_of_a_legacy_pool(journeys: Journeys) -> None:
    known, _ = journeys.generate("grace@example.com", connection="legacy-protected")
    unknown, journey = journeys.generate("nobody@example.com", connection="legacy-protected")
    assert unknown.WhichOneof("outcome") == known.WhichOneof("outcome") == "success"
    assert unknown.success.masked_destination == "n***@e***"
    codes = [
        journeys.validate(journey, "nobody@example.com", "12345678", connection="legacy-protected")
        for _ in range(3)
    ]
    assert [c.failure.code for c in codes] == [
        pb.FAILURE_CODE_INVALID_CODE,
        pb.FAILURE_CODE_INVALID_CODE,
        pb.FAILURE_CODE_ATTEMPTS_EXHAUSTED,
    ]
    assert [c.failure.attempts_remaining for c in codes] == [2, 1, 0]


def test_sms_for_a_user_without_a_phone_is_channel_not_available(journeys: Journeys) -> None:
    response, _ = journeys.generate("grace@example.com", channel="SMS", connection="legacy-open")
    assert response.failure.code == pb.FAILURE_CODE_CHANNEL_NOT_AVAILABLE
    assert response.failure.category == pb.ERROR_CATEGORY_FLOW_LOGIC
    assert "SMS_OTP" in response.failure.message


@pytest.mark.parametrize("abort", [False, True])
@pytest.mark.parametrize(
    ("identifier", "channel"),
    [("grace@example.com", "SMS"), ("edsger@example.com", "EMAIL"), ("hedy@example.com", "SMS")],
    ids=["no phone", "disabled", "unconfirmed, no phone"],
)
def test_enumeration_protection_makes_any_user_state_look_like_an_unknown_user(
    journeys: Journeys, identifier: str, channel: str, abort: bool
) -> None:
    known, journey = journeys.generate(identifier, channel=channel, abort_on_failure=abort)
    unknown, _ = journeys.generate("nobody@example.com", channel=channel, abort_on_failure=abort)
    assert known.WhichOneof("outcome") == unknown.WhichOneof("outcome") == "success"
    assert known.success.delivery_medium == unknown.success.delivery_medium
    validated = journeys.validate(journey, identifier, "12345678", abort_on_failure=abort)
    failure = validated.abort.failure if abort else validated.failure
    assert failure.code == pb.FAILURE_CODE_INVALID_CODE


def test_a_disabled_user_is_a_flow_failure(journeys: Journeys) -> None:
    response, _ = journeys.generate("edsger@example.com", connection="legacy-open")
    assert response.failure.code == pb.FAILURE_CODE_USER_DISABLED


def test_an_app_client_without_user_auth_is_a_configuration_failure(journeys: Journeys) -> None:
    response, _ = journeys.generate("ada@example.com", connection="no-user-auth")
    assert response.failure.code == pb.FAILURE_CODE_CONNECTION_MISCONFIGURED
    assert response.failure.category == pb.ERROR_CATEGORY_CONFIGURATION
    assert response.failure.cognito_error == "InvalidParameterException"


def test_a_wrong_client_secret_is_a_configuration_failure_naming_the_fix(journeys: Journeys) -> None:
    response, _ = journeys.generate("ada@example.com", connection="wrong-secret")
    assert response.failure.code == pb.FAILURE_CODE_CONNECTION_MISCONFIGURED
    assert response.failure.category == pb.ERROR_CATEGORY_CONFIGURATION
    assert "client secret" in response.failure.message
    assert "not-the-secret" not in response.failure.message
    assert journeys.emulator.seed.client_secret not in response.failure.message


def test_a_retried_execution_answers_again_without_a_second_code(journeys: Journeys) -> None:
    journey = journeys.journey(step_execution_id="exec-1")
    before = len(journeys.emulator.outbox("grace@example.com"))
    first, _ = journeys.generate("grace@example.com", journey=journey)
    again, _ = journeys.generate("grace@example.com", journey=journey)
    assert first.success == again.success
    assert len(journeys.emulator.outbox("grace@example.com")) == before + 1


def test_generate_again_within_the_cooldown_sends_nothing_and_says_when(journeys: Journeys) -> None:
    journey = journeys.journey()
    before = len(journeys.emulator.outbox("grace@example.com"))
    first, _ = journeys.generate("grace@example.com", journey=journey)
    again, _ = journeys.generate("grace@example.com", journey=journey)
    assert first.WhichOneof("outcome") == "success"
    assert again.failure.code == pb.FAILURE_CODE_RESEND_TOO_SOON
    assert again.failure.retryable
    assert 0 < again.failure.retry_after_seconds <= 30
    assert again.variables["otp_error"]["retry_after_seconds"] == again.failure.retry_after_seconds
    assert len(journeys.emulator.outbox("grace@example.com")) == before + 1
    aborted, _ = journeys.generate("grace@example.com", journey=journey, abort_on_failure=True)
    assert aborted.abort.client_error.code == "TRY_AGAIN_LATER"


def test_concurrent_retries_of_one_execution_send_one_code(journeys: Journeys) -> None:
    journey = journeys.journey(step_execution_id="exec-concurrent")
    before = len(journeys.emulator.outbox("ada@example.com"))
    journeys.emulator.inject(operation="InitiateAuth", latency_ms=300, count=6)
    with ThreadPoolExecutor(max_workers=6) as pool:
        results = list(pool.map(lambda _: journeys.generate("ada@example.com", journey=journey)[0], range(6)))
    # One of them sends; the others wait for it (their execution is in flight) and answer as it did.
    assert [r.WhichOneof("outcome") for r in results] == ["success"] * 6, results
    assert all(r.success == results[0].success for r in results)
    assert len(journeys.emulator.outbox("ada@example.com")) == before + 1


def test_codes_per_identifier_are_capped_across_journey_runs(journeys: Journeys) -> None:
    before = len(journeys.emulator.outbox("+15555550100"))
    results = [journeys.generate("+15555550100", channel="SMS", connection="send-cap")[0] for _ in range(3)]
    assert [r.WhichOneof("outcome") for r in results] == ["success", "success", "failure"]
    assert results[2].failure.code == pb.FAILURE_CODE_RESEND_TOO_SOON
    assert 59 <= results[2].failure.retry_after_seconds <= 60  # whole seconds left of the 60 s window
    assert len(journeys.emulator.outbox("+15555550100")) == before + 2


def test_an_unknown_phone_on_the_email_channel_gets_a_mask_a_real_user_could_get(journeys: Journeys) -> None:
    # The pool hides unknown users (PreventUserExistenceErrors = ENABLED): its phantom challenge makes up a
    # destination from the phone number ("+***@e***"); the service shows a plausible email mask instead.
    response, _ = journeys.generate("+15555550199", channel="EMAIL")
    assert response.WhichOneof("outcome") == "success"
    masked = response.success.masked_destination
    # Any initial a real address can have: letters or digits (the decoy draws digits too, rarely).
    assert re.fullmatch(r"[a-z0-9]\*{3}@[a-z0-9]\*{3}", masked), masked
    again, _ = journeys.generate("+15555550199", channel="EMAIL")
    assert again.success.masked_destination == masked  # stable per identifier, as a real user's is


@pytest.mark.parametrize(
    "number",
    ["+8821234567", "+97912345678", "+881612345678", "+19005550123"],
    ids=["international-network", "premium-international", "satellite", "us-premium-rate"],
)
def test_no_sms_goes_to_costly_or_non_geographic_numbers(journeys: Journeys, number: str) -> None:
    faults_before = journeys.emulator.outbox(number)
    response, _ = journeys.generate(number, channel="SMS")
    assert response.failure.code == pb.FAILURE_CODE_DESTINATION_NOT_ALLOWED
    assert response.failure.category == pb.ERROR_CATEGORY_FLOW_LOGIC and not response.failure.retryable
    assert journeys.emulator.outbox(number) == faults_before


def test_sms_countries_limit_where_codes_go(journeys: Journeys) -> None:
    refused, _ = journeys.generate("+15555550101", channel="SMS", connection="uk-sms")
    assert refused.failure.code == pb.FAILURE_CODE_DESTINATION_NOT_ALLOWED
    assert "US" in refused.failure.message
    # Email is not SMS: the same connection still sends codes by email.
    emailed, _ = journeys.generate("ada@example.com", connection="uk-sms")
    assert emailed.WhichOneof("outcome") == "success"


def test_the_spend_circuit_breaker_trips_across_identifiers(
    connections_file: Path, emulator: Emulator
) -> None:
    # "breaker": 3 codes per minute through the connection, whoever they go to (a service of its own).
    with fresh_journeys(connections_file, emulator) as journeys:
        identifiers = ["ada@example.com", "grace@example.com", "+15555550101", "ada@example.com"]
        answers = [
            journeys.generate(i, channel="SMS" if i.startswith("+") else "EMAIL", connection="breaker")[0]
            for i in identifiers
        ]
    assert [a.WhichOneof("outcome") for a in answers[:3]] == ["success"] * 3
    tripped = answers[3].failure
    assert tripped.code == pb.FAILURE_CODE_SEND_BUDGET_EXHAUSTED
    assert tripped.category == pb.ERROR_CATEGORY_SYSTEM and tripped.retryable
    assert 0 < tripped.retry_after_seconds <= 60


def test_each_tenant_spends_its_own_send_budget(connections_file: Path, emulator: Emulator) -> None:
    # "per-tenant": 2 codes per minute for each journey.tenant_id of the connection, whoever they go to.
    with fresh_journeys(connections_file, emulator) as journeys:

        def send(identifier: str, tenant: str) -> pb.GenerateOtpResponse:
            return journeys.generate(
                identifier, connection="per-tenant", journey=journeys.journey(tenant_id=tenant)
            )[0]

        acme = [send(i, "acme") for i in ("ada@example.com", "grace@example.com", "nobody@example.com")]
        other = send("nobody@example.com", "globex")
        untenanted = send("nobody@example.com", "")
    assert [a.WhichOneof("outcome") for a in acme[:2]] == ["success", "success"]
    assert acme[2].failure.code == pb.FAILURE_CODE_SEND_BUDGET_EXHAUSTED
    assert 0 < acme[2].failure.retry_after_seconds <= 60
    # Another tenant, and a journey naming none, are not held by acme's budget.
    assert other.WhichOneof("outcome") == untenanted.WhichOneof("outcome") == "success"


def test_too_many_codes_to_one_number_range_block_the_range(
    connections_file: Path, emulator: Emulator
) -> None:
    # "prefix-guard": 2 codes per hour by SMS to numbers sharing their first 7 digits (+1 555 555 ...), whoever
    # the numbers are (a service of its own: fresh counters). A number in another range is not affected.
    with fresh_journeys(connections_file, emulator) as journeys:
        same_range = ["+15555550101", "+15555550100", "+15555550177"]
        answers = [journeys.generate(n, channel="SMS", connection="prefix-guard")[0] for n in same_range]
        other_range, _ = journeys.generate("+12125550199", channel="SMS", connection="prefix-guard")
    assert [a.WhichOneof("outcome") for a in answers[:2]] == ["success", "success"]
    assert answers[2].failure.code == pb.FAILURE_CODE_SEND_BUDGET_EXHAUSTED
    assert answers[2].failure.retry_after_seconds > 0
    assert other_range.WhichOneof("outcome") == "success"  # an unknown user's decoy, counted in its own range


def test_codes_per_end_user_address_are_capped_across_identifiers(
    connections_file: Path, emulator: Emulator
) -> None:
    # "per-ip": 2 codes per hour for one journey.end_user.ip_address, whatever the identifiers.
    with fresh_journeys(connections_file, emulator) as journeys:
        answers = [
            journeys.generate(i, connection="per-ip", journey=journeys.journey(ip_address="203.0.113.7"))[0]
            for i in ("ada@example.com", "grace@example.com", "nobody@example.com")
        ]
        elsewhere, _ = journeys.generate(
            "nobody@example.com", connection="per-ip", journey=journeys.journey(ip_address="2001:db8::1")
        )
    assert [a.WhichOneof("outcome") for a in answers[:2]] == ["success", "success"]
    assert answers[2].failure.code == pb.FAILURE_CODE_SEND_BUDGET_EXHAUSTED
    assert elsewhere.WhichOneof("outcome") == "success"
