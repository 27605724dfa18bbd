"""Cognito OTP Generate: send a one-time passcode through Cognito's native passwordless sign-in."""

from __future__ import annotations

import asyncio
import hashlib
import logging
import math
import re
import secrets
from dataclasses import replace
from datetime import UTC, datetime

from .branching import fail, succeed
from .challenges import (
    RESERVATION_SECONDS,
    Challenge,
    ChallengeKey,
    SendBudget,
    SendRequest,
    SendResult,
    SendVerdict,
    alias_subject,
    budget_subject,
    caller_budget_subject,
    ip_subject,
    lockout_subject,
    prefix_subject,
    sends_subject,
    tenant_budget_subject,
    user_digest,
)
from .clock import SYSTEM_CLOCK, Clock
from .cognito_failures import failure_for
from .deadline import Deadline
from .errors import ChallengeStoreError
from .identifiers import IdentifierKind, InvalidIdentifierError, UserIdentifier, parse_identifier, sms_refusal
from .journey import GenerateRequest
from .model import AuthChallenge, CognitoError, CognitoErrorKind, CognitoRequests, ConnectionPolicy
from .outcomes import Channel, CodeSent, FailureCode, StepFailure, StepOutcome
from .ports import ChallengeStore, Connection

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


def locked_failure(window_seconds: int) -> StepFailure:
    """The failure of a step whose identifier is locked out (too many wrong codes in the window)."""
    return StepFailure(
        FailureCode.IDENTIFIER_LOCKED,
        f"too many wrong codes for this identifier; locked for up to {window_seconds} s",
    )


