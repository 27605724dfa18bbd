"""What one alias spent never shows through another: the steps in isolation (fake Cognito, in-memory store).

The fake Cognito names the user `ada` whatever identifier signs in, so her email and her phone number are two
aliases of one user. Beside tests/security/test_alias_linkage.py, which attacks a real service.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Any

import pytest
from harness import FakeClock
from otp_step_service.adapters.memory_store import InMemoryChallengeStore
from otp_step_service.steps.challenges import USER_SENDS, user_digest
from otp_step_service.steps.deadline import Deadline
from otp_step_service.steps.errors import ExecutionInFlightError
from otp_step_service.steps.generate import GenerateOtpStep
from otp_step_service.steps.journey import GenerateRequest, JourneyContext, StepConfiguration, ValidateRequest
from otp_step_service.steps.latency import CognitoLatency, Operation
from otp_step_service.steps.model import CognitoError, CognitoErrorKind, CognitoRequests
from otp_step_service.steps.outcomes import (
    Channel,
    CodeSent,
    CodeVerified,
    FailureBranch,
    FailureCode,
    StepOutcome,
    Success,
)
from otp_step_service.steps.ports import Connection
from otp_step_service.steps.validate import ValidateOtpStep

from unit.test_steps import CODE, FakeCognito, FakeVerifier, policy

EMAIL, PHONE = "ada@example.com", "+15555550100"


class CountingCognito(FakeCognito):
    """The fake Cognito, counting the sign-ins it starts and the codes it judges."""

    def __init__(self) -> None:
        super().__init__()
        self.started = self.judged = 0

    async def start_user_auth(self, *args: Any) -> Any:
        self.started += 1
        return await super().start_user_auth(*args)

    async def answer_otp(self, *args: Any) -> Any:
        self.judged += 1
        return await super().answer_otp(*args)


class RecordingLatency(CognitoLatency):
    """Waits nothing; remembers what each decoy was asked to wait out (operation, seconds already spent)."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock=clock)
        self.waits: list[tuple[Operation, float]] = []

    async def as_long_as_cognito(
        self, connection: str, operation: Operation, deadline: Deadline, spent: float = 0.0
    ) -> None:
        self.waits.append((operation, spent))


class Aliases:
    """Generate and Validate through either of ada's aliases, over one fake connection, store and clock."""

    def __init__(self, **policy_overrides: Any) -> None:
        self.clock = FakeClock()
        self.store = InMemoryChallengeStore(self.clock)
        self.cognito = CountingCognito()
        self.latency = RecordingLatency(self.clock)
        self.connection = Connection(policy(**policy_overrides), self.cognito, FakeVerifier())
        self.generate_step = GenerateOtpStep(self.store, self.clock, latency=self.latency)
        self.validate_step = ValidateOtpStep(self.store, self.clock, latency=self.latency)

    async def generate(self, identifier: str, run: str, execution: str = "") -> StepOutcome[CodeSent]:
        channel = Channel.EMAIL if "@" in identifier else Channel.SMS
        journey = JourneyContext("jit", run, "send", step_execution_id=execution)
        return await self.generate_step.run(
            GenerateRequest(journey, StepConfiguration("demo", identifier, channel)),
            self.connection,
            Deadline(None, self.clock),
        )

    async def validate(self, identifier: str, code: str, run: str) -> StepOutcome[CodeVerified]:
        journey = JourneyContext("jit", run, "check")
        return await self.validate_step.run(
            ValidateRequest(journey, StepConfiguration("demo", identifier, None), code),
            self.connection,
            Deadline(None, self.clock),
        )

    async def lock_out_by_email(self) -> None:
        """As many wrong codes by email as the lockout threshold: the user is locked; the phone alone is not."""
        await self.generate(EMAIL, "by-email")
        for _ in range(self.connection.policy.lockout_threshold):
            wrong = failure(await self.validate(EMAIL, "87654321", "by-email"))
            assert wrong in (FailureCode.INVALID_CODE, FailureCode.ATTEMPTS_EXHAUSTED)


