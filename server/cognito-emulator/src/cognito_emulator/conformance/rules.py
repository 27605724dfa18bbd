"""The rules the emulator implements, as the conformance suite checks them, and what a check concluded.

Each rule carries the mark the emulator's code gives it (docs, "USER_AUTH as emulated"): ``[doc]`` (AWS states it),
``[obs]`` (seen in real responses, not promised) or ``[inferred]`` (our best reading). An inferred rule also
names the emulator knob it depends on and the service connection setting that must agree with it, so a run
against a real pool says how to configure both.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Literal

Mark = Literal["doc", "obs", "inferred"]


class Verdict(enum.Enum):
    """What a check concluded about one rule."""

    PASSED = "passed"
    FAILED = "failed"
    NOT_CHECKED = "not checked"


@dataclass(frozen=True)
class Rule:
    """One rule of the emulator, as the reference states it."""

    id: str
    mark: Mark
    statement: str
    knob: str | None = None
    """For inferred rules: the :class:`~cognito_emulator.EmulatorSettings` field that models it, if any."""


@dataclass
class RuleResult:
    """The outcome of checking one rule against one endpoint.

    ``observed`` holds what the endpoint answered, already redacted: error names and messages, challenge
    names, masked destinations, lengths — never a code, session, secret or token.
    """

    rule: Rule
    verdict: Verdict
    observed: list[str] = field(default_factory=list)
    reason: str = ""
    emulator_setting: str | None = None
    """For inferred rules: the knob value that matches what was observed, e.g. ``attempt_cap=1``."""
    connection_setting: str | None = None
    """For inferred rules: the service connection setting that matches, e.g. ``max_attempts = 1``."""

    def to_json(self) -> dict[str, Any]:
        """The result as a JSON-ready dict."""
        return {
            "id": self.rule.id,
            "mark": self.rule.mark,
            "statement": self.rule.statement,
            "verdict": self.verdict.value,
            "observed": list(self.observed),
            "reason": self.reason,
            "knob": self.rule.knob,
            "emulator_setting": self.emulator_setting,
            "connection_setting": self.connection_setting,
        }


def _rule(rule_id: str, mark: Mark, statement: str, knob: str | None = None) -> Rule:
    return Rule(rule_id, mark, statement, knob)


#: Every rule, in the order the report lists them (the order of the reference).
RULES: tuple[Rule, ...] = (
    _rule(
        "flow.requires_allow_user_auth",
        "doc",
        "An app client without ALLOW_USER_AUTH refuses USER_AUTH with InvalidParameterException.",
    ),
    _rule(
        "secret_hash.required",
        "doc",
        "A client with a secret refuses USER_AUTH without SECRET_HASH, or with a wrong one: NotAuthorizedException.",
    ),
    _rule(
        "email_otp.preferred_sends_code",
        "doc",
        "PREFERRED_CHALLENGE=EMAIL_OTP sends a code: ChallengeName EMAIL_OTP, a Session of 20-2048 characters, "
        "CODE_DELIVERY_DELIVERY_MEDIUM EMAIL and a masked CODE_DELIVERY_DESTINATION.",
    ),
    _rule("code.eight_digits", "obs", "Passwordless sign-in codes have 8 digits."),
    _rule(
        "sms_otp.preferred_sends_code",
        "doc",
        "PREFERRED_CHALLENGE=SMS_OTP sends a code by SMS: ChallengeName SMS_OTP, medium SMS, a masked phone.",
    ),
    _rule(
        "select_challenge.without_preference",
        "doc",
        "No PREFERRED_CHALLENGE (user with more than one factor) gives SELECT_CHALLENGE with AvailableChallenges.",
    ),
    _rule(
        "select_challenge.preferred_unavailable",
        "doc",
        "A preferred factor the user cannot use gives SELECT_CHALLENGE, not an error.",
    ),
    _rule(
        "select_challenge.answer_sends_code",
        "doc",
        "Answering SELECT_CHALLENGE with ANSWER=EMAIL_OTP sends the code and returns EMAIL_OTP with a new "
        "Session and no AvailableChallenges.",
    ),
    _rule(
        "success.tokens",
        "doc",
        "The right code returns AuthenticationResult {AccessToken, IdToken, RefreshToken, ExpiresIn 3600, "
        "TokenType Bearer}.",
    ),
    _rule(
        "success.id_token_verifies",
        "doc",
        "The ID token is an RS256 JWT with a kid that verifies against {issuer}/.well-known/jwks.json, with "
        "aud = the client id, iss = https://cognito-idp.{region}.amazonaws.com/{poolId}, token_use = id.",
    ),
    _rule("success.get_user", "doc", "GetUser with the access token returns the user's attributes."),
    _rule(
        "success.confirms_unconfirmed_user",
        "doc",
        "An OTP sign-in of an UNCONFIRMED (signed-up) user confirms them and verifies the email.",
    ),
    _rule(
        "wrong_code.code_mismatch",
        "obs",
        'A wrong code is answered CodeMismatchException ("Invalid code received for user"), no new Session.',
    ),
    _rule(
        "wrong_code.session_survives",
        "inferred",
        "After one wrong code the same Session still accepts the right code (some SDK users report "
        "NotAuthorizedException instead).",
        knob="attempt_cap",
    ),
    _rule(
        "attempt_cap.per_session",
        "inferred",
        "A session takes a fixed number of wrong codes, each a CodeMismatchException; then it is dead and even "
        "the right code gets NotAuthorizedException.",
        knob="attempt_cap",
    ),
    _rule(
        "session.single_use",
        "obs",
        "A session that signed in cannot be answered again: NotAuthorizedException.",
    ),
    _rule(
        "session.expires",
        "doc",
        "After the app client's AuthSessionValidity the session (and its code) is refused: "
        'NotAuthorizedException ("... session is expired.").',
    ),
    _rule(
        "session.bound_to_challenge",
        "inferred",
        "Answering a different challenge than the session's gives InvalidParameterException and leaves the "
        "session usable.",
    ),
    _rule(
        "session.bound_to_client",
        "inferred",
        "A session answers only the app client that started it.",
    ),
    _rule(
        "unknown_user.legacy",
        "doc",
        "PreventUserExistenceErrors=LEGACY: an unknown user gets UserNotFoundException.",
    ),
    _rule(
        "unknown_user.enabled_phantom",
        "doc",
        "PreventUserExistenceErrors=ENABLED: an unknown user gets a plausible EMAIL_OTP challenge, and every "
        "code is a CodeMismatchException.",
    ),
    _rule(
        "unknown_user.phantom_destination",
        "inferred",
        "The phantom challenge's CODE_DELIVERY_DESTINATION looks like a real masked one.",
    ),
    _rule(
        "unknown_user.unset_setting",
        "inferred",
        "An app client created without PreventUserExistenceErrors behaves as LEGACY.",
        knob="default_prevent_user_existence_errors",
    ),
    _rule(
        "disabled_user.refused",
        "doc",
        'A disabled user gets NotAuthorizedException ("User is disabled.").',
    ),
    _rule(
        "single_factor.auto_select",
        "inferred",
        "Without PREFERRED_CHALLENGE, a user whose only factor is one OTP gets SELECT_CHALLENGE (real pools "
        "were seen to send that OTP straight away).",
        knob="auto_select_single_factor",
    ),
    _rule(
        "password.offered_only_with_password",
        "inferred",
        "PASSWORD is offered only to users who have a password.",
    ),
    _rule(
        "no_factor.invalid_parameter",
        "inferred",
        "A user with no usable first factor gets InvalidParameterException.",
    ),
    _rule(
        "force_change_password.kept",
        "inferred",
        "An OTP sign-in leaves a FORCE_CHANGE_PASSWORD user in that state (only UNCONFIRMED is confirmed).",
    ),
    _rule(
        "message_template.used",
        "inferred",
        "The pool's message template carries passwordless codes.",
    ),
)

RULES_BY_ID: dict[str, Rule] = {rule.id: rule for rule in RULES}
