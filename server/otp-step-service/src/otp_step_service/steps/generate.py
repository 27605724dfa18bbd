"""Cognito OTP Generate: send a one-time passcode through Cognito's native passwordless sign-in."""

from __future__ import annotations

import asyncio
import logging
import math
import re
import secrets
from dataclasses import dataclass, replace
from datetime import UTC, datetime

from .branching import fail, protected, succeed
from .challenges import (
    RESERVATION_SECONDS,
    Challenge,
    ChallengeKey,
    SendBudget,
    SendRequest,
    SendReservation,
    SendResult,
    SendVerdict,
    alias_subject,
    budget_subject,
    caller_budget_subject,
    ip_subject,
    lease_until,
    lockout_subject,
    prefix_subject,
    sends_subject,
    tenant_budget_subject,
    user_digest,
)
from .clock import SYSTEM_CLOCK, Clock
from .cognito_failures import failure_for
from .deadline import Deadline
from .decoys import DecoyMasks, sending_regions
from .errors import ChallengeStoreError, ExecutionInFlightError, OtpStepError, StoreUnavailableError
from .identifiers import IdentifierKind, InvalidIdentifierError, UserIdentifier, parse_identifier, sms_refusal
from .journey import GenerateRequest, StepConfiguration
from .latency import CognitoLatency, Operation
from .model import AuthChallenge, CognitoError, CognitoErrorKind, CognitoRequests, ConnectionPolicy
from .outcomes import Channel, CodeSent, FailureCode, StepFailure, StepOutcome
from .ports import ChallengeStore, Connection
from .settling import settle

SELECT_CHALLENGE = "SELECT_CHALLENGE"
log = logging.getLogger(__name__)

# A retry meeting its execution's earlier attempt in flight asks the store again after this long, doubling up
# to the maximum: a code is usually sent within a second, and each ask is one store round trip.
FIRST_POLL_SECONDS = 0.05
MAX_POLL_SECONDS = 0.5
# How long such a retry waits when its caller set no deadline.
IN_FLIGHT_WAIT_SECONDS = 10.0
# Kept back from the deadline for the last ask and the answer (a loaded instance is slow at both): a refusal
# that reaches the caller tells it when to retry, a deadline does not.
_ANSWER_MARGIN_SECONDS = 0.25

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


@dataclass(frozen=True, slots=True)
class _Admitted:
    """A Generate past its checks of the request alone: what the later phases work on."""

    step: StepConfiguration
    policy: ConnectionPolicy
    identifier: UserIdentifier
    channel: Channel
    send: SendRequest

    def failed(self, failure: StepFailure) -> StepOutcome[CodeSent]:
        return fail(self.step, protected(failure, self.policy), validating=False)


@dataclass(slots=True)
class _Sending:
    """How asking Cognito ended: the result for the store, the challenge to keep, the failure to answer."""

    result: SendResult = SendResult.MAYBE_SENT
    saved: Challenge | None = None
    failure: StepFailure | None = None
    took: float = 0.0  # seconds Cognito took to answer (a decoy made of its answer waits out the rest)
    username: str = ""  # the user Cognito's answer named, when it named one without sending (another channel)


