"""The checks: each one exercises a few rules of :mod:`.rules` through a :class:`~.suite.ConformanceRun`.

Checks run in a fixed order and share the throw-away users set up first. A check that cannot run (a user
that could not be created, a code that never came, the per-user send limit) reports its rules as not
checked, saying why; the run goes on with the next check.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable

from .codes import CodeSourceError
from .observations import MASKED, describe, needs, post_settings
from .rules import RULES, RuleResult, Verdict
from .sign_in_checks import check_email_sign_in, check_selection_and_cap, check_single_factor
from .suite import BudgetExhaustedError, ConformanceRun, SendLimitError


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


def _check_flow_and_secret(run: ConformanceRun) -> None:
    pool = run.pool
    if needs(run, ("flow.requires_allow_user_auth",), "main", "no-user-auth"):
        answer = run.start(pool.users["main"], "EMAIL_OTP", pool.extra_clients["no-user-auth"])
        run.judge(
            "flow.requires_allow_user_auth",
            answer.error == "InvalidParameterException",
            [describe(answer, "InitiateAuth on a client without ALLOW_USER_AUTH")],
            "expected InvalidParameterException",
        )
    if pool.main_client.secret is None:
        run.skip("secret_hash.required", "the named app client has no secret")
    elif needs(run, ("secret_hash.required",), "main"):
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
    if needs(run, ("unknown_user.legacy",), "legacy"):
        answer = run.start(nobody, "EMAIL_OTP", pool.extra_clients["legacy"])
        run.judge(
            "unknown_user.legacy",
            answer.error == "UserNotFoundException",
            [describe(answer, "InitiateAuth unknown user, LEGACY client")],
            "expected UserNotFoundException",
        )
    rules = ("unknown_user.enabled_phantom", "unknown_user.phantom_destination")
    if needs(run, rules, "enabled"):
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
            bool(MASKED.search(destination)) and "@" in destination,
            [f"CODE_DELIVERY_DESTINATION {destination!r} for USERNAME {nobody!r}"],
            "expected a masked email such as o***@e***",
        )
    if needs(run, ("unknown_user.unset_setting",), "unset"):
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
    if needs(run, ("disabled_user.refused",), "disabled"):
        answer = run.start(run.pool.users["disabled"], "EMAIL_OTP")
        run.judge(
            "disabled_user.refused",
            answer.error == "NotAuthorizedException" and "disabled" in answer.message.lower(),
            [describe(answer, "InitiateAuth disabled user")],
            "expected NotAuthorizedException: User is disabled.",
        )
    if needs(run, ("no_factor.invalid_parameter",), "no-factor"):
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


def _check_sms(run: ConformanceRun) -> None:
    if not run.phone_number:
        run.skip("sms_otp.preferred_sends_code", "no --phone-number whose SMS the code source can read")
        return
    if run.pool.created_pool and run.emulator_control_url is None:
        run.skip(
            "sms_otp.preferred_sends_code", "a throw-away pool has no SNS role to send SMS: use a named pool"
        )
        return
    if not needs(run, ("sms_otp.preferred_sends_code",), "phone"):
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
        and bool(MASKED.search(started.parameters.get("CODE_DELIVERY_DESTINATION", "")))
        and signed_in,
        observed,
        "expected SMS_OTP, medium SMS, a masked phone, and a code that signs in",
    )


def _check_sign_up_confirmation(run: ConformanceRun) -> None:
    if not needs(run, ("success.confirms_unconfirmed_user",), "signed-up"):
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
    if not needs(run, ("session.expires",), "main"):
        return
    main = run.pool.users["main"]
    if run.emulator_control_url is not None:
        # Our own emulator: shorten the lifetime for this one session instead of waiting 3 minutes.
        previous = run.expected.code_lifetime_seconds
        post_settings(run.emulator_control_url, {"code_lifetime_seconds": 1})
        try:
            started = run.start(main)
        finally:
            post_settings(run.emulator_control_url, {"code_lifetime_seconds": previous})
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
        check_email_sign_in,
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
        check_selection_and_cap,
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
        check_single_factor,
        ("single_factor.auto_select", "password.offered_only_with_password", "force_change_password.kept"),
    ),
    (_check_sms, ("sms_otp.preferred_sends_code",)),
    (_check_sign_up_confirmation, ("success.confirms_unconfirmed_user",)),
    (_check_expiry, ("session.expires",)),
)