def failure(outcome: StepOutcome[Any]) -> FailureCode | None:
    return outcome.failure.code if isinstance(outcome, FailureBranch) else None


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def test_a_generate_answers_as_its_alias_alone_would_when_the_user_is_locked_elsewhere() -> None:
    async def scenario() -> None:
        steps = Aliases(lockout_threshold=2)
        first = await steps.generate(PHONE, "j", execution="first")
        assert isinstance(first, Success)
        await steps.lock_out_by_email()
        # In the phone's journey, within its cooldown: what the phone alone gets, not the user's lockout.
        assert failure(await steps.generate(PHONE, "j", execution="second")) is FailureCode.RESEND_TOO_SOON
        replay = await steps.generate(PHONE, "j", execution="first")
        assert isinstance(replay, Success) and replay.result == first.result
        # A fresh journey: the lockout is the user's, earned by email, so a "sent" code that goes nowhere.
        started = steps.cognito.started
        assert isinstance(await steps.generate(PHONE, "k"), Success)
        assert steps.cognito.started == started
        # Through the email that earned it, the lockout is told.
        assert failure(await steps.generate(EMAIL, "k")) is FailureCode.IDENTIFIER_LOCKED

    run(scenario)


def test_a_validate_answers_a_lockout_earned_elsewhere_as_wrong_codes_and_judges_none() -> None:
    async def scenario() -> None:
        steps = Aliases(lockout_threshold=3)
        await steps.generate(PHONE, "j")
        await steps.lock_out_by_email()
        judged = steps.cognito.judged
        answers = [await steps.validate(PHONE, code, "j") for code in (CODE, "87654321", "87654321")]
        assert [
            (failure(a), a.failure.attempts_remaining) for a in answers if isinstance(a, FailureBranch)
        ] == [
            (FailureCode.INVALID_CODE, 2),
            (FailureCode.INVALID_CODE, 1),
            (FailureCode.ATTEMPTS_EXHAUSTED, 0),
        ]
        assert steps.cognito.judged == judged  # the right code among them: nothing judged it
        # As long as Cognito's judgement, for each well-formed code (the latency draws from real ones).
        assert steps.latency.waits[-3:] == [(Operation.JUDGE, 0.0)] * 3

    run(scenario)


def test_without_enumeration_protection_the_lockout_is_told_and_nothing_spent() -> None:
    async def scenario() -> None:
        steps = Aliases(lockout_threshold=2, lockout_window_seconds=60, user_enumeration_protection=False)
        await steps.generate(PHONE, "j")
        await steps.lock_out_by_email()
        assert failure(await steps.validate(PHONE, CODE, "j")) is FailureCode.IDENTIFIER_LOCKED
        steps.clock.advance(steps.connection.policy.lockout_window_seconds + 1)
        assert isinstance(await steps.validate(PHONE, CODE, "j"), Success)  # no attempt was spent

    run(scenario)


async def _disabled(requests: CognitoRequests) -> None:
    requests.sent += 1
    raise CognitoError(CognitoErrorKind.USER_DISABLED, "NotAuthorizedException", "User is disabled.")


def test_a_decoy_keeps_the_user_an_alias_reached_and_the_users_send_budget() -> None:
    async def scenario() -> None:
        steps = Aliases(send_limit=3, resend_cooldown_seconds=0)
        assert isinstance(await steps.generate(EMAIL, "a"), Success)  # her email reaches ada
        steps.cognito.start.append(_disabled)  # ada disabled for a moment: a decoy through her email
        assert isinstance(await steps.generate(EMAIL, "b"), Success)
        assert isinstance(await steps.generate(PHONE, "c"), Success)  # her budget (3) is spent
        ada = user_digest("demo", "ada")
        assert await steps.store.events("demo", USER_SENDS + ada) == 3
        started = steps.cognito.started
        # Through her email again: her budget, not a stand-in's (the decoy's) nor her email's own (2 of 3).
        assert isinstance(await steps.generate(EMAIL, "d"), Success)
        assert steps.cognito.started == started

    run(scenario)


