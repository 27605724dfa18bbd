"""Cognito OTP Validate: check the typed code, and on success return what a JIT migration needs."""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any

from .branching import fail, protected, succeed
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
from .errors import ChallengeStoreError, StoreUnavailableError, TokenVerificationError
from .generate import locked_failure
from .identifiers import InvalidIdentifierError, parse_identifier
from .journey import StepConfiguration, ValidateRequest
from .latency import CognitoLatency, Operation
from .model import CognitoError, CognitoErrorKind, CognitoRequests, ConnectionPolicy
from .outcomes import CodeVerified, CognitoTokens, FailureCode, StepFailure, StepOutcome
from .ports import ChallengeStore, Connection
from .settling import settle

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


@dataclass(frozen=True, slots=True)
class _Attempt:
    """A Validate holding one granted attempt at its challenge: what the later phases work on."""

    step: StepConfiguration
    policy: ConnectionPolicy
    key: ChallengeKey
    challenge: Challenge
    # Wrong codes count against the identifier and against the Cognito user it reached, so aliases of one
    # user (email, phone, username) share one lockout.
    subjects: tuple[str, ...]
    code: str
    deadline: Deadline

    def failed(self, failure: StepFailure) -> StepOutcome[CodeVerified]:
        return fail(self.step, protected(failure, self.policy), validating=True)


