"""The sign-in checks: a code by email end to end, its message and tokens, challenge selection and the
attempt cap, single-factor users."""

from __future__ import annotations

import json
import re
import urllib.request

import jwt

from .codes import OutboxCodeSource
from .observations import MASKED, MISMATCH_MESSAGE, describe, needs
from .pool import TestUser
from .suite import Answer, ConformanceRun


def check_email_sign_in(run: ConformanceRun) -> None:
    rules = (
        "email_otp.preferred_sends_code",
        "code.eight_digits",
        "wrong_code.code_mismatch",
        "wrong_code.session_survives",
        "success.tokens",
        "success.id_token_verifies",
        "success.get_user",
        "session.single_use",
        "message_template.used",
    )
    if not needs(run, rules, "main"):
        return
    main = run.pool.users["main"]
    with run.sending_to(main) as new_code:
        started = run.start(main, "EMAIL_OTP")
        code = new_code() if started.challenge == "EMAIL_OTP" else None
    params = started.parameters
    run.judge(
        "email_otp.preferred_sends_code",
        started.challenge == "EMAIL_OTP"
        and 20 <= len(started.session) <= 2048
        and params.get("CODE_DELIVERY_DELIVERY_MEDIUM") == "EMAIL"
        and bool(MASKED.search(params.get("CODE_DELIVERY_DESTINATION", "")))
        and code is not None,
        [
            describe(started, "InitiateAuth EMAIL_OTP"),
            "a code arrived" if code else "no code arrived in time",
        ],
        "expected EMAIL_OTP, a 20-2048 character Session, medium EMAIL, a masked destination and a code",
    )
    if code is None:
        for rule_id in rules[1:]:
            run.skip(rule_id, "no code arrived")
        return
    run.judge(
        "code.eight_digits",
        bool(re.fullmatch(r"\d{8}", code)),
        [f"the code has {len(code)} digits"],
        "expected 8",
    )
    _check_message_template(run, main)

    wrong = run.respond("EMAIL_OTP", started.session, main, EMAIL_OTP_CODE=run.wrong_code(code))
    run.judge(
        "wrong_code.code_mismatch",
        wrong.error == "CodeMismatchException",
        [describe(wrong, "RespondToAuthChallenge, wrong code")]
        + ([] if MISMATCH_MESSAGE in wrong.message else [f"message differs from {MISMATCH_MESSAGE!r}"]),
        "expected CodeMismatchException",
    )
    right = run.respond("EMAIL_OTP", started.session, main, EMAIL_OTP_CODE=code)
    survived = right.response is not None and "AuthenticationResult" in right.response
    observed = [describe(right, "RespondToAuthChallenge, same Session, right code after one wrong code")]
    expected_survives = run.expected.attempt_cap >= 2
    run.judge(
        "wrong_code.session_survives",
        survived == expected_survives,
        observed,
        f"the session {'survived' if survived else 'died'}; the compared emulator has attempt_cap="
        f"{run.expected.attempt_cap}",
        emulator_setting="attempt_cap>=2 (see attempt_cap.per_session)" if survived else "attempt_cap=1",
        connection_setting="max_attempts as measured by attempt_cap.per_session"
        if survived
        else "max_attempts = 1",
    )
    session, answer = started.session, right
    if not survived:
        # The session died with the wrong code: one more sign-in, straight to the right code.
        with run.sending_to(main) as new_code:
            again = run.start(main, "EMAIL_OTP")
            code = new_code() if again.challenge == "EMAIL_OTP" else None
        if code is None:
            for rule_id in (
                "success.tokens",
                "success.id_token_verifies",
                "success.get_user",
                "session.single_use",
            ):
                run.skip(rule_id, "the second sign-in sent no code")
            return
        session = again.session
        answer = run.respond("EMAIL_OTP", session, main, EMAIL_OTP_CODE=code)
    _check_tokens(run, answer)
    replay = run.respond("EMAIL_OTP", session, main, EMAIL_OTP_CODE=code)
    run.judge(
        "session.single_use",
        replay.error == "NotAuthorizedException",
        [describe(replay, "RespondToAuthChallenge again on the used Session")],
        "expected NotAuthorizedException",
    )


