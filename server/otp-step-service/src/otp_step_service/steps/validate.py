"""Cognito OTP Validate: check the typed code, and on success return what a JIT migration needs."""

from __future__ import annotations

import asyncio
import logging
import random
import re
from collections import deque
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from .branching import fail, succeed
from .challenges import (
    AttemptRequest,
    AttemptVerdict,
    Challenge,
    ChallengeKey,
    Judgement,
    lockout_subject,
    user_lockout_subjects,
)
from .claims import release_claims
from .clock import SYSTEM_CLOCK, Clock
from .cognito_failures import failure_for
from .deadline import Deadline
from .errors import ChallengeStoreError, TokenVerificationError
from .generate import locked_failure
from .identifiers import InvalidIdentifierError, parse_identifier
from .journey import ValidateRequest
from .model import CognitoError, CognitoErrorKind, CognitoRequests
from .outcomes import CodeVerified, CognitoTokens, FailureCode, StepFailure, StepOutcome
from .ports import ChallengeStore, Connection

log = logging.getLogger(__name__)

# Cognito's passwordless codes are 8 digits [obs]; anything that is not 6 to 8 digits cannot be right, so it is
# judged here without a Cognito round trip (it still spends an attempt, like any wrong code).
_CODE_SHAPE = re.compile(r"[0-9]{6,8}")

# Errors after which the Cognito session is certainly unusable.
_SESSION_DEAD = frozenset(
    {CognitoErrorKind.SESSION_INVALID, CognitoErrorKind.CODE_EXPIRED, CognitoErrorKind.USER_DISABLED}
)
# Account states an outsider could probe for at Validate; enumeration protection answers them as wrong codes.
_USER_STATE = frozenset(
    {
        CognitoErrorKind.USER_NOT_FOUND,
        CognitoErrorKind.USER_DISABLED,
        CognitoErrorKind.USER_NOT_READY,
        CognitoErrorKind.NOT_AUTHORIZED,
    }
)
# JWT bookkeeping claims that are not user attributes (used when attributes fall back to the ID token).
_TOKEN_CLAIMS = frozenset(
    {"aud", "iss", "exp", "iat", "auth_time", "token_use", "event_id", "jti", "origin_jti", "nbf", "at_hash"}
)


class WrongCodeLatency:
    """How long Cognito takes to judge a code, per connection, so a decoy's wrong code takes as long.

    A decoy is judged without a Cognito call; answered at once it would tell an unknown user from a real one
    by timing alone (~1 ms against ~4 ms on the emulator, 100+ ms on AWS). So the decoy waits a duration drawn
    from the connection's recent real judgements: the same distribution, whatever it is today.
    """

    # Before any real judgement was seen: a typical Cognito round trip [obs: 200-300 ms warm on AWS].
    PRIOR_SECONDS = 0.2

    def __init__(self, keep: int = 256) -> None:
        self._keep = keep
        self._seen: dict[str, deque[float]] = {}
        self.oversleep = 0.0
        """How much longer than asked a decoy's sleep recently took (an exponential average, seconds)."""

    def observe(self, connection: str, seconds: float) -> None:
        """A real judgement took `seconds`."""
        self._seen.setdefault(connection, deque(maxlen=self._keep)).append(seconds)

    def slept(self, asked: float, took: float) -> None:
        """A decoy's sleep of `asked` seconds took `took`: update the average overshoot."""
        self.oversleep += 0.5 * (max(took - asked, 0.0) - self.oversleep)

    def draw(self, connection: str) -> float:
        """A duration for a decoy's judgement."""
        seen = self._seen.get(connection)
        # Not for security: which past duration is replayed only has to follow their distribution.
        return seen[random.randrange(len(seen))] if seen else self.PRIOR_SECONDS


