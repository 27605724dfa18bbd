"""Cognito OTP Validate: check the typed code, and on success return what a JIT migration needs."""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from .branching import fail, succeed
from .challenges import (
    AttemptVerdict,
    Challenge,
    ChallengeKey,
    ChallengeStore,
    ChallengeStoreError,
    admit,
    identifier_subject,
    locked_failure,
)
from .claims import release_claims
from .cognito_failures import failure_for
from .deadline import Deadline
from .journey import ValidateRequest
from .outcomes import CognitoTokens, FailureCode, StepFailure, StepOutcome, ValidateSuccess
from .ports import CognitoError, CognitoErrorKind, Connection, TokenVerificationError

log = logging.getLogger(__name__)

# Cognito's passwordless codes are 8 digits [obs]; anything that is not 6 to 8 digits cannot be right, so it is
# judged here without a Cognito round trip (it still spends an attempt, like any wrong code).
_CODE_SHAPE = re.compile(r"[0-9]{6,8}")

# Errors Cognito answers before judging the code: the attempt is given back.
_UNJUDGED = frozenset(
    {CognitoErrorKind.THROTTLED, CognitoErrorKind.SECRET_INVALID, CognitoErrorKind.MISCONFIGURED}
)
# Errors after which the Cognito session is certainly unusable.
_SESSION_DEAD = frozenset(
    {CognitoErrorKind.SESSION_INVALID, CognitoErrorKind.CODE_EXPIRED, CognitoErrorKind.USER_DISABLED}
)
# JWT bookkeeping claims that are not user attributes (used when attributes fall back to the ID token).
_TOKEN_CLAIMS = frozenset(
    {"aud", "iss", "exp", "iat", "auth_time", "token_use", "event_id", "jti", "origin_jti", "nbf", "at_hash"}
)