class ValidateOtpStep:
    """Runs Validate: spend an attempt, answer Cognito's challenge, verify the ID token, release claims.

    The story of `run`: admit the request (the identifier), take an attempt from the store (the attempt and
    the identifier's wrong-code count spent before any judgement, atomically), judge the code (a decoy's and
    a malformed one here, as long as Cognito would take; a real one by Cognito), and on success record the
    used challenge and build what the journey gets.

    A store failure before an attempt is granted raises StoreUnavailableError (nothing was judged: the step
    did not run); recording an exhausted challenge is tried again within the deadline (`settling`)."""

    def __init__(
        self, store: ChallengeStore, clock: Clock = SYSTEM_CLOCK, latency: CognitoLatency | None = None
    ) -> None:
        self._store = store
        self._clock = clock
        self._latency = latency or CognitoLatency(clock=clock)

    async def run(
        self, request: ValidateRequest, connection: Connection, deadline: Deadline
    ) -> StepOutcome[CodeVerified]:
        """Execute the step; every failure of a step that ran becomes an outcome (StepNotRunError: it did not)."""
        attempt = await self._take_attempt(request, connection.policy, deadline)
        if not isinstance(attempt, _Attempt):
            return attempt
        if attempt.challenge.decoy or not _CODE_SHAPE.fullmatch(attempt.code):
            return attempt.failed(await self._judge_here(attempt, deadline))
        judged = await self._judge_by_cognito(attempt, request, connection, deadline)
        if isinstance(judged, StepFailure):
            return attempt.failed(judged)
        return await self._signed_in(attempt, judged, connection, deadline)

    async def _take_attempt(
        self, request: ValidateRequest, policy: ConnectionPolicy, deadline: Deadline
    ) -> _Attempt | StepOutcome[CodeVerified]:
        """Parse the identifier, then spend one attempt and one wrong code before anything is judged.

        In one atomic operation, so concurrent Validates can never judge more codes than either cap allows;
        a right or unjudged code is given back afterwards."""
        step = request.step

        def failed(failure: StepFailure) -> StepOutcome[CodeVerified]:
            return fail(step, failure, validating=True)

        try:
            identifier = parse_identifier(step.user_identifier, policy.default_phone_region)
        except InvalidIdentifierError as exc:
            return failed(StepFailure(FailureCode.INVALID_IDENTIFIER, str(exc)))
        subject = lockout_subject(policy.name, identifier.value)
        key = ChallengeKey(policy.name, request.journey.journey_run_id, identifier.value)
        try:
            grant = await self._store.begin_attempt(
                AttemptRequest(
                    key,
                    self._clock.now(),
                    subject,
                    policy.lockout_threshold,
                    policy.lockout_window_seconds,
                    hide_user_lockout=policy.user_enumeration_protection,
                )
            )
        except ChallengeStoreError as exc:
            raise StoreUnavailableError(exc) from exc
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
                subjects = user_lockout_subjects(subject, challenge)
                return _Attempt(step, policy, key, challenge, subjects, request.otp_code.strip(), deadline)
            case AttemptVerdict.USER_LOCKED if challenge is not None:
                # The user is locked out through another alias; saying so here would tell an outsider that
                # this identifier reaches them. So the code is wrong, as a decoy's is: judged here, as long
                # as Cognito would take, never by Cognito (a locked user's codes are not judged at all).
                log.info(
                    "enumeration protection: a lockout earned through another alias answered as a wrong code"
                )
                decoy = replace(challenge, decoy=True)
                return _Attempt(step, policy, key, decoy, (subject,), request.otp_code.strip(), deadline)
            case _:
                return failed(
                    StepFailure(
                        FailureCode.CHALLENGE_NOT_FOUND,
                        "no pending challenge for this connection, journey run and identifier; run Generate first",
                    )
                )

    async def _judge_here(self, attempt: _Attempt, deadline: Deadline) -> StepFailure:
        """A decoy's code, or one that cannot be right (not 6 to 8 digits): wrong, without asking Cognito.
        A well-formed code for a decoy takes as long as Cognito's judgement of a wrong one would."""
        if attempt.challenge.decoy and _CODE_SHAPE.fullmatch(attempt.code):
            await self._latency.as_long_as_cognito(attempt.policy.name, Operation.JUDGE, deadline)
        return await self._wrong_code(attempt, "")

    async def _judge_by_cognito(
        self, attempt: _Attempt, request: ValidateRequest, connection: Connection, deadline: Deadline
    ) -> CognitoTokens | StepFailure:
        """Answer Cognito's challenge with the code: its tokens, or the failure to answer the journey with."""
        policy, challenge = attempt.policy, attempt.challenge
        requests = CognitoRequests()
        asked = self._clock.monotonic()
        try:
            return await connection.gateway.answer_otp(
                challenge.username,
                challenge.session,
                challenge.channel,
                attempt.code,
                request.journey.end_user,
                deadline,
                requests,
            )
        except CognitoError as error:
            if error.kind is CognitoErrorKind.CODE_MISMATCH:
                self._latency.observe(policy.name, Operation.JUDGE, self._clock.monotonic() - asked)
            return await self._refused(attempt, error)
        except BaseException:
            # The caller went away mid-call (or a bug surfaced): a code that reached Cognito may have been
            # judged, so it counts. A store failure here is logged, not raised over the cancellation.
            judgement = Judgement.UNKNOWN if requests.sent else Judgement.UNJUDGED
            try:
                await asyncio.shield(
                    self._store.finish_attempt(attempt.key, challenge.nonce, judgement, attempt.subjects)
                )
            except ChallengeStoreError as exc:
                log.warning("could not settle a cancelled Validate (%s); its attempt stays spent", exc)
            raise

    async def _refused(self, attempt: _Attempt, error: CognitoError) -> StepFailure:
        """What Cognito's refusal of a code means for the store and the journey."""
        policy, challenge = attempt.policy, attempt.challenge
        hidden = policy.user_enumeration_protection and error.kind in _USER_STATE
        if hidden:
            # The user vanished, was disabled or refused between the steps: with protection on that is just a
            # wrong code, as for anyone else. Operators see the real reason here.
            log.info("enumeration protection: answered %s at Validate as a wrong code", error.cognito_error)
        if error.kind is CognitoErrorKind.CODE_MISMATCH or hidden:
            return await self._wrong_code(attempt, error.cognito_error)
        if error.kind in _SESSION_DEAD:
            judgement = Judgement.SESSION_DEAD
        elif error.certainly_not_acted:
            judgement = Judgement.UNJUDGED
        else:
            # A read timeout, a 5xx, a dropped connection: Cognito may have judged the code, so the attempt
            # stays spent (or later answers could tell an attacker which code was judged).
            judgement = Judgement.UNKNOWN
        await self._store.finish_attempt(attempt.key, challenge.nonce, judgement, attempt.subjects)
        if (
            error.kind is CognitoErrorKind.SESSION_INVALID
            and challenge.attempts_used > 1
            and "expired" not in error.detail.lower()  # "... session is expired." is an expiry [obs]
        ):
            # Cognito ended a live session after a wrong code [inferred: its cap per session is not
            # published]: the truthful answer is "no attempts left", and the connection promises more than
            # the pool allows (connections refuse max_attempts above the declared pool cap).
            log.warning(
                "Cognito ended a session after %d earlier code(s): the pool's attempt cap is below "
                "max_attempts = %d (make conformance measures it; declare it as pool_max_attempts), or an "
                "earlier answer that never arrived was right",
                challenge.attempts_used - 1,
                challenge.max_attempts,
            )
            return StepFailure(
                FailureCode.ATTEMPTS_EXHAUSTED,
                "Cognito accepts no more codes for this challenge; run Generate again",
                0,
                "" if policy.user_enumeration_protection else error.cognito_error,
            )
        return failure_for(error)

    async def _signed_in(
        self, attempt: _Attempt, tokens: CognitoTokens, connection: Connection, deadline: Deadline
    ) -> StepOutcome[CodeVerified]:
        """Record the used challenge, verify the ID token and build what the journey gets."""
        challenge = attempt.challenge
        # The session is spent at Cognito: whatever happens next, the challenge is consumed. The user has
        # signed in, so a store failure here must not turn the success into an error: the entry expires anyway
        # and Cognito's session is single-use.
        try:
            await self._store.finish_attempt(attempt.key, challenge.nonce, Judgement.RIGHT, attempt.subjects)
        except ChallengeStoreError as exc:
            log.warning("could not clear a used challenge (%s); it expires on its own", exc)
        try:
            claims = await connection.verifier.verify(tokens.id_token)
        except TokenVerificationError as exc:
            return attempt.failed(
                StepFailure(FailureCode.INTERNAL, f"the ID token Cognito returned failed verification: {exc}")
            )
        attributes = await self._attributes(challenge, tokens, claims, connection, deadline)
        verified = CodeVerified(
            sub=str(claims.get("sub", "")),
            username=str(claims.get("cognito:username", challenge.username)),
            claims=release_claims(claims, attempt.step.effective_scopes),
            attributes=_select(attributes, attempt.policy.migration_attributes),
            channel=challenge.channel,
            authenticated_at=datetime.fromtimestamp(float(claims.get("auth_time", self._clock.now())), UTC),
            tokens=tokens if attempt.policy.return_tokens else None,
        )
        return succeed(attempt.step, verified)

    async def _wrong_code(self, attempt: _Attempt, cognito_error: str) -> StepFailure:
        """A wrong code. It is already counted (before Cognito was asked), the attempt too: the store needs
        telling only when the challenge is now exhausted. Under enumeration protection the failure names no
        Cognito error: a decoy (no Cognito call) and a real user (CodeMismatchException) carry the same fields."""
        if attempt.policy.user_enumeration_protection:
            cognito_error = ""
        challenge = attempt.challenge
        remaining = challenge.attempts_remaining
        if remaining <= 0:
            await settle(
                lambda: self._store.finish_attempt(
                    attempt.key, challenge.nonce, Judgement.WRONG, attempt.subjects
                ),
                attempt.deadline,
                self._clock,
            )
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