def _check_message_template(run: ConformanceRun, user: TestUser) -> None:
    if not isinstance(run.codes, OutboxCodeSource) or not run.pool.created_pool:
        run.skip(
            "message_template.used", "needs the emulator outbox (message text) and a pool the suite created"
        )
        return
    text = run.codes.latest_message(user.email or "", "EMAIL") or ""
    run.judge(
        "message_template.used",
        text.startswith("Your conformance sign-in code is "),
        [
            "the message starts with the pool's VerificationMessageTemplate.EmailMessage"
            if text.startswith("Your conformance sign-in code is ")
            else "the message is not the pool's template"
        ],
        "expected the pool's VerificationMessageTemplate.EmailMessage",
    )


def _check_tokens(run: ConformanceRun, answer: Answer) -> None:
    result = (answer.response or {}).get("AuthenticationResult") or {}
    observed = [describe(answer, "RespondToAuthChallenge, right code")]
    run.judge(
        "success.tokens",
        {"AccessToken", "IdToken", "RefreshToken"} <= set(result)
        and result.get("ExpiresIn") == 3600
        and result.get("TokenType") == "Bearer",
        observed,
        "expected AccessToken, IdToken, RefreshToken, ExpiresIn 3600, TokenType Bearer",
    )
    if not result:
        run.skip("success.id_token_verifies", "no tokens")
        run.skip("success.get_user", "no tokens")
        return
    pool = run.pool
    try:
        header = jwt.get_unverified_header(result["IdToken"])
        with urllib.request.urlopen(pool.jwks_url, timeout=10) as response:  # noqa: S310 - pool's JWKS
            keys = jwt.PyJWKSet.from_dict(json.loads(response.read()))
        key = next(k for k in keys.keys if k.key_id == header.get("kid"))
        claims = jwt.decode(
            result["IdToken"],
            key.key,
            algorithms=["RS256"],
            audience=pool.main_client.client_id,
            issuer=pool.issuer,
        )
        ok = header.get("alg") == "RS256" and claims.get("token_use") == "id"
        token_note = (
            f"ID token alg {header.get('alg')}, kid present, verified against the JWKS; "
            f"token_use {claims.get('token_use')!r}, aud = client id, iss = {pool.issuer}"
        )
    except (jwt.PyJWTError, StopIteration, OSError, ValueError, KeyError) as exc:
        ok, token_note = False, f"ID token did not verify: {type(exc).__name__}"
    run.judge(
        "success.id_token_verifies", ok, [token_note], "expected an RS256 ID token verifying against the JWKS"
    )
    got = run.call("get_user", AccessToken=result["AccessToken"])
    names = sorted(a["Name"] for a in (got.response or {}).get("UserAttributes", []))
    run.judge(
        "success.get_user",
        got.response is not None and "email" in names,
        [f"GetUser → attributes {names}" if got.response is not None else describe(got, "GetUser")],
        "expected the user's attributes, email among them",
    )