class ValidateOtpStep:
    """Runs Validate: spend an attempt, answer Cognito's challenge, verify the ID token, release claims."""

    def __init__(self, store: ChallengeStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def run(
        self, request: ValidateRequest, connection: Connection, deadline: Deadline
    ) -> StepOutcome[ValidateSuccess]:
        """Execute the step; every failure becomes an outcome, never an exception."""
        step, policy = request.step, connection.policy

        def failed(failure: StepFailure) -> StepOutcome[Any]:
            return fail(step, failure, validating=True)

        admitted = admit(self._store, policy, step.user_identifier)
        if isinstance(admitted, StepFailure):
            return failed(admitted)
        identifier = admitted
        subject = identifier_subject(policy.name, identifier.value)

        key = ChallengeKey(policy.name, request.journey.journey_run_id, identifier.value)
        grant = self._store.begin_attempt(key, self._clock())
        if grant.verdict is AttemptVerdict.EXPIRED:
            return failed(StepFailure(FailureCode.CHALLENGE_EXPIRED, "the code expired; run Generate again"))
        if grant.verdict is AttemptVerdict.EXHAUSTED:
            return failed(
                StepFailure(FailureCode.ATTEMPTS_EXHAUSTED, "no attempts left; run Generate again", 0)
            )
        challenge = grant.challenge
        if grant.verdict is not AttemptVerdict.GRANTED or challenge is None:
            return failed(
                StepFailure(
                    FailureCode.CHALLENGE_NOT_FOUND,
                    "no pending challenge for this connection, journey run and identifier; run Generate first",
                )
            )

        # The identifier's failure counter goes up *before* Cognito judges the code, atomically, so concurrent
        # Validates can never judge more codes than the lockout allows; a right or unjudged code is forgiven.
        window = policy.lockout_window_seconds
        if self._store.count_event(subject, window) > policy.lockout_threshold:
            self._store.uncount_event(subject)
            self._store.refund_attempt(key, challenge.nonce)
            return failed(locked_failure(window))

        if challenge.decoy or not _CODE_SHAPE.fullmatch(request.otp_code.strip()):
            return failed(self._wrong_code(key, challenge, cognito_error=""))

        try:
            tokens = connection.gateway.answer_otp(
                challenge.username,
                challenge.session,
                challenge.channel,
                request.otp_code.strip(),
                request.journey.end_user,
                deadline,
            )
        except CognitoError as error:
            if error.kind is CognitoErrorKind.CODE_MISMATCH or (
                # The user vanished between the steps: with protection on, that is just a wrong code.
                error.kind is CognitoErrorKind.USER_NOT_FOUND and policy.user_enumeration_protection
            ):
                return failed(self._wrong_code(key, challenge, error.cognito_error))
            if error.kind in _UNJUDGED or not error.reached_cognito:
                self._store.uncount_event(subject)
                self._store.refund_attempt(key, challenge.nonce)
            elif error.kind in _SESSION_DEAD:
                self._store.uncount_event(subject)
                self._store.discard(key, challenge.nonce)
            # Otherwise (a read timeout, a 5xx, a dropped connection) Cognito may have judged the code: the
            # attempt and the failure stay counted, or an attacker could learn the code from later answers.
            return failed(failure_for(error))

        # The session is spent at Cognito: whatever happens next, the challenge is consumed. The user has
        # signed in, so a store failure here must not turn the success into an error: the entry expires anyway
        # and Cognito's session is single-use.
        try:
            self._store.uncount_event(subject)
            self._store.discard(key, challenge.nonce)
        except ChallengeStoreError as exc:
            log.warning("could not clear a used challenge (%s); it expires on its own", exc)
        try:
            claims = connection.verifier.verify(tokens.id_token)
        except TokenVerificationError as exc:
            return failed(
                StepFailure(FailureCode.INTERNAL, f"the ID token Cognito returned failed verification: {exc}")
            )
        attributes = self._attributes(challenge, tokens, claims, connection, deadline)
        success = ValidateSuccess(
            sub=str(claims.get("sub", "")),
            username=str(claims.get("cognito:username", challenge.username)),
            claims=release_claims(claims, step.effective_scopes),
            attributes=_select(attributes, connection.policy.migration_attributes),
            channel=challenge.channel,
            authenticated_at=datetime.fromtimestamp(float(claims.get("auth_time", self._clock())), UTC),
            tokens=tokens if connection.policy.return_tokens else None,
        )
        return succeed(step, success)

    def _wrong_code(self, key: ChallengeKey, challenge: Challenge, cognito_error: str) -> StepFailure:
        # The failure is already counted (before Cognito was asked); the attempt too.
        remaining = challenge.attempts_remaining
        if remaining <= 0:
            self._store.discard(key, challenge.nonce)
            return StepFailure(
                FailureCode.ATTEMPTS_EXHAUSTED,
                "the code is wrong and no attempts are left; run Generate again",
                0,
                cognito_error,
            )
        return StepFailure(
            FailureCode.INVALID_CODE,
            f"the code is wrong; {remaining} attempt{'s' if remaining != 1 else ''} left",
            remaining,
            cognito_error,
        )

    @staticmethod
    def _attributes(
        challenge: Challenge,
        tokens: CognitoTokens,
        claims: Mapping[str, Any],
        connection: Connection,
        deadline: Deadline,
    ) -> dict[str, str]:
        try:
            return connection.gateway.user_attributes(challenge.username, tokens, deadline)
        except CognitoError as error:
            # The user has authenticated and the session is spent; failing the step now would strand them.
            # The verified ID token carries every readable attribute, so it stands in for GetUser.
            log.warning(
                "user attributes unavailable (%s); using the verified ID token's claims instead",
                error.cognito_error,
            )
            return {
                name: str(value).lower() if isinstance(value, bool) else str(value)
                for name, value in claims.items()
                if name not in _TOKEN_CLAIMS and not name.startswith("cognito:")
            }


def _select(attributes: Mapping[str, str], wanted: tuple[str, ...]) -> dict[str, str]:
    """The attributes the connection releases for migration ("*" = all)."""
    if "*" in wanted:
        return dict(attributes)
    return {name: value for name, value in attributes.items() if name in wanted}