class GenerateOtpStep:
    """Runs Generate: normalize the identifier, start USER_AUTH, keep the Cognito session server-side."""

    def __init__(self, store: ChallengeStore, clock: Clock = SYSTEM_CLOCK) -> None:
        self._store = store
        self._clock = clock

    async def run(
        self, request: GenerateRequest, connection: Connection, deadline: Deadline
    ) -> StepOutcome[CodeSent]:
        """Execute the step; every failure becomes an outcome, never an exception."""
        step, policy = request.step, connection.policy
        # The transport rejects a Generate without a channel; the default only keeps the type exact.
        channel = step.channel or Channel.EMAIL

        def failed(failure: StepFailure) -> StepOutcome[CodeSent]:
            return fail(step, failure, validating=False)

        try:
            identifier = parse_identifier(step.user_identifier, policy.default_phone_region)
        except InvalidIdentifierError as exc:
            return failed(StepFailure(FailureCode.INVALID_IDENTIFIER, str(exc)))
        if channel is Channel.SMS and (refusal := sms_refusal(identifier, policy.sms_countries)):
            return failed(StepFailure(FailureCode.DESTINATION_NOT_ALLOWED, refusal))
        key = ChallengeKey(policy.name, request.journey.journey_run_id, identifier.value)
        now = self._clock.now()
        nonce = secrets.token_hex(8)
        placeholder = Challenge(
            username=identifier.value,
            session="",
            channel=channel,
            masked_destination="",
            expires_at=now + policy.session_validity_seconds,
            max_attempts=policy.max_attempts,
            step_execution_id=request.journey.step_execution_id,
            sent_at=now,
            nonce=nonce,
            pending=True,
        )
        # One atomic decision before Cognito is asked: neither concurrent retries of one execution, nor a
        # journey looping back to Generate ("resend"), nor journey after journey to one identifier (SMS
        # pumping, inbox flooding), nor a flood across identifiers (the connection's budgets) can make Cognito
        # send more codes than the cooldown and the budgets allow; a locked identifier gets no code at all (or
        # an attacker could keep guessing across fresh challenges).
        send = SendRequest(
            key=key,
            placeholder=placeholder,
            now=now,
            cooldown_seconds=policy.resend_cooldown_seconds,
            sends_subject=sends_subject(policy.name, identifier.value),
            send_limit=policy.send_limit,
            send_window_seconds=policy.send_window_seconds,
            lockout_subject=lockout_subject(policy.name, identifier.value),
            lockout_threshold=policy.lockout_threshold,
            reservation_seconds=RESERVATION_SECONDS,
            budgets=_budgets(policy, identifier, channel, request),
            alias_subject=alias_subject(policy.name, identifier.value),
            alias_seconds=max(policy.send_window_seconds, policy.lockout_window_seconds),
        )
        reservation = await self._store.begin_send(send)
        match reservation.verdict:
            case SendVerdict.LOCKED:
                return failed(locked_failure(policy.lockout_window_seconds))
            case SendVerdict.REPLAY if reservation.challenge is not None:
                # A retry of the same execution (the caller timed out, say): answer as the first time did.
                return succeed(step, _sent(reservation.challenge))
            case SendVerdict.TOO_SOON:
                wait = math.ceil(reservation.wait_seconds)
                return failed(
                    StepFailure(
                        FailureCode.RESEND_TOO_SOON,
                        f"a code was sent moments ago; a new one can be sent in {wait} s",
                        retry_after_seconds=wait,
                    )
                )
            case SendVerdict.OVER_BUDGET:
                return failed(
                    StepFailure(
                        FailureCode.RESEND_TOO_SOON,
                        f"more than {policy.send_limit} codes for this identifier within "
                        f"{policy.send_window_seconds} s; try again later",
                        retry_after_seconds=math.ceil(reservation.wait_seconds) or policy.send_window_seconds,
                    )
                )
            case SendVerdict.BUDGET_TRIPPED:
                wait = math.ceil(reservation.wait_seconds)
                log.warning(
                    "send budget of connection %s (or of its tenant, the caller, this number range or this "
                    "address) spent: no code is sent for %d s",
                    policy.name,
                    wait,
                )
                return failed(
                    StepFailure(
                        FailureCode.SEND_BUDGET_EXHAUSTED,
                        "the send budget of the connection, its tenant, the caller, this number range or this "
                        "address is spent; try again later",
                        retry_after_seconds=wait,
                    )
                )
            case SendVerdict.RESERVED:
                pass
            case _:  # a verdict without what it promises (REPLAY without its challenge): never send on it
                raise AssertionError(f"unexpected reservation {reservation.verdict}")

        requests = CognitoRequests()
        result, saved, failure = SendResult.MAYBE_SENT, None, None
        try:
            challenge = await _start(identifier, channel, request, connection, deadline, requests)
            username = challenge.username or identifier.value
            saved = replace(
                placeholder,
                username=username,
                user=user_digest(policy.name, username),
                session=challenge.session,
                masked_destination=_shown_destination(challenge.destination, identifier, channel),
                expires_at=self._clock.now() + policy.session_validity_seconds,
                pending=False,
            )
            result = SendResult.SENT
        except CognitoError as error:
            failure = failure_for(error)
            if error.certainly_not_acted:
                result = SendResult.NOT_SENT
            elif error.kind is CognitoErrorKind.TIMEOUT and _cut_short(deadline):
                result = SendResult.LOST
            else:
                result = SendResult.MAYBE_SENT
        except ChannelNotAvailableError as exc:
            failure = StepFailure(FailureCode.CHANNEL_NOT_AVAILABLE, str(exc))
            result = SendResult.MAYBE_SENT if exc.code_may_be_sent else SendResult.NOT_SENT
        except BaseException:
            # The caller went away mid-call (or a bug surfaced): whatever Cognito did is settled before this
            # goes on, and a request that left counts as a sent code (Cognito may have delivered it).
            result = SendResult.LOST if requests.sent else SendResult.NOT_SENT
            await self._settle(send, result, _unusable(placeholder, result), quiet=True)
            raise
        if failure is not None and failure.code in _USER_STATE and policy.user_enumeration_protection:
            # Whatever is wrong with this user (none, disabled, unconfirmed, no phone), an outsider sees what
            # every user gets: a code "sent" to a plausible destination, and no code that works. The send stays
            # counted, as a real one would.
            log.info("enumeration protection: answered %s with a decoy challenge", failure.code.value)
            saved = _decoy(identifier, channel, placeholder, policy.name)
            result, failure = SendResult.SENT, None
        await self._settle(send, result, saved or _unusable(placeholder, result))
        if failure is not None:
            return failed(failure)
        assert saved is not None  # SENT always carries the challenge
        return succeed(step, _sent(saved))

    async def _settle(
        self, send: SendRequest, result: SendResult, challenge: Challenge | None, *, quiet: bool = False
    ) -> None:
        """finish_send, shielded: a cancellation arriving while the store writes must not leave the key held
        by the pending placeholder. `quiet` (on the way out of a cancellation) logs a store failure instead
        of letting it replace the cancellation; the reservation then expires by itself (RESERVATION_SECONDS)."""
        try:
            await asyncio.shield(self._store.finish_send(send, result, challenge))
        except ChallengeStoreError as exc:
            if not quiet:
                raise
            log.warning("could not settle a cancelled Generate (%s); its reservation expires by itself", exc)


async def _start(
    identifier: UserIdentifier,
    channel: Channel,
    request: GenerateRequest,
    connection: Connection,
    deadline: Deadline,
    requests: CognitoRequests,
) -> AuthChallenge:
    gateway, end_user = connection.gateway, request.journey.end_user
    challenge = await gateway.start_user_auth(identifier.value, channel, end_user, deadline, requests)
    if challenge.name == SELECT_CHALLENGE:
        # Cognito offers a choice when the preferred factor is not available outright [doc].
        if channel.challenge_name not in challenge.available:
            raise ChannelNotAvailableError(
                f"{channel.challenge_name} is not offered for this user "
                f"(available: {', '.join(challenge.available) or 'none'}); the user needs "
                f"{'an email' if channel is Channel.EMAIL else 'a phone_number'} attribute and the pool's "
                "SignInPolicy.AllowedFirstAuthFactors must include it",
                code_may_be_sent=False,
            )
        challenge = await gateway.select_challenge(
            challenge.username or identifier.value, challenge.session, channel, end_user, deadline, requests
        )
    if challenge.name != channel.challenge_name:
        # E.g. a user whose only factor is the other OTP may get that challenge directly [obs]: that code went
        # out by the other channel. The journey asked for this channel, so the step does not pretend otherwise.
        raise ChannelNotAvailableError(
            f"Cognito answered with {challenge.name} instead of {channel.challenge_name}",
            code_may_be_sent=challenge.name.endswith("_OTP"),
        )
    return challenge


