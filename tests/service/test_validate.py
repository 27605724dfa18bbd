"""Cognito OTP Validate: codes, attempts, expiry, isolation, and what a JIT migration receives."""

from __future__ import annotations

import time

import jwt
import pytest
from harness import Journeys, wrong_code
from stepexecutor.v1 import step_executor_pb2 as pb


def _send(journeys: Journeys, identifier: str, destination: str, channel: str = "EMAIL", **kwargs: object):
    before = len(journeys.emulator.outbox(destination))
    response, journey = journeys.generate(identifier, channel=channel, **kwargs)  # type: ignore[arg-type]
    assert response.WhichOneof("outcome") == "success", response
    return journey, journeys.emulator.latest_code(destination, after=before)


def test_the_right_email_code_returns_verified_claims_and_attributes(journeys: Journeys) -> None:
    journey, code = _send(journeys, "ada@example.com", "ada@example.com")
    response = journeys.validate(journey, "ada@example.com", code)
    assert response.WhichOneof("outcome") == "success", response
    success = response.success
    assert success.username == "ada"
    assert success.sub
    assert success.verified_medium == pb.DELIVERY_MEDIUM_EMAIL
    claims = dict(success.claims)
    # Default scopes: openid profile email.
    assert claims["sub"] == success.sub
    assert claims["email"] == "ada@example.com"
    assert claims["given_name"] == "Ada"
    assert "phone_number" not in claims
    assert success.attributes["email"] == "ada@example.com"
    assert success.attributes["phone_number"] == "+15555550100"
    assert success.attributes["sub"] == success.sub
    assert not success.HasField("tokens")
    assert response.variables["otp_result"]["sub"] == success.sub
    user = journeys.emulator.admin().admin_get_user(
        UserPoolId=journeys.emulator.seed.user_pool_id, Username="ada"
    )
    assert {a["Name"]: a["Value"] for a in user["UserAttributes"]}["sub"] == success.sub


def test_the_right_sms_code_releases_only_the_requested_scopes(journeys: Journeys) -> None:
    journey, code = _send(journeys, "+15555550101", "+15555550101", channel="SMS")
    response = journeys.validate(journey, "+15555550101", code, scopes=["openid", "phone"])
    assert response.WhichOneof("outcome") == "success", response
    claims = dict(response.success.claims)
    assert set(claims) == {"sub", "phone_number", "phone_number_verified"}
    assert claims["phone_number_verified"] is True
    assert response.success.verified_medium == pb.DELIVERY_MEDIUM_SMS


def test_a_wrong_code_leaves_two_attempts_and_the_right_one_still_works(journeys: Journeys) -> None:
    journey, code = _send(journeys, "grace@example.com", "grace@example.com")
    wrong = journeys.validate(journey, "grace@example.com", "00000000" if code != "00000000" else "11111111")
    assert wrong.failure.code == pb.FAILURE_CODE_INVALID_CODE
    assert wrong.failure.attempts_remaining == 2
    # Under enumeration protection (this connection) a wrong code names no Cognito error: a decoy, which makes
    # no Cognito call, carries the same fields.
    assert wrong.failure.cognito_error == ""
    assert wrong.variables["otp_error"]["attempts_remaining"] == 2
    right = journeys.validate(journey, "grace@example.com", code)
    assert right.WhichOneof("outcome") == "success"


def test_the_last_wrong_code_exhausts_the_challenge(journeys: Journeys) -> None:
    journey, code = _send(journeys, "grace@example.com", "grace@example.com")
    wrong = wrong_code(code)
    results = [journeys.validate(journey, "grace@example.com", wrong) for _ in range(3)]
    assert [r.failure.code for r in results] == [
        pb.FAILURE_CODE_INVALID_CODE,
        pb.FAILURE_CODE_INVALID_CODE,
        pb.FAILURE_CODE_ATTEMPTS_EXHAUSTED,
    ]
    after = journeys.validate(journey, "grace@example.com", code)
    assert after.failure.code == pb.FAILURE_CODE_CHALLENGE_NOT_FOUND


def test_the_connections_attempt_cap_applies(journeys: Journeys) -> None:
    journey, code = _send(journeys, "grace@example.com", "grace@example.com", connection="two-attempts")
    wrong = wrong_code(code)
    first = journeys.validate(journey, "grace@example.com", wrong, connection="two-attempts")
    second = journeys.validate(journey, "grace@example.com", wrong, connection="two-attempts")
    assert first.failure.attempts_remaining == 1
    assert second.failure.code == pb.FAILURE_CODE_ATTEMPTS_EXHAUSTED


def test_a_malformed_code_is_wrong_without_asking_cognito(journeys: Journeys) -> None:
    journey, code = _send(journeys, "grace@example.com", "grace@example.com")
    response = journeys.validate(journey, "grace@example.com", "abc")
    assert response.failure.code == pb.FAILURE_CODE_INVALID_CODE
    assert response.failure.cognito_error == ""
    assert journeys.validate(journey, "grace@example.com", code).WhichOneof("outcome") == "success"


