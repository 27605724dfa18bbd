"""The checks: each one exercises a few rules of :mod:`.rules` through a :class:`~.suite.ConformanceRun`.

Checks run in a fixed order and share the throw-away users set up first. A check that cannot run (a user
that could not be created, a code that never came, the per-user send limit) reports its rules as not
checked, saying why; the run goes on with the next check.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.request
from collections.abc import Callable
from typing import Any

import jwt

from .codes import CodeSourceError, OutboxCodeSource
from .pool import TestUser
from .rules import RULES, RuleResult, Verdict
from .suite import Answer, BudgetExhaustedError, ConformanceRun, SendLimitError

#: The reference's message [obs]; checked loosely (AWS may reword it).
_MISMATCH_MESSAGE = "Invalid code received for user"
_MASKED = re.compile(r"\*")


# ---- observations (redacted by construction) ------------------------------------------------------------
def describe(answer: Answer, what: str) -> str:
    """One line for the report: the call, then the error or the shape of the response."""
    if answer.error is not None:
        return f"{what} → {answer.error}: {answer.message}"
    response = answer.response or {}
    if "AuthenticationResult" in response:
        result = response["AuthenticationResult"]
        return (
            f"{what} → AuthenticationResult {{{', '.join(sorted(result))}}} "
            f"(ExpiresIn {result.get('ExpiresIn')}, TokenType {result.get('TokenType')})"
        )
    parts = [f"ChallengeName {answer.challenge}"]
    if answer.session:
        parts.append(f"Session of {len(answer.session)} chars")
    params = answer.parameters
    if "CODE_DELIVERY_DELIVERY_MEDIUM" in params:
        parts.append(f"medium {params['CODE_DELIVERY_DELIVERY_MEDIUM']}")
    if "CODE_DELIVERY_DESTINATION" in params:
        parts.append(f"destination {params['CODE_DELIVERY_DESTINATION']}")
    if "AvailableChallenges" in response:
        parts.append(f"AvailableChallenges {response['AvailableChallenges']}")
    return f"{what} → " + ", ".join(parts)


# ---- the checks ----------------------------------------------------------------------------------------
def run_checks(run: ConformanceRun) -> list[RuleResult]:
    """Set up users and clients, check every rule once, and return the results in catalogue order."""
    try:
        _set_up(run)
        for check, rule_ids in CHECKS:
            try:
                check(run)
            except SendLimitError as exc:
                for rule_id in rule_ids:
                    run.skip(rule_id, str(exc))
            except CodeSourceError as exc:
                for rule_id in rule_ids:
                    run.skip(rule_id, f"code source failed: {exc}")
    except BudgetExhaustedError as exc:
        for rule in RULES:
            if rule.id not in run.results:
                run.skip(rule.id, f"not reached: {exc}")
    return run.finish()


def _set_up(run: ConformanceRun) -> None:
    pool = run.pool
    pool.add_client("no-user-auth", ExplicitAuthFlows=["ALLOW_REFRESH_TOKEN_AUTH", "ALLOW_USER_SRP_AUTH"])
    user_auth = ["ALLOW_USER_AUTH", "ALLOW_REFRESH_TOKEN_AUTH"]
    pool.add_client("legacy", ExplicitAuthFlows=user_auth, PreventUserExistenceErrors="LEGACY")
    pool.add_client("enabled", ExplicitAuthFlows=user_auth, PreventUserExistenceErrors="ENABLED")
    pool.add_client("unset", ExplicitAuthFlows=user_auth)
    pool.add_user("main", email=run.email_for("main"))
    pool.add_user("single", email=run.email_for("single"), password=False)
    pool.add_user("disabled", email=run.email_for("disabled"), disabled=True)
    pool.add_user("no-factor", password=False)
    if run.phone_number:
        pool.add_user("phone", phone_number=run.phone_number)
    pool.sign_up_user("signed-up", run.email_for("signed-up"))


def _needs(run: ConformanceRun, rule_ids: tuple[str, ...], *names: str) -> bool:
    """True when the users / clients ``names`` exist; otherwise the rules are not checked, saying why."""
    missing = [n for n in names if n not in run.pool.users and n not in run.pool.extra_clients]
    if not missing:
        return True
    problems = ", ".join(f"{n}: {run.pool.setup_problems.get(n, 'not created')}" for n in missing)
    for rule_id in rule_ids:
        run.skip(rule_id, f"set-up failed ({problems})")
    return False


def _check_flow_and_secret(run: ConformanceRun) -> None:
    pool = run.pool
    if _needs(run, ("flow.requires_allow_user_auth",), "main", "no-user-auth"):
        answer = run.start(pool.users["main"], "EMAIL_OTP", pool.extra_clients["no-user-auth"])
        run.judge(
            "flow.requires_allow_user_auth",
            answer.error == "InvalidParameterException",
            [describe(answer, "InitiateAuth on a client without ALLOW_USER_AUTH")],
            "expected InvalidParameterException",
        )
    if pool.main_client.secret is None:
        run.skip("secret_hash.required", "the named app client has no secret")
    elif _needs(run, ("secret_hash.required",), "main"):
        main = pool.users["main"]
        missing = run.start(main, "EMAIL_OTP", secret_hash=False)
        wrong = run.start(main, "EMAIL_OTP", secret_hash="d3JvbmcgaGFzaA==")
        run.judge(
            "secret_hash.required",
            missing.error == "NotAuthorizedException" and wrong.error == "NotAuthorizedException",
            [
                describe(missing, "InitiateAuth without SECRET_HASH"),
                describe(wrong, "InitiateAuth, wrong SECRET_HASH"),
            ],
            "expected NotAuthorizedException for both",
        )


def _check_unknown_users(run: ConformanceRun) -> None:
    pool = run.pool
    nobody = f"otp-conformance-nobody-{secrets.token_hex(4)}"
    if _needs(run, ("unknown_user.legacy",), "legacy"):
        answer = run.start(nobody, "EMAIL_OTP", pool.extra_clients["legacy"])
        run.judge(
            "unknown_user.legacy",
            answer.error == "UserNotFoundException",
            [describe(answer, "InitiateAuth unknown user, LEGACY client")],
            "expected UserNotFoundException",
        )
    rules = ("unknown_user.enabled_phantom", "unknown_user.phantom_destination")
    if _needs(run, rules, "enabled"):
        enabled = pool.extra_clients["enabled"]
        started = run.start(nobody, "EMAIL_OTP", enabled)
        observed = [describe(started, "InitiateAuth unknown user, ENABLED client, EMAIL_OTP")]
        answered = None
        if started.challenge == "EMAIL_OTP":
            answered = run.respond(
                "EMAIL_OTP", started.session, nobody, enabled, EMAIL_OTP_CODE=run.wrong_code(None)
            )
            observed.append(describe(answered, "RespondToAuthChallenge with a code"))
        run.judge(
            "unknown_user.enabled_phantom",
            started.challenge == "EMAIL_OTP"
            and answered is not None
            and answered.error == "CodeMismatchException",
            observed,
            "expected an EMAIL_OTP challenge whose code is a CodeMismatchException",
        )
        destination = started.parameters.get("CODE_DELIVERY_DESTINATION", "")
        run.judge(
            "unknown_user.phantom_destination",
            bool(_MASKED.search(destination)) and "@" in destination,
            [f"CODE_DELIVERY_DESTINATION {destination!r} for USERNAME {nobody!r}"],
            "expected a masked email such as o***@e***",
        )
    if _needs(run, ("unknown_user.unset_setting",), "unset"):
        unset = pool.extra_clients["unset"]
        described = pool.describe_client(unset).get("PreventUserExistenceErrors")
        answer = run.start(nobody, "EMAIL_OTP", unset)
        observed = [
            f"DescribeUserPoolClient → PreventUserExistenceErrors {described!r}",
            describe(answer, "InitiateAuth unknown user, client created without the setting"),
        ]
        if answer.error == "UserNotFoundException":
            behaves = "LEGACY"
        elif answer.challenge:
            behaves = "ENABLED"
        else:
            run.record(
                "unknown_user.unset_setting", Verdict.FAILED, observed, "neither LEGACY nor ENABLED behaviour"
            )
            return
        run.judge(
            "unknown_user.unset_setting",
            behaves == run.expected.default_prevent_user_existence_errors,
            observed,
            f"behaves as {behaves}; the compared emulator settings say "
            f"{run.expected.default_prevent_user_existence_errors}",
            emulator_setting=f"default_prevent_user_existence_errors={behaves}",
            connection_setting="any: user_enumeration_protection (default true) hides UserNotFoundException",
        )


def _check_disabled_and_no_factor(run: ConformanceRun) -> None:
    if _needs(run, ("disabled_user.refused",), "disabled"):
        answer = run.start(run.pool.users["disabled"], "EMAIL_OTP")
        run.judge(
            "disabled_user.refused",
            answer.error == "NotAuthorizedException" and "disabled" in answer.message.lower(),
            [describe(answer, "InitiateAuth disabled user")],
            "expected NotAuthorizedException: User is disabled.",
        )
    if _needs(run, ("no_factor.invalid_parameter",), "no-factor"):
        answer = run.start(run.pool.users["no-factor"])
        observed = [describe(answer, "InitiateAuth user without email, phone or password")]
        available = (answer.response or {}).get("AvailableChallenges")
        if available == ["PASSWORD"]:
            run.skip(
                "no_factor.invalid_parameter",
                "the user got a temporary password from AdminCreateUser, so PASSWORD is a factor",
                observed,
            )
            return
        run.judge(
            "no_factor.invalid_parameter",
            answer.error == "InvalidParameterException",
            observed,
            "expected InvalidParameterException",
        )


def _check_email_sign_in(run: ConformanceRun) -> None:
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
    if not _needs(run, rules, "main"):
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
        and bool(_MASKED.search(params.get("CODE_DELIVERY_DESTINATION", "")))
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
        + ([] if _MISMATCH_MESSAGE in wrong.message else [f"message differs from {_MISMATCH_MESSAGE!r}"]),
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


def _check_selection_and_cap(run: ConformanceRun) -> None:
    rules = (
        "select_challenge.preferred_unavailable",
        "select_challenge.without_preference",
        "session.bound_to_client",
        "session.bound_to_challenge",
        "select_challenge.answer_sends_code",
        "attempt_cap.per_session",
    )
    if not _needs(run, rules, "main"):
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


def _check_single_factor(run: ConformanceRun) -> None:
    rules = ("single_factor.auto_select", "password.offered_only_with_password", "force_change_password.kept")
    if not _needs(run, rules, "single"):
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


def _check_sms(run: ConformanceRun) -> None:
    if not run.phone_number:
        run.skip("sms_otp.preferred_sends_code", "no --phone-number whose SMS the code source can read")
        return
    if run.pool.created_pool and run.emulator_control_url is None:
        run.skip(
            "sms_otp.preferred_sends_code", "a throw-away pool has no SNS role to send SMS: use a named pool"
        )
        return
    if not _needs(run, ("sms_otp.preferred_sends_code",), "phone"):
        return
    phone = run.pool.users["phone"]
    with run.sending_to(phone, "SMS") as new_code:
        started = run.start(phone, "SMS_OTP")
        code = new_code() if started.challenge == "SMS_OTP" else None
    observed = [describe(started, "InitiateAuth SMS_OTP"), "a code arrived" if code else "no code arrived"]
    signed_in = False
    if code:
        answer = run.respond("SMS_OTP", started.session, phone, SMS_OTP_CODE=code)
        signed_in = "AuthenticationResult" in (answer.response or {})
        observed.append(describe(answer, "RespondToAuthChallenge SMS_OTP_CODE"))
    run.judge(
        "sms_otp.preferred_sends_code",
        started.challenge == "SMS_OTP"
        and started.parameters.get("CODE_DELIVERY_DELIVERY_MEDIUM") == "SMS"
        and bool(_MASKED.search(started.parameters.get("CODE_DELIVERY_DESTINATION", "")))
        and signed_in,
        observed,
        "expected SMS_OTP, medium SMS, a masked phone, and a code that signs in",
    )


def _check_sign_up_confirmation(run: ConformanceRun) -> None:
    if not _needs(run, ("success.confirms_unconfirmed_user",), "signed-up"):
        return
    user = run.pool.users["signed-up"]
    before, _ = run.pool.user_status(user)
    with run.sending_to(user) as new_code:
        started = run.start(user, "EMAIL_OTP")
        code = new_code() if started.challenge == "EMAIL_OTP" else None
    observed = [f"status before {before}", describe(started, "InitiateAuth EMAIL_OTP")]
    if code is None:
        run.record(
            "success.confirms_unconfirmed_user", Verdict.FAILED, observed, "no code for the signed-up user"
        )
        return
    answer = run.respond("EMAIL_OTP", started.session, user, EMAIL_OTP_CODE=code)
    after, attributes = run.pool.user_status(user)
    observed += [
        describe(answer, "RespondToAuthChallenge, right code"),
        f"status after {after}, email_verified {attributes.get('email_verified')}",
    ]
    run.judge(
        "success.confirms_unconfirmed_user",
        before == "UNCONFIRMED" and after == "CONFIRMED" and attributes.get("email_verified") == "true",
        observed,
        "expected UNCONFIRMED → CONFIRMED with email_verified true",
    )


def _check_expiry(run: ConformanceRun) -> None:
    if not _needs(run, ("session.expires",), "main"):
        return
    main = run.pool.users["main"]
    if run.emulator_control_url is not None:
        # Our own emulator: shorten the lifetime for this one session instead of waiting 3 minutes.
        previous = run.expected.code_lifetime_seconds
        _post_settings(run.emulator_control_url, {"code_lifetime_seconds": 1})
        try:
            started = run.start(main)
        finally:
            _post_settings(run.emulator_control_url, {"code_lifetime_seconds": previous})
        wait, note = 1.5, "lifetime shortened to 1 s through the emulator's /_settings"
    elif run.limits.check_expiry:
        validity = int(run.pool.describe_client(run.pool.main_client).get("AuthSessionValidity") or 3)
        started = run.start(main)
        wait, note = validity * 60 + 10, f"waited out AuthSessionValidity ({validity} min)"
    else:
        run.skip("session.expires", "takes AuthSessionValidity (3+ minutes): run with --check-expiry")
        return
    # The run's time budget does not cover the wait it chose to make.
    run.budget.extend(wait)
    time.sleep(wait)
    answer = run.respond("SELECT_CHALLENGE", started.session, main, ANSWER="EMAIL_OTP")
    run.judge(
        "session.expires",
        answer.error == "NotAuthorizedException" and "expired" in answer.message,
        [describe(started, "InitiateAuth (no code sent)"), note, describe(answer, "RespondToAuthChallenge")],
        "expected NotAuthorizedException: ... session is expired.",
    )


def _post_settings(url: str, changes: dict[str, Any]) -> None:
    request = urllib.request.Request(  # noqa: S310 - the emulator's own URL
        f"{url}/_settings",
        data=json.dumps(changes).encode(),
        method="POST",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10):  # noqa: S310 - the emulator's own URL
        pass


#: Every check, in the order it runs, with the rules it decides. A check that stops early (a send limit, a
#: failing code source) leaves its undecided rules "not checked", with the reason.
CHECKS: tuple[tuple[Callable[[ConformanceRun], None], tuple[str, ...]], ...] = (
    (_check_flow_and_secret, ("flow.requires_allow_user_auth", "secret_hash.required")),
    (
        _check_unknown_users,
        (
            "unknown_user.legacy",
            "unknown_user.enabled_phantom",
            "unknown_user.phantom_destination",
            "unknown_user.unset_setting",
        ),
    ),
    (_check_disabled_and_no_factor, ("disabled_user.refused", "no_factor.invalid_parameter")),
    (
        _check_email_sign_in,
        (
            "email_otp.preferred_sends_code",
            "code.eight_digits",
            "message_template.used",
            "wrong_code.code_mismatch",
            "wrong_code.session_survives",
            "success.tokens",
            "success.id_token_verifies",
            "success.get_user",
            "session.single_use",
        ),
    ),
    (
        _check_selection_and_cap,
        (
            "select_challenge.preferred_unavailable",
            "select_challenge.without_preference",
            "session.bound_to_client",
            "session.bound_to_challenge",
            "select_challenge.answer_sends_code",
            "attempt_cap.per_session",
        ),
    ),
    (
        _check_single_factor,
        ("single_factor.auto_select", "password.offered_only_with_password", "force_change_password.kept"),
    ),
    (_check_sms, ("sms_otp.preferred_sends_code",)),
    (_check_sign_up_confirmation, ("success.confirms_unconfirmed_user",)),
    (_check_expiry, ("session.expires",)),
)