class ValidateOtpStep:
    """Runs Validate: spend an attempt, answer Cognito's challenge, verify the ID token, release claims."""

    def __init__(
        self, store: ChallengeStore, clock: Clock = SYSTEM_CLOCK, latency: WrongCodeLatency | None = None
    ) -> None:
        self._store = store
        self._clock = clock
        self._latency = latency or WrongCodeLatency()

    async def run(
        self, request: ValidateRequest, connection: Connection, deadline: Deadline
    ) -> StepOutcome[CodeVerified]:
        """Execute the step; every failure becomes an outcome, never an exception."""
        step, policy = request.step, connection.policy

        def failed(failure: StepFailure) -> StepOutcome[CodeVerified]:
            return fail(step, failure, validating=True)

        try:
            identifier = parse_identifier(step.user_identifier, policy.default_phone_region)
        except InvalidIdentifierError as exc:
            return failed(StepFailure(FailureCode.INVALID_IDENTIFIER, str(exc)))
        subject = lockout_subject(policy.name, identifier.value)
        key = ChallengeKey(policy.name, request.journey.journey_run_id, identifier.value)
        # The attempt and the identifier's wrong-code count are spent *before* Cognito judges the code, in one
        # atomic operation, so concurrent Validates can never judge more codes than either cap allows; a right
        # or unjudged code is given back afterwards.
        grant = await self._store.begin_attempt(
            AttemptRequest(
                key, self._clock.now(), subject, policy.lockout_threshold, policy.lockout_window_seconds
            )
        )
        challenge = grant.challenge
        match grant.verdict:
            case AttemptVerdict.LOCKED:
                return failed(locked_failure(policy.lockout_window_seconds))
            case AttemptVerdict.EXPIRED:
                return failed(
                    StepFailure(FailureCode.CHALLENGE_EXPIRED, "the code expired; run Generate again")
                )
            case AttemptVerdict.EXHAUSTED:
                return failed(
                    StepFailure(FailureCode.ATTEMPTS_EXHAUSTED, "no attempts left; run Generate again", 0)
                )
            case AttemptVerdict.GRANTED if challenge is not None:
                pass
            case _:
                return failed(
                    StepFailure(
                        FailureCode.CHALLENGE_NOT_FOUND,
                        "no pending challenge for this connection, journey run and identifier; run Generate first",
                    )
                )

        # Wrong codes count against the identifier and against the Cognito user it reached, so aliases of one
        # user (email, phone, username) share one lockout.
        subjects = user_lockout_subjects(subject, challenge)
        code = request.otp_code.strip()
        if challenge.decoy and _CODE_SHAPE.fullmatch(code):
            await self._as_long_as_cognito(policy.name, deadline)
        if challenge.decoy or not _CODE_SHAPE.fullmatch(code):
            return failed(
                await self._wrong_code(
                    key, challenge, subjects, "", protected=policy.user_enumeration_protection
                )
            )

        requests = CognitoRequests()
        asked = self._clock.monotonic()
        try:
            tokens = await connection.gateway.answer_otp(
                challenge.username,
                challenge.session,
                challenge.channel,
                code,
                request.journey.end_user,
                deadline,
                requests,
            )
        except CognitoError as error:
            hidden = policy.user_enumeration_protection and error.kind in _USER_STATE
            if hidden:
                # The user vanished, was disabled or refused between the steps: with protection on that is
                # just a wrong code, as for anyone else. Operators see the real reason here.
                log.info(
                    "enumeration protection: answered %s at Validate as a wrong code", error.cognito_error
                )
            if error.kind is CognitoErrorKind.CODE_MISMATCH:
                self._latency.observe(policy.name, self._clock.monotonic() - asked)
            if error.kind is CognitoErrorKind.CODE_MISMATCH or hidden:
                return failed(
                    await self._wrong_code(
                        key,
                        challenge,
                        subjects,
                        error.cognito_error,
                        protected=policy.user_enumeration_protection,
                    )
                )
            if error.kind in _SESSION_DEAD:
                judgement = Judgement.SESSION_DEAD
            elif error.certainly_not_acted:
                judgement = Judgement.UNJUDGED
            else:
                # A read timeout, a 5xx, a dropped connection: Cognito may have judged the code, so the attempt
                # stays spent (or later answers could tell an attacker which code was judged).
                judgement = Judgement.UNKNOWN
            await self._store.finish_attempt(key, challenge.nonce, judgement, subjects)
            if (
                error.kind is CognitoErrorKind.SESSION_INVALID
                and challenge.attempts_used > 1
                and "expired" not in error.detail.lower()  # "... session is expired." is an expiry [obs]
            ):
                # Cognito ended a live session after a wrong code [inferred: its cap per session is not
                # published]: the truthful answer is "no attempts left", and the connection promises more
                # than the pool allows.
                log.warning(
                    "Cognito ended a session after %d earlier code(s): the pool's attempt cap is below "
                    "max_attempts = %d (make conformance measures it), or an earlier answer that never "
                    "arrived was right",
                    challenge.attempts_used - 1,
                    challenge.max_attempts,
                )
                return failed(
                    StepFailure(
                        FailureCode.ATTEMPTS_EXHAUSTED,
                        "Cognito accepts no more codes for this challenge; run Generate again",
                        0,
                        error.cognito_error,
                    )
                )
            return failed(failure_for(error))
        except BaseException:
            # The caller went away mid-call (or a bug surfaced): a code that reached Cognito may have been
            # judged, so it counts. A store failure here is logged, not raised over the cancellation.
            judgement = Judgement.UNKNOWN if requests.sent else Judgement.UNJUDGED
            try:
                await asyncio.shield(self._store.finish_attempt(key, challenge.nonce, judgement, subjects))
            except ChallengeStoreError as exc:
                log.warning("could not settle a cancelled Validate (%s); its attempt stays spent", exc)
            raise

        # The session is spent at Cognito: whatever happens next, the challenge is consumed. The user has
        # signed in, so a store failure here must not turn the success into an error: the entry expires anyway
        # and Cognito's session is single-use.
        try:
            await self._store.finish_attempt(key, challenge.nonce, Judgement.RIGHT, subjects)
        except ChallengeStoreError as exc:
            log.warning("could not clear a used challenge (%s); it expires on its own", exc)
        try:
            claims = await connection.verifier.verify(tokens.id_token)
        except TokenVerificationError as exc:
            return failed(
                StepFailure(FailureCode.INTERNAL, f"the ID token Cognito returned failed verification: {exc}")
            )
        attributes = await self._attributes(challenge, tokens, claims, connection, deadline)
        verified = CodeVerified(
            sub=str(claims.get("sub", "")),
            username=str(claims.get("cognito:username", challenge.username)),
            claims=release_claims(claims, step.effective_scopes),
            attributes=_select(attributes, connection.policy.migration_attributes),
            channel=challenge.channel,
            authenticated_at=datetime.fromtimestamp(float(claims.get("auth_time", self._clock.now())), UTC),
            tokens=tokens if connection.policy.return_tokens else None,
        )
        return succeed(step, verified)

    async def _wrong_code(
        self,
        key: ChallengeKey,
        challenge: Challenge,
        subjects: tuple[str, ...],
        cognito_error: str,
        *,
        protected: bool,
    ) -> StepFailure:
        # The wrong code is already counted (before Cognito was asked), the attempt too: the store needs telling
        # only when the challenge is now exhausted. Under enumeration protection the failure names no Cognito
        # error: a decoy (no Cognito call) and a real user (CodeMismatchException) must carry the same fields.
        if protected:
            cognito_error = ""
        remaining = challenge.attempts_remaining
        if remaining <= 0:
            await self._store.finish_attempt(key, challenge.nonce, Judgement.WRONG, subjects)
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

    async def _as_long_as_cognito(self, connection: str, deadline: Deadline) -> None:
        """Wait as long as a real judgement would (never past the caller's deadline)."""
        wait = self._latency.draw(connection)
        left = deadline.remaining()
        if left is not None:
            wait = min(wait, max(left - 0.05, 0.0))
        # A real judgement's duration already includes the time this process took to get back to it once
        # Cognito answered; a sleep adds its own wake-up delay on top (milliseconds on a busy machine), so the
        # decoy asks for that much less (the recent average overshoot of its sleeps).
        wait -= self._latency.oversleep
        if wait > 0:
            asked = self._clock.monotonic()
            await asyncio.sleep(wait)
            self._latency.slept(wait, self._clock.monotonic() - asked)

    @staticmethod
    async def _attributes(
        challenge: Challenge,
        tokens: CognitoTokens,
        claims: Mapping[str, Any],
        connection: Connection,
        deadline: Deadline,
    ) -> dict[str, str]:
        try:
            return await connection.gateway.user_attributes(challenge.username, tokens, deadline)
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