class ChannelNotAvailableError(Exception):
    """The requested channel cannot be used for this user or pool."""

    def __init__(self, message: str, *, code_may_be_sent: bool) -> None:
        super().__init__(message)
        self.code_may_be_sent = code_may_be_sent


# Cognito's masks [obs]: "a***@e***" for an email, "+*******0100" for a phone number.
_MASKS = {Channel.EMAIL: re.compile(r"[^@+\s*]\*{3}@[^@\s*]\*{3}"), Channel.SMS: re.compile(r"\+\*+[0-9]{4}")}


def _shown_destination(masked: str, identifier: UserIdentifier, channel: Channel) -> str:
    """The masked destination the journey sees: Cognito's, when it has the shape of the channel's masks.

    A pool that hides unknown users answers them with a phantom challenge whose destination is made up from
    the USERNAME [inferred]: a phone number asked to receive an email comes back as "+***@e***", which no
    real user would ever see. The service then makes the plausible mask itself, as for its own decoys.
    """
    if masked and _MASKS[channel].fullmatch(masked):
        return masked
    return _plausible_destination(identifier, channel)


def _budgets(
    policy: ConnectionPolicy, identifier: UserIdentifier, channel: Channel, request: GenerateRequest
) -> tuple[SendBudget, ...]:
    """The counters beyond the identifier's own a send is checked against: the connection's budgets, its
    tenant's when the journey names one, the calling orchestrator's, for an SMS to a number its prefix's,
    and the end user's IP address's when the journey supplies one (the transport has validated it)."""
    journey = request.journey
    ip_address = journey.end_user.ip_address
    budgets = [
        SendBudget(budget_subject(policy.name, window), limit, window)
        for limit, window in policy.send_budgets
    ]
    if journey.tenant_id:
        budgets.extend(
            SendBudget(tenant_budget_subject(policy.name, journey.tenant_id, window), limit, window)
            for limit, window in policy.tenant_send_budgets
        )
    if request.caller is not None:
        budgets.extend(
            SendBudget(caller_budget_subject(request.caller.name, window), limit, window)
            for limit, window in request.caller.send_budgets
        )
    if channel is Channel.SMS and identifier.kind is IdentifierKind.PHONE and policy.sms_prefix_limit:
        prefix = identifier.value[: policy.sms_prefix_digits + 1]  # "+" and the digits
        budgets.append(
            SendBudget(
                prefix_subject(policy.name, prefix), policy.sms_prefix_limit, policy.sms_prefix_window_seconds
            )
        )
    if ip_address and policy.ip_send_limit:
        budgets.append(
            SendBudget(
                ip_subject(policy.name, ip_address), policy.ip_send_limit, policy.ip_send_window_seconds
            )
        )
    return tuple(budgets)


def _cut_short(deadline: Deadline) -> bool:
    """Whether a Cognito call that timed out was cut by the caller's deadline (each call gets at most what is
    left of it, less 50 ms), not by the connection's own call_timeout."""
    left = deadline.remaining()
    return left is not None and left < 0.2


def _unusable(placeholder: Challenge, result: SendResult) -> Challenge | None:
    """What stands in the key when Cognito may have sent a code whose session never came back."""
    if result not in (SendResult.MAYBE_SENT, SendResult.LOST):
        return None
    # No execution id: a retry of this execution must not replay a challenge nobody can answer.
    return replace(placeholder, pending=False, unusable=True, step_execution_id="")


def _decoy(
    identifier: UserIdentifier, channel: Channel, placeholder: Challenge, connection: str
) -> Challenge:
    # The decoy's "user" is the identifier itself, so the store maps it to a user as it maps a real one: an
    # identifier nobody owns then goes through the same per-user counting (and the same one-send-at-a-time
    # while its user is unknown) as one somebody does.
    return replace(
        placeholder,
        masked_destination=_plausible_destination(identifier, channel),
        pending=False,
        decoy=True,
        user=user_digest(connection, identifier.value),
    )


def _sent(challenge: Challenge) -> CodeSent:
    return CodeSent(
        channel=challenge.channel,
        masked_destination=challenge.masked_destination,
        expires_at=datetime.fromtimestamp(challenge.expires_at, UTC),
        max_attempts=challenge.max_attempts,
    )


def _plausible_destination(identifier: UserIdentifier, channel: Channel) -> str:
    """A masked destination for a user that does not exist, stable per identifier so retries look alike."""
    if (identifier.kind is IdentifierKind.EMAIL) == (channel is Channel.EMAIL):
        return identifier.masked
    digest = int(hashlib.sha256(identifier.value.encode()).hexdigest(), 16)
    if channel is Channel.SMS:
        return f"+*******{digest % 10000:04d}"
    return f"{'abcdefghijklmnopqrstuvwxyz'[digest % 26]}***@{'aeghmoy'[digest % 7]}***"