class GenerateOtpStep:
    """Runs Generate: normalize the identifier, start USER_AUTH, keep the Cognito session server-side.

    The story of `run`: admit the request (identifier, destination rules), reserve a send in the store (the
    cooldown, budgets and lockout, in one atomic decision; a retry waits for its execution's first attempt),
    send through Cognito, hide what the answer says about the account when enumeration protection is on, and
    record the outcome in the store.

    A store failure before Cognito is asked raises StoreUnavailableError (the step did not run: the caller
    retries it as it is); after, the record is tried again within the deadline (`settling`)."""

    def __init__(
        self,
        store: ChallengeStore,
        clock: Clock = SYSTEM_CLOCK,
        decoys: DecoyMasks | None = None,
        latency: CognitoLatency | None = None,
    ) -> None:
        self._store = store
        self._clock = clock
        self._decoys = decoys or DecoyMasks.ephemeral()
        self._latency = latency or CognitoLatency(clock=clock)

    async def run(
        self, request: GenerateRequest, connection: Connection, deadline: Deadline
    ) -> StepOutcome[CodeSent]:
        """Execute the step; every failure of a step that ran becomes an outcome (StepNotRunError: it did not)."""
        admitted = self._admit(request, connection.policy, deadline)
        if not isinstance(admitted, _Admitted):
            return admitted
        reserved = await self._reserve(admitted, deadline)
        if not isinstance(reserved, _Admitted):
            return reserved
        sending = await self._send(reserved, request, connection, deadline)
        await self._protect(reserved, sending, deadline)
        return await self._record(reserved, sending, deadline)

    def _admit(
        self, request: GenerateRequest, policy: ConnectionPolicy, deadline: Deadline
    ) -> _Admitted | StepOutcome[CodeSent]:
        """Check what the request alone decides (no store, no Cognito) and frame the send request."""
        step = request.step
        # The transport rejects a Generate without a channel; the default only keeps the type exact.
        channel = step.channel or Channel.EMAIL
        try:
            identifier = parse_identifier(step.user_identifier, policy.default_phone_region)
        except InvalidIdentifierError as exc:
            return fail(step, StepFailure(FailureCode.INVALID_IDENTIFIER, str(exc)), validating=False)
        if channel is Channel.SMS and (refusal := sms_refusal(identifier, policy.sms_countries)):
            return fail(step, StepFailure(FailureCode.DESTINATION_NOT_ALLOWED, refusal), validating=False)
        now = self._clock.now()
        placeholder = Challenge(
            username=identifier.value,
            session="",
            channel=channel,
            masked_destination="",
            expires_at=now + policy.session_validity_seconds,
            max_attempts=policy.max_attempts,
            step_execution_id=request.journey.step_execution_id,
            sent_at=now,
            nonce=secrets.token_hex(8),
            pending=True,
            lease_until=lease_until(now, deadline.remaining()),
        )
        send = SendRequest(
            key=ChallengeKey(policy.name, request.journey.journey_run_id, identifier.value),
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
        return _Admitted(step, policy, identifier, channel, send)

    async def _reserve(self, admitted: _Admitted, deadline: Deadline) -> _Admitted | StepOutcome[CodeSent]:
        """One atomic decision before Cognito is asked; the send as reserved, or the answer.

        Neither concurrent retries of one execution, nor a journey looping back to Generate ("resend"), nor
        journey after journey to one identifier (SMS pumping, inbox flooding), nor a flood across identifiers
        (the connection's budgets) can make Cognito send more codes than the cooldown and the budgets allow; a
        locked identifier gets no code at all (or an attacker could keep guessing across fresh challenges)."""
        admitted, reservation = await self._reservation(admitted, deadline)
        policy, send = admitted.policy, admitted.send
        if (
            reservation.verdict in (SendVerdict.LOCKED, SendVerdict.OVER_BUDGET)
            and policy.user_enumeration_protection
            and send.alias_subject
        ):
            alone = await self._refused_through_another_alias(admitted, deadline)
            if not isinstance(alone, SendReservation):
                return alone
            reservation = alone
        match reservation.verdict:
            case SendVerdict.LOCKED:
                return admitted.failed(locked_failure(policy.lockout_window_seconds))
            case SendVerdict.REPLAY if reservation.challenge is not None:
                # A retry of the same execution (the caller timed out, say): answer as the first time did.
                return succeed(admitted.step, _sent(reservation.challenge))
            case SendVerdict.TOO_SOON:
                wait = math.ceil(reservation.wait_seconds)
                return admitted.failed(
                    StepFailure(
                        FailureCode.RESEND_TOO_SOON,
                        f"a code was sent moments ago; a new one can be sent in {wait} s",
                        retry_after_seconds=wait,
                    )
                )
            case SendVerdict.OVER_BUDGET:
                return admitted.failed(
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
                return admitted.failed(
                    StepFailure(
                        FailureCode.SEND_BUDGET_EXHAUSTED,
                        "the send budget of the connection, its tenant, the caller, this number range or this "
                        "address is spent; try again later",
                        retry_after_seconds=wait,
                    )
                )
            case SendVerdict.RESERVED:
                if reservation.took_over:
                    log.warning(
                        "a reservation of this execution outlived its lease (its instance stopped mid-send): "
                        "taken over; its code counts as maybe sent, and the one this retry sends is the "
                        "journey's"
                    )
                return admitted
            case _:  # a verdict without what it promises (REPLAY without its challenge): never send on it
                raise AssertionError(f"unexpected reservation {reservation.verdict}")

    async def _reservation(
        self, admitted: _Admitted, deadline: Deadline
    ) -> tuple[_Admitted, SendReservation]:
        """begin_send; while the same execution's earlier attempt is in flight (another instance sending its
        code, or dead for less than its lease), asked again until it has settled (a replay), its lease has run
        out (a takeover) or the deadline would pass (ExecutionInFlightError: nothing was sent)."""
        pause, started = FIRST_POLL_SECONDS, self._clock.monotonic()
        while True:
            reservation = await self._begin_send(admitted.send)
            if reservation.verdict is not SendVerdict.IN_FLIGHT:
                return admitted, reservation
            left = deadline.remaining()
            if left is None:
                left = IN_FLIGHT_WAIT_SECONDS - (self._clock.monotonic() - started)
            # The last ask comes just before the answer must leave.
            wait = min(pause, reservation.wait_seconds + 0.01, left - _ANSWER_MARGIN_SECONDS)
            if wait <= 0:
                raise ExecutionInFlightError(reservation.wait_seconds)
            await self._clock.sleep(wait)
            pause = min(pause * 2, MAX_POLL_SECONDS)
            admitted = self._renewed(admitted, deadline)

    def _renewed(self, admitted: _Admitted, deadline: Deadline) -> _Admitted:
        """The send request as of now: a reservation made later starts, and holds its lease, from then."""
        now = self._clock.now()
        placeholder = replace(
            admitted.send.placeholder,
            sent_at=now,
            expires_at=now + admitted.policy.session_validity_seconds,
            lease_until=lease_until(now, deadline.remaining()),
        )
        return replace(admitted, send=replace(admitted.send, placeholder=placeholder, now=now))

    async def _begin_send(self, send: SendRequest) -> SendReservation:
        """The store's decision; its failure means nothing was sent, so the step did not run."""
        try:
            return await self._store.begin_send(send)
        except ChallengeStoreError as exc:
            raise StoreUnavailableError(exc) from exc

    async def _refused_through_another_alias(
        self, admitted: _Admitted, deadline: Deadline
    ) -> StepOutcome[CodeSent] | SendReservation:
        """Under enumeration protection, a refusal this identifier did not earn is not told through it.

        The store refused (locked, over budget) and counts per Cognito user as well as per identifier: when
        the refusal is the *user's*, earned through another of their aliases, answering it here would tell an
        outsider that this identifier reaches that user. So the store is asked again for this identifier
        alone, and whatever it says is the answer. If it reserves, the refusal came from another alias, and
        this identifier gets what any sent code gets (a challenge, counted against its own budget, as long to
        answer as Cognito takes) while nothing is sent. Otherwise its verdict is what this identifier alone
        gets, and `_reserve` answers it as such: its own lockout or budget, its cooldown in this journey
        (TOO_SOON), a retry of an execution that sent (REPLAY). Never the user's refusal. A retry of an
        execution still in flight waits for it as any identifier's does (`_reservation`): refused at once, it
        would tell this identifier's user is locked or over budget."""
        alone_admitted, reservation = await self._reservation(
            replace(admitted, send=replace(admitted.send, alias_subject="")), deadline
        )
        if reservation.verdict is not SendVerdict.RESERVED:
            return reservation
        alone = alone_admitted.send
        log.info("enumeration protection: a refusal earned through another alias answered as a sent code")
        try:
            await self._latency.as_long_as_cognito(admitted.policy.name, Operation.SEND, deadline)
        except BaseException:
            # The caller went away while a real send would have been in flight: settled as that send would
            # be (a code that may have gone out holds the cooldown and stays counted), or a retry would tell.
            lost = _unusable(alone.placeholder, SendResult.LOST)
            await self._settle(alone, SendResult.LOST, lost, quiet=True)
            raise
        # No user: Validate must not reach the user's lockout through this decoy (that would link it again).
        decoy = replace(self._decoy(admitted), user="")
        await self._settle(alone, SendResult.SENT, decoy, deadline)
        return succeed(admitted.step, _sent(decoy))

    async def _send(
        self, admitted: _Admitted, request: GenerateRequest, connection: Connection, deadline: Deadline
    ) -> _Sending:
        """Ask Cognito to start the sign-in and send the code; classify how that ended."""
        policy, placeholder = admitted.policy, admitted.send.placeholder
        requests = CognitoRequests()
        started = self._clock.monotonic()
        try:
            challenge = await _start(
                admitted.identifier, admitted.channel, request, connection, deadline, requests
            )
        except CognitoError as error:
            if error.certainly_not_acted:
                result = SendResult.NOT_SENT
            elif error.kind is CognitoErrorKind.TIMEOUT and _cut_short(deadline):
                result = SendResult.LOST
            else:
                result = SendResult.MAYBE_SENT
            return _Sending(result, failure=failure_for(error), took=self._clock.monotonic() - started)
        except ChannelNotAvailableError as exc:
            result = SendResult.MAYBE_SENT if exc.code_may_be_sent else SendResult.NOT_SENT
            failure = StepFailure(FailureCode.CHANNEL_NOT_AVAILABLE, str(exc))
            return _Sending(
                result, failure=failure, took=self._clock.monotonic() - started, username=exc.username
            )
        except BaseException:
            # The caller went away mid-call (or a bug surfaced): whatever Cognito did is settled before this
            # goes on, and a request that left counts as a sent code (Cognito may have delivered it).
            result = SendResult.LOST if requests.sent else SendResult.NOT_SENT
            await self._settle(admitted.send, result, _unusable(placeholder, result), quiet=True)
            raise
        self._latency.observe(policy.name, Operation.SEND, self._clock.monotonic() - started)
        username = challenge.username or admitted.identifier.value
        saved = replace(
            placeholder,
            username=username,
            user=user_digest(policy.name, username),
            session=challenge.session,
            masked_destination=self._shown_destination(challenge.destination, admitted),
            pending=False,
        )
        return _Sending(SendResult.SENT, saved)

    async def _protect(self, admitted: _Admitted, sending: _Sending, deadline: Deadline) -> None:
        """Under enumeration protection, whatever is wrong with this user (none, disabled, unconfirmed, no
        phone) becomes what every user gets: a code "sent" to a plausible destination, and no code that
        works. The send stays counted, as a real one would, and the answer takes as long as a real send:
        Cognito says "no such user" or "disabled" sooner than it sends a code, so the decoy waits out the
        rest of a duration drawn from the recent real sends."""
        failure = sending.failure
        if (
            failure is None
            or failure.code not in _USER_STATE
            or not admitted.policy.user_enumeration_protection
        ):
            return
        log.info("enumeration protection: answered %s with a decoy challenge", failure.code.value)
        # A user Cognito named (one without the asked channel) is that user, as a sent code's is; otherwise
        # the decoy stands in for one (`_decoy`).
        named = user_digest(admitted.policy.name, sending.username) if sending.username else ""
        try:
            await self._latency.as_long_as_cognito(
                admitted.policy.name, Operation.SEND, deadline, spent=sending.took
            )
        except BaseException:
            # The caller went away while a real send would still be in flight: settled as that send would be.
            lost = _unusable(admitted.send.placeholder, SendResult.LOST)
            await self._settle(admitted.send, SendResult.LOST, lost, quiet=True)
            raise
        sending.saved, sending.result, sending.failure = self._decoy(admitted, named), SendResult.SENT, None

    async def _record(
        self, admitted: _Admitted, sending: _Sending, deadline: Deadline
    ) -> StepOutcome[CodeSent]:
        """Settle the reservation with the outcome and answer the journey."""
        saved = sending.saved
        if saved is not None:
            # One clock point for every challenge, real or decoy: after Cognito answered, just before the
            # answer leaves (a decoy timed before the call would show Cognito's round trip in expires_at).
            saved = replace(saved, expires_at=self._clock.now() + admitted.policy.session_validity_seconds)
        await self._settle(
            admitted.send,
            sending.result,
            saved or _unusable(admitted.send.placeholder, sending.result),
            deadline,
        )
        if sending.failure is not None:
            return admitted.failed(sending.failure)
        assert saved is not None  # SENT always carries the challenge
        return succeed(admitted.step, _sent(saved))

    def _decoy(self, admitted: _Admitted, user: str = "") -> Challenge:
        # Without a user Cognito named, the decoy's "user" stands in for one: the identifier's own digest, so
        # the store maps an identifier nobody owns to a user as it maps a real one, and it goes through the
        # same per-user counting (and the same one-send-at-a-time while its user is unknown) as one somebody
        # does. A stand-in never replaces a user the store already knows for the identifier (stores keep a
        # decoy's user only where none is known), and the next real answer replaces it.
        return replace(
            admitted.send.placeholder,
            masked_destination=self._plausible_destination(admitted),
            pending=False,
            decoy=True,
            user=user or user_digest(admitted.policy.name, admitted.identifier.value),
            expires_at=self._clock.now() + admitted.policy.session_validity_seconds,
        )

    def _plausible_destination(self, admitted: _Admitted) -> str:
        policy = admitted.policy
        regions = sending_regions(policy.sms_countries, policy.default_phone_region)
        return self._decoys.destination(admitted.identifier, admitted.channel, regions)

    def _shown_destination(self, masked: str, admitted: _Admitted) -> str:
        """The masked destination the journey sees: Cognito's, when it has the shape of the channel's masks.

        A pool that hides unknown users answers them with a phantom challenge whose destination is made up
        from the USERNAME [inferred]: a phone number asked to receive an email comes back as "+***@e***",
        which no real user would ever see. The service then makes the plausible mask itself, as for its own
        decoys."""
        if masked and _MASKS[admitted.channel].fullmatch(masked):
            return masked
        return self._plausible_destination(admitted)

    async def _settle(
        self,
        send: SendRequest,
        result: SendResult,
        challenge: Challenge | None,
        deadline: Deadline | None = None,
        *,
        quiet: bool = False,
    ) -> None:
        """finish_send, shielded: a cancellation arriving while the store writes must not leave the key held
        by the pending placeholder. With a `deadline`, a failing store is tried again within it when the
        settle stores what Cognito did (a NOT_SENT settle gives counts back: made once). A store failure is
        logged instead of raised when it would replace an answer that says more: a cancellation (`quiet`),
        or Cognito's own failure when nothing was sent (NOT_SENT: CONNECTION_MISCONFIGURED must not become a
        retryable CHALLENGE_STORE_UNAVAILABLE). The reservation then holds until its lease ends, and a retry
        of its execution takes it over."""
        try:
            if deadline is not None and result is not SendResult.NOT_SENT:
                await settle(lambda: self._store.finish_send(send, result, challenge), deadline, self._clock)
            else:
                await asyncio.shield(self._store.finish_send(send, result, challenge))
        except ChallengeStoreError as exc:
            if not quiet and result is not SendResult.NOT_SENT:
                raise
            log.warning("could not settle a Generate (%s); its reservation holds until its lease", exc)


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
                username=challenge.username,
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
            username=challenge.username,
        )
    return challenge


class ChannelNotAvailableError(OtpStepError):
    """The requested channel cannot be used for this user or pool."""

    def __init__(self, message: str, *, code_may_be_sent: bool, username: str = "") -> None:
        super().__init__(message)
        self.code_may_be_sent = code_may_be_sent
        self.username = username  # the user Cognito's answer named (its USERNAME), "" when none


# Cognito's masks [obs]: "a***@e***" for an email, "+*******0100" for a phone number.
_MASKS = {Channel.EMAIL: re.compile(r"[^@+\s*]\*{3}@[^@\s*]\*{3}"), Channel.SMS: re.compile(r"\+\*+[0-9]{4}")}


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


def _sent(challenge: Challenge) -> CodeSent:
    return CodeSent(
        channel=challenge.channel,
        masked_destination=challenge.masked_destination,
        expires_at=datetime.fromtimestamp(challenge.expires_at, UTC),
        max_attempts=challenge.max_attempts,
    )