def check_selection_and_cap(run: ConformanceRun) -> None:
    rules = (
        "select_challenge.preferred_unavailable",
        "select_challenge.without_preference",
        "session.bound_to_client",
        "session.bound_to_challenge",
        "select_challenge.answer_sends_code",
        "attempt_cap.per_session",
    )
    if not needs(run, rules, "main"):
        return
    main = run.pool.users["main"]
    unavailable = run.start(main, "SMS_OTP")  # the main user has no phone number
    run.judge(
        "select_challenge.preferred_unavailable",
        unavailable.challenge == "SELECT_CHALLENGE",
        [describe(unavailable, "InitiateAuth SMS_OTP for a user without a phone number")],
        "expected SELECT_CHALLENGE",
    )
    chosen = run.start(main)
    available = list((chosen.response or {}).get("AvailableChallenges") or [])
    run.judge(
        "select_challenge.without_preference",
        chosen.challenge == "SELECT_CHALLENGE" and "EMAIL_OTP" in available and len(available) >= 2,
        [describe(chosen, "InitiateAuth without PREFERRED_CHALLENGE (user with email and password)")],
        "expected SELECT_CHALLENGE with EMAIL_OTP among several AvailableChallenges",
    )
    run.main_available = available if chosen.challenge == "SELECT_CHALLENGE" else None
    if chosen.challenge != "SELECT_CHALLENGE":
        for rule_id in rules[2:]:
            run.skip(rule_id, "no SELECT_CHALLENGE session to work with")
        return
    session = chosen.session
    if "enabled" in run.pool.extra_clients:
        other = run.respond(
            "SELECT_CHALLENGE", session, main, run.pool.extra_clients["enabled"], ANSWER="EMAIL_OTP"
        )
        run.judge(
            "session.bound_to_client",
            other.error is not None,
            [describe(other, "RespondToAuthChallenge with another app client")],
            "another app client could answer the session",
        )
    else:
        run.skip("session.bound_to_client", "set-up failed (enabled client)")
    mismatched = run.respond("EMAIL_OTP", session, main, EMAIL_OTP_CODE=run.wrong_code(None))
    with run.sending_to(main) as new_code:
        selected = run.respond("SELECT_CHALLENGE", session, main, ANSWER="EMAIL_OTP")
        code = new_code() if selected.challenge == "EMAIL_OTP" else None
    intact = selected.challenge == "EMAIL_OTP"
    run.judge(
        "session.bound_to_challenge",
        mismatched.error == "InvalidParameterException" and intact,
        [
            describe(mismatched, "RespondToAuthChallenge EMAIL_OTP on a SELECT_CHALLENGE session"),
            "the session still answered SELECT_CHALLENGE afterwards"
            if intact
            else "the session was gone afterwards",
        ],
        "expected InvalidParameterException and the session intact",
    )
    run.judge(
        "select_challenge.answer_sends_code",
        intact
        and selected.session not in ("", session)
        and "AvailableChallenges" not in (selected.response or {})
        and code is not None,
        [
            describe(selected, "RespondToAuthChallenge SELECT_CHALLENGE ANSWER=EMAIL_OTP"),
            "a code arrived" if code else "no code arrived",
        ],
        "expected EMAIL_OTP, a new Session, no AvailableChallenges, and a code",
    )
    if not intact or code is None:
        run.skip("attempt_cap.per_session", "no EMAIL_OTP session to measure")
        return
    _measure_attempt_cap(run, main, selected.session, code)


def _measure_attempt_cap(run: ConformanceRun, user: TestUser, session: str, code: str) -> None:
    mismatches, observed = 0, []
    refused: Answer | None = None
    for n in range(run.limits.max_wrong_codes):
        answer = run.respond("EMAIL_OTP", session, user, EMAIL_OTP_CODE=run.wrong_code(code, n + 1))
        if answer.error == "CodeMismatchException":
            mismatches += 1
            continue
        refused = answer
        break
    observed.append(f"{mismatches} wrong codes answered CodeMismatchException")
    if refused is not None:
        observed.append(describe(refused, f"wrong code {mismatches + 1}"))
    right = run.respond("EMAIL_OTP", session, user, EMAIL_OTP_CODE=code)
    observed.append(describe(right, "then the right code"))
    dead = right.error == "NotAuthorizedException"
    cap = run.expected.attempt_cap
    if refused is None and not dead:
        # Every wrong code was a mismatch and the session still lives: the cap is above what we tried.
        limit = run.limits.max_wrong_codes
        run.judge(
            "attempt_cap.per_session",
            cap > limit,
            observed,
            f"more than {limit} wrong codes per session; the compared emulator has attempt_cap={cap}",
            emulator_setting=f"attempt_cap>{limit}",
            connection_setting=f"max_attempts = {min(limit, 10)} (or lower)",
        )
        return
    ok = refused is not None and refused.error == "NotAuthorizedException" and dead and mismatches == cap
    run.judge(
        "attempt_cap.per_session",
        ok,
        observed,
        f"the session died after {mismatches} wrong codes; the compared emulator has attempt_cap={cap}",
        emulator_setting=f"attempt_cap={max(mismatches, 1)}",
        connection_setting=f"max_attempts = {min(max(mismatches, 1), 10)}",
    )