def test_a_decoy_for_a_user_cognito_turned_away_waits_out_a_real_sends_duration() -> None:
    async def scenario() -> None:
        steps = Aliases()

        async def disabled_after_30_ms(requests: CognitoRequests) -> None:
            steps.clock.advance(0.03)
            await _disabled(requests)

        steps.cognito.start.append(disabled_after_30_ms)
        assert isinstance(await steps.generate(EMAIL, "a"), Success)
        assert steps.latency.waits == [(Operation.SEND, pytest.approx(0.03))]

    run(scenario)


def test_a_decoy_waits_the_drawn_duration_less_what_cognito_already_took() -> None:
    async def scenario() -> None:
        latency = CognitoLatency()
        latency.observe("demo", Operation.SEND, 0.2)
        deadline = Deadline(None)
        started = asyncio.get_running_loop().time()
        await latency.as_long_as_cognito("demo", Operation.SEND, deadline, spent=0.2)
        assert asyncio.get_running_loop().time() - started < 0.05  # nothing left to wait
        started = asyncio.get_running_loop().time()
        await latency.as_long_as_cognito("demo", Operation.SEND, deadline, spent=0.1)
        assert asyncio.get_running_loop().time() - started >= 0.09

    run(scenario)


class GatedLatency(RecordingLatency):
    """A decoy's send lasts until the test opens the gate: a send still in flight when its retry arrives."""

    def __init__(self, clock: FakeClock) -> None:
        super().__init__(clock)
        self.gate = asyncio.Event()
        self.sending = asyncio.Event()

    async def as_long_as_cognito(
        self, connection: str, operation: Operation, deadline: Deadline, spent: float = 0.0
    ) -> None:
        if operation is Operation.SEND:
            self.sending.set()
            await self.gate.wait()


async def _unknown_user(requests: CognitoRequests) -> None:
    requests.sent += 1
    raise CognitoError(CognitoErrorKind.USER_NOT_FOUND, "UserNotFoundException", "User does not exist.")


async def _retried_while_in_flight(identifier: str) -> str:
    """Generate execution "E" through `identifier`, and retry it while the first attempt is still sending
    (a decoy's send, held open): what the retry answers."""
    steps = Aliases(lockout_threshold=2)
    if identifier == PHONE:  # her phone reaches her (a code went there), then she is locked out by email
        await steps.generate(PHONE, "earlier")
        await steps.lock_out_by_email()
    else:  # nobody has this number: Cognito says so, and a decoy stands in for the send
        steps.cognito.start.append(_unknown_user)
    latency = GatedLatency(steps.clock)
    generate = GenerateOtpStep(steps.store, steps.clock, latency=latency)
    channel = Channel.EMAIL if "@" in identifier else Channel.SMS
    journey = JourneyContext("jit", "probe", "send", step_execution_id="E")
    request = GenerateRequest(journey, StepConfiguration("demo", identifier, channel))

    def attempt() -> asyncio.Future[StepOutcome[CodeSent]]:
        return asyncio.ensure_future(generate.run(request, steps.connection, Deadline.after(5, steps.clock)))

    first = attempt()
    await latency.sending.wait()
    retry = attempt()
    for _ in range(5):  # the retry asks the store, and asks again, while the first attempt is sending
        await asyncio.sleep(0)
    waited = not retry.done()
    latency.gate.set()
    sent = await first
    try:
        answer = await retry
    except ExecutionInFlightError:
        return "refused at once: EXECUTION_IN_FLIGHT"
    assert isinstance(sent, Success) and isinstance(answer, Success) and answer.result == sent.result
    return "waited, then replayed" if waited else "replayed at once"


def test_a_retry_of_a_generate_in_flight_answers_alike_for_a_locked_users_alias_and_a_stranger() -> None:
    """Under enumeration protection a retry of an execution whose first attempt is still sending waits for it
    and replays its answer, through any identifier. Through the alias of a user locked out elsewhere the
    store's answer is the user's lockout, asked again for the identifier alone: that re-ask used to be
    refused at once (UNAVAILABLE, EXECUTION_IN_FLIGHT) where a stranger's number waited and replayed."""
    hers = asyncio.run(_retried_while_in_flight(PHONE))
    strangers = asyncio.run(_retried_while_in_flight("+15555550199"))
    assert hers == strangers == "waited, then replayed"
