"""Cognito OTP Generate: send a one-time passcode through Cognito's native passwordless sign-in."""

from __future__ import annotations

import hashlib
import logging
import math
import secrets
import time
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any

from .branching import fail, succeed
from .challenges import Challenge, ChallengeKey, ChallengeStore, ReservationVerdict, admit, sends_subject
from .cognito_failures import failure_for
from .deadline import Deadline
from .identifiers import IdentifierKind, UserIdentifier
from .journey import GenerateRequest
from .outcomes import Channel, FailureCode, GenerateSuccess, StepFailure, StepOutcome
from .ports import AuthChallenge, CognitoError, Connection

SELECT_CHALLENGE = "SELECT_CHALLENGE"
log = logging.getLogger(__name__)

# Failures that tell an outsider something about the account; enumeration protection hides them.
_USER_STATE = frozenset(
    {
        FailureCode.USER_NOT_FOUND,
        FailureCode.USER_DISABLED,
        FailureCode.USER_NOT_READY,
        FailureCode.NOT_AUTHORIZED,
        FailureCode.CHANNEL_NOT_AVAILABLE,
    }
)


class GenerateOtpStep:
    """Runs Generate: normalize the identifier, start USER_AUTH, keep the Cognito session server-side."""

    def __init__(self, store: ChallengeStore, clock: Callable[[], float] = time.time) -> None:
        self._store = store
        self._clock = clock

    def run(
        self, request: GenerateRequest, connection: Connection, deadline: Deadline
    ) -> StepOutcome[GenerateSuccess]:
        """Execute the step; every failure becomes an outcome, never an exception."""
        step, policy = request.step, connection.policy
        # The transport rejects a Generate without a channel; the default only keeps the type exact.
        channel = step.channel or Channel.EMAIL

        def failed(failure: StepFailure) -> StepOutcome[Any]:
            return fail(step, failure, validating=False)

        admitted = admit(self._store, policy, step.user_identifier)
        if isinstance(admitted, StepFailure):
            return failed(admitted)
        identifier = admitted
        key = ChallengeKey(policy.name, request.journey.journey_run_id, identifier.value)

        execution_id = request.journey.step_execution_id
        now = self._clock()
        nonce = secrets.token_hex(8)
        # Held atomically before Cognito is asked, so neither concurrent retries of one execution nor a
        # journey looping back to Generate ("resend") can make Cognito send more than one code.
        placeholder = Challenge(
            username=identifier.value,
            session="",
            channel=channel,
            masked_destination="",
            expires_at=now + policy.session_validity_seconds,
            max_attempts=policy.max_attempts,
            step_execution_id=execution_id,
            sent_at=now,
            nonce=nonce,
            pending=True,
        )
        reservation = self._store.reserve(key, placeholder, now, policy.resend_cooldown_seconds)
        if reservation.verdict is ReservationVerdict.REPLAY and reservation.challenge is not None:
            # A retry of the same execution (the caller timed out, say): answer as the first time did.
            return succeed(step, self._success(reservation.challenge))
        if reservation.verdict is ReservationVerdict.TOO_SOON:
            wait = math.ceil(reservation.wait_seconds)
            return failed(
                StepFailure(
                    FailureCode.RESEND_TOO_SOON,
                    f"a code was sent moments ago; a new one can be sent in {wait} s",
                    retry_after_seconds=wait,
                )
            )

        # Codes per identifier across journey runs (the cooldown is per run): the defence against SMS pumping
        # and inbox flooding by opening journey after journey. Counted by the store's windowed counter.
        sends = sends_subject(policy.name, identifier.value)
        if self._store.count_event(sends, policy.send_window_seconds) > policy.send_limit:
            self._store.uncount_event(sends)
            self._store.discard(key, nonce)
            return failed(
                StepFailure(
                    FailureCode.RESEND_TOO_SOON,
                    f"more than {policy.send_limit} codes for this identifier within "
                    f"{policy.send_window_seconds} s; try again later",
                    retry_after_seconds=policy.send_window_seconds,
                )
            )

        failure: StepFailure | None = None
        try:
            challenge = self._start(identifier, channel, request, connection, deadline)
        except CognitoError as error:
            failure = failure_for(error)
        except ChannelNotAvailableError as exc:
            failure = StepFailure(FailureCode.CHANNEL_NOT_AVAILABLE, str(exc))
        if failure is not None:
            if failure.code in _USER_STATE and policy.user_enumeration_protection:
                # Whatever is wrong with this user (none, disabled, unconfirmed, no phone), an outsider sees
                # what every user gets: a code "sent" to a plausible destination, and no code that works.
                log.info("enumeration protection: answered %s with a decoy challenge", failure.code.value)
                decoy = self._decoy(identifier, channel, placeholder)
                self._store.save(key, decoy)
                return succeed(step, self._success(decoy))
            # Release the reservation and the send: no code went out (or, on a timeout, Cognito's own limits
            # apply; a timed-out send is not counted against the user).
            self._store.discard(key, nonce)
            self._store.uncount_event(sends)
            return failed(failure)

        saved = replace(
            placeholder,
            username=challenge.username or identifier.value,
            session=challenge.session,
            masked_destination=challenge.destination or identifier.masked,
            expires_at=self._clock() + policy.session_validity_seconds,
            pending=False,
        )
        self._store.save(key, saved)
        return succeed(step, self._success(saved))

    @staticmethod
    def _start(
        identifier: UserIdentifier,
        channel: Channel,
        request: GenerateRequest,
        connection: Connection,
        deadline: Deadline,
    ) -> AuthChallenge:
        gateway, end_user = connection.gateway, request.journey.end_user
        challenge = gateway.start_user_auth(identifier.value, channel, end_user, deadline)
        if challenge.name == SELECT_CHALLENGE:
            # Cognito offers a choice when the preferred factor is not available outright [doc].
            if channel.challenge_name not in challenge.available:
                raise ChannelNotAvailableError(
                    f"{channel.challenge_name} is not offered for this user "
                    f"(available: {', '.join(challenge.available) or 'none'}); the user needs "
                    f"{'an email' if channel is Channel.EMAIL else 'a phone_number'} attribute and the pool's "
                    "SignInPolicy.AllowedFirstAuthFactors must include it"
                )
            challenge = gateway.select_challenge(
                challenge.username or identifier.value, challenge.session, channel, end_user, deadline
            )
        if challenge.name != channel.challenge_name:
            # E.g. a user whose only factor is the other OTP may get that challenge directly [obs]. The journey
            # asked for this channel, so the step does not pretend otherwise.
            raise ChannelNotAvailableError(
                f"Cognito answered with {challenge.name} instead of {channel.challenge_name}"
            )
        return challenge

    @staticmethod
    def _decoy(identifier: UserIdentifier, channel: Channel, placeholder: Challenge) -> Challenge:
        return replace(
            placeholder,
            masked_destination=_plausible_destination(identifier, channel),
            pending=False,
            decoy=True,
        )

    @staticmethod
    def _success(challenge: Challenge) -> GenerateSuccess:
        return GenerateSuccess(
            channel=challenge.channel,
            masked_destination=challenge.masked_destination,
            expires_at=datetime.fromtimestamp(challenge.expires_at, UTC),
            max_attempts=challenge.max_attempts,
        )


class ChannelNotAvailableError(Exception):
    """The requested channel cannot be used for this user or pool."""


def _plausible_destination(identifier: UserIdentifier, channel: Channel) -> str:
    """A masked destination for a user that does not exist, stable per identifier so retries look alike."""
    if (identifier.kind is IdentifierKind.EMAIL) == (channel is Channel.EMAIL):
        return identifier.masked
    digest = int(hashlib.sha256(identifier.value.encode()).hexdigest(), 16)
    if channel is Channel.SMS:
        return f"+*******{digest % 10000:04d}"
    return f"{'abcdefghijklmnopqrstuvwxyz'[digest % 26]}***@{'aeghmoy'[digest % 7]}***"