def check_single_factor(run: ConformanceRun) -> None:
    rules = ("single_factor.auto_select", "password.offered_only_with_password", "force_change_password.kept")
    if not needs(run, rules, "single"):
        return
    single = run.pool.users["single"]
    with run.sending_to(single) as new_code:
        started = run.start(single)
        code = new_code() if started.challenge == "EMAIL_OTP" else None
    observed = [describe(started, "InitiateAuth without PREFERRED_CHALLENGE, user with an email only")]
    available = list((started.response or {}).get("AvailableChallenges") or [])
    if started.challenge == "EMAIL_OTP":
        auto = True
    elif started.challenge == "SELECT_CHALLENGE" and available == ["EMAIL_OTP"]:
        auto = False
        run.codes_sent[single.username] -= 1  # nothing was sent
    else:
        run.codes_sent[single.username] -= 1
        run.skip("single_factor.auto_select", "the user has more than one factor here", observed)
        auto = None
    if auto is not None:
        run.judge(
            "single_factor.auto_select",
            auto == run.expected.auto_select_single_factor,
            observed,
            f"auto-selected={auto}; the compared emulator has auto_select_single_factor="
            f"{run.expected.auto_select_single_factor}",
            emulator_setting=f"auto_select_single_factor={str(auto).lower()}",
            connection_setting="none: the service always sends PREFERRED_CHALLENGE and reports "
            "CHANNEL_NOT_AVAILABLE when Cognito answers another OTP",
        )
    main_available = run.main_available
    if auto:
        run.skip(
            "password.offered_only_with_password",
            "the single-factor user was signed in straight away",
            observed,
        )
    elif main_available is not None and started.challenge == "SELECT_CHALLENGE":
        with_password = "PASSWORD" in main_available
        without = "PASSWORD" not in available
        run.judge(
            "password.offered_only_with_password",
            with_password and without,
            [
                f"user with a password: AvailableChallenges {main_available}",
                f"user without one: AvailableChallenges {available}",
            ],
            "PASSWORD offered to a user without a (permanent) password, or not to one with it",
        )
    else:
        run.skip("password.offered_only_with_password", "no AvailableChallenges to compare")
    # An OTP sign-in of the FORCE_CHANGE_PASSWORD user (AdminCreateUser without a permanent password).
    if code is None:
        with run.sending_to(single) as new_code:
            started = run.start(single, "EMAIL_OTP")
            code = new_code() if started.challenge == "EMAIL_OTP" else None
    if code is None:
        run.skip("force_change_password.kept", "no code for the FORCE_CHANGE_PASSWORD user")
        return
    before, _ = run.pool.user_status(single)
    answer = run.respond("EMAIL_OTP", started.session, single, EMAIL_OTP_CODE=code)
    after, _ = run.pool.user_status(single)
    signed_in = "AuthenticationResult" in (answer.response or {})
    run.judge(
        "force_change_password.kept",
        signed_in and before == after == "FORCE_CHANGE_PASSWORD",
        [
            f"status before {before}",
            describe(answer, "RespondToAuthChallenge, right code"),
            f"status after {after}",
        ],
        "expected a sign-in that leaves FORCE_CHANGE_PASSWORD",
    )