def test_an_expired_challenge_is_reported_as_expired(journeys: Journeys) -> None:
    before = len(journeys.emulator.outbox("grace@example.com"))
    sent, journey = journeys.generate("grace@example.com", connection="short")
    code = journeys.emulator.latest_code("grace@example.com", after=before)
    expires_at = sent.success.expires_at.seconds + sent.success.expires_at.nanos / 1e9
    deadline = time.monotonic() + 5
    while time.time() <= expires_at:  # the 'short' connection's challenges live one second
        assert time.monotonic() < deadline, "the challenge never expired"
        time.sleep(0.05)
    response = journeys.validate(journey, "grace@example.com", code, connection="short")
    assert response.failure.code == pb.FAILURE_CODE_CHALLENGE_EXPIRED
    assert not response.failure.retryable


def test_validate_without_generate_finds_no_challenge(journeys: Journeys) -> None:
    response = journeys.validate(journeys.journey(), "ada@example.com", "12345678")
    assert response.failure.code == pb.FAILURE_CODE_CHALLENGE_NOT_FOUND
    assert response.failure.category == pb.ERROR_CATEGORY_FLOW_LOGIC


def test_a_used_challenge_cannot_be_replayed(journeys: Journeys) -> None:
    journey, code = _send(journeys, "ada@example.com", "ada@example.com")
    assert journeys.validate(journey, "ada@example.com", code).WhichOneof("outcome") == "success"
    replay = journeys.validate(journey, "ada@example.com", code)
    assert replay.failure.code == pb.FAILURE_CODE_CHALLENGE_NOT_FOUND


def test_two_concurrent_journeys_of_one_user_are_kept_apart(journeys: Journeys) -> None:
    first, first_code = _send(journeys, "ada@example.com", "ada@example.com")
    second, second_code = _send(journeys, "ada@example.com", "ada@example.com")
    assert first.run_id != second.run_id
    if first_code != second_code:
        crossed = journeys.validate(second, "ada@example.com", first_code)
        assert crossed.failure.code == pb.FAILURE_CODE_INVALID_CODE
    assert journeys.validate(first, "ada@example.com", first_code).WhichOneof("outcome") == "success"
    assert journeys.validate(second, "ada@example.com", second_code).WhichOneof("outcome") == "success"


def test_tokens_are_returned_only_when_the_connection_allows_it(journeys: Journeys) -> None:
    journey, code = _send(journeys, "ada@example.com", "ada@example.com", connection="tokens")
    response = journeys.validate(journey, "ada@example.com", code, connection="tokens")
    tokens = response.success.tokens
    assert tokens.token_type == "Bearer"
    claims = jwt.decode(tokens.id_token, options={"verify_signature": False})
    assert claims["sub"] == response.success.sub
    assert claims["token_use"] == "id"


def test_the_admin_api_connection_runs_the_same_journey(journeys: Journeys) -> None:
    journey, code = _send(journeys, "+15555550101", "+15555550101", channel="SMS", connection="admin")
    response = journeys.validate(journey, "+15555550101", code, connection="admin")
    assert response.WhichOneof("outcome") == "success", response
    assert response.success.attributes["phone_number"] == "+15555550101"


@pytest.mark.parametrize("abort", [False, True])
def test_wrong_codes_across_journeys_lock_the_identifier(journeys: Journeys, abort: bool) -> None:
    # Two users: ada's email and phone are aliases of one user, who shares one lockout (tests/security).
    identifier = "grace@example.com" if abort else "+15555550100"
    channel = "EMAIL" if abort else "SMS"
    for _ in range(2):
        journey, code = _send(journeys, identifier, identifier, channel=channel, connection="lockout")
        wrong = wrong_code(code)
        for _ in range(2):
            journeys.validate(journey, identifier, wrong, connection="lockout")
    response, _ = journeys.generate(identifier, channel=channel, connection="lockout", abort_on_failure=abort)
    failure = response.abort.failure if abort else response.failure
    assert failure.code == pb.FAILURE_CODE_IDENTIFIER_LOCKED
    if abort:
        assert response.abort.client_error.code == "TRY_AGAIN_LATER"


def test_without_protection_a_wrong_code_names_cognitos_error(journeys: Journeys) -> None:
    before = len(journeys.emulator.outbox("grace@example.com"))
    sent, journey = journeys.generate("grace@example.com", connection="legacy-open")
    assert sent.WhichOneof("outcome") == "success"
    code = journeys.emulator.latest_code("grace@example.com", after=before)
    wrong = journeys.validate(journey, "grace@example.com", wrong_code(code), connection="legacy-open")
    assert (wrong.failure.code, wrong.failure.cognito_error) == (
        pb.FAILURE_CODE_INVALID_CODE,
        "CodeMismatchException",
    )


def test_a_user_disabled_between_the_steps_looks_like_a_wrong_code_under_protection(
    journeys: Journeys,
) -> None:
    admin = journeys.emulator.admin()
    pool = journeys.emulator.seed.user_pool_id
    journey, code = _send(journeys, "grace@example.com", "grace@example.com")
    admin.admin_disable_user(UserPoolId=pool, Username="grace")
    try:
        disabled = journeys.validate(journey, "grace@example.com", code)
    finally:
        admin.admin_enable_user(UserPoolId=pool, Username="grace")
    assert disabled.failure.code == pb.FAILURE_CODE_INVALID_CODE
    assert disabled.failure.attempts_remaining == 2
    assert disabled.failure.cognito_error == ""
