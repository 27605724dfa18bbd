"""The steps in isolation: a fake Cognito, the in-memory store and a fake clock. Milliseconds, no sockets.

These sit beside the integration tests (real server, emulator over HTTP, real Redis), not instead of them:
they pin down the accounting rules where timing would make a real-socket test flaky (a cancellation before
or after the request left, a clock moved past an expiry).
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pytest
from harness import FailingStore, FakeClock
from otp_step_service.adapters.memory_store import InMemoryChallengeStore
from otp_step_service.config.connections import ConnectionConfig, policy_from_config
from otp_step_service.steps.challenges import lockout_subject, sends_subject
from otp_step_service.steps.deadline import Deadline
from otp_step_service.steps.errors import ChallengeStoreError, ExecutionInFlightError, StoreUnavailableError
from otp_step_service.steps.generate import GenerateOtpStep
from otp_step_service.steps.journey import GenerateRequest, JourneyContext, StepConfiguration, ValidateRequest
from otp_step_service.steps.model import (
    AuthChallenge,
    CognitoError,
    CognitoErrorKind,
    CognitoRequests,
    ConnectionCheck,
    ConnectionPolicy,
    EndUser,
)
from otp_step_service.steps.outcomes import (
    Channel,
    CodeSent,
    CodeVerified,
    CognitoTokens,
    FailureBranch,
    FailureCode,
    StepOutcome,
    Success,
)
from otp_step_service.steps.ports import Connection
from otp_step_service.steps.validate import ValidateOtpStep

CODE = "12345678"
Script = Callable[[CognitoRequests], Awaitable[None]]


async def sent_then_answer(requests: CognitoRequests) -> None:
    requests.sent += 1


@dataclass
class FakeCognito:
    """A CognitoGateway whose next answers are scripted: each script runs before the call answers."""

    start: list[Script] = field(default_factory=list)
    answer: list[Script] = field(default_factory=list)
    code: str = CODE

    async def start_user_auth(
        self,
        username: str,
        preferred: Channel,
        end_user: EndUser,
        deadline: Deadline,
        requests: CognitoRequests,
    ) -> AuthChallenge:
        await (self.start.pop(0) if self.start else sent_then_answer)(requests)
        return AuthChallenge(preferred.challenge_name, "session-secret", "ada", "a***@e***")

    async def select_challenge(self, *args: Any) -> AuthChallenge:
        raise AssertionError("not used")

    async def answer_otp(
        self,
        username: str,
        session: str,
        channel: Channel,
        code: str,
        end_user: EndUser,
        deadline: Deadline,
        requests: CognitoRequests,
    ) -> CognitoTokens:
        await (self.answer.pop(0) if self.answer else sent_then_answer)(requests)
        if code != self.code:
            raise CognitoError(CognitoErrorKind.CODE_MISMATCH, "CodeMismatchException", "Invalid code")
        return CognitoTokens("id-token", "access-token", "refresh-token", 3600, "Bearer")

    async def user_attributes(
        self, username: str, tokens: CognitoTokens, deadline: Deadline
    ) -> dict[str, str]:
        return {"email": "ada@example.com", "given_name": "Ada"}

    async def self_test(self, deadline: Deadline) -> Sequence[ConnectionCheck]:
        return []

    async def warm_up(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


class FakeVerifier:
    """Claims as Cognito would put them in a verified ID token."""

    async def verify(self, id_token: str) -> Mapping[str, Any]:
        return {
            "sub": "sub-ada",
            "cognito:username": "ada",
            "email": "ada@example.com",
            "given_name": "Ada",
            "auth_time": 1,
        }

    async def warm_up(self) -> None:
        return None

    async def aclose(self) -> None:
        return None


def policy(**overrides: Any) -> ConnectionPolicy:
    """The connection defaults, from the one place they are defined."""
    config = ConnectionConfig.model_validate(
        {"region": "us-east-1", "user_pool_id": "us-east-1_X", "client_id": "c", **overrides}
    )
    return policy_from_config("demo", config)


class Steps:
    """Generate and Validate over one fake connection, store and clock."""

    def __init__(self, **policy_overrides: Any) -> None:
        self.clock = FakeClock()
        self.store = InMemoryChallengeStore(self.clock)
        self.cognito = FakeCognito()
        self.connection = Connection(policy(**policy_overrides), self.cognito, FakeVerifier())
        self.generate_step = GenerateOtpStep(self.store, self.clock)
        self.validate_step = ValidateOtpStep(self.store, self.clock)

    def journey(self, run: str = "run-1", execution: str = "") -> JourneyContext:
        return JourneyContext("jit", run, "send", step_execution_id=execution)

    async def generate(
        self, run: str = "run-1", execution: str = "", deadline: float | None = None
    ) -> StepOutcome[CodeSent]:
        step = StepConfiguration("demo", "ada@example.com", Channel.EMAIL)
        return await self.generate_step.run(
            GenerateRequest(self.journey(run, execution), step),
            self.connection,
            Deadline.after(deadline, self.clock),
        )

    async def validate(self, code: str, run: str = "run-1") -> StepOutcome[CodeVerified]:
        step = StepConfiguration("demo", "ada@example.com", None, scopes=("openid", "email"))
        return await self.validate_step.run(
            ValidateRequest(self.journey(run), step, code), self.connection, Deadline(None, self.clock)
        )

    async def sends(self) -> int:
        return await self.store.events("demo", sends_subject("demo", "ada@example.com"))

    async def wrong_codes(self) -> int:
        return await self.store.events("demo", lockout_subject("demo", "ada@example.com"))


def failure_code(outcome: StepOutcome[Any]) -> FailureCode | None:
    return outcome.failed.code if outcome.failed is not None else None


def run(scenario: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(scenario())


def test_a_wrong_code_leaves_two_attempts_and_the_right_one_releases_claims_by_scope() -> None:
    async def scenario() -> None:
        steps = Steps()
        assert isinstance(await steps.generate(), Success)
        wrong = await steps.validate("87654321")
        assert isinstance(wrong, FailureBranch) and wrong.failure.attempts_remaining == 2
        right = await steps.validate(CODE)
        assert isinstance(right, Success)
        assert right.result.claims == {
            "sub": "sub-ada",
            "email": "ada@example.com",
        }  # no given_name: not in scope
        assert await steps.wrong_codes() == 1  # the right code was forgiven, the wrong one stays

    run(scenario)


def test_a_generate_cancelled_before_its_request_left_gives_the_send_back() -> None:
    async def scenario() -> None:
        steps = Steps()
        gate = asyncio.Event()

        async def connecting(requests: CognitoRequests) -> None:
            await gate.wait()  # cancelled while still connecting: nothing was sent

        steps.cognito.start.append(connecting)
        task = asyncio.create_task(steps.generate())
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert task.cancelled()
        assert await steps.sends() == 0
        assert isinstance(await steps.generate(), Success)  # the key was released: no cooldown

    run(scenario)


def test_a_generate_cancelled_after_its_request_left_counts_and_holds_the_cooldown() -> None:
    async def scenario() -> None:
        steps = Steps()
        gate = asyncio.Event()

        async def sent_then_slow(requests: CognitoRequests) -> None:
            requests.sent += 1
            await gate.wait()

        steps.cognito.start.append(sent_then_slow)
        task = asyncio.create_task(steps.generate(execution="x"))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert await steps.sends() == 1
        retried = await steps.generate(execution="x")  # the same execution: no replay of a lost challenge
        assert failure_code(retried) is FailureCode.RESEND_TOO_SOON
        assert failure_code(await steps.validate(CODE)) is FailureCode.CHALLENGE_NOT_FOUND
        steps.clock.advance(31)
        assert isinstance(await steps.generate(execution="x"), Success)

    run(scenario)


def test_a_timeout_after_sending_counts_and_a_throttle_does_not() -> None:
    async def scenario() -> None:
        steps = Steps()

        async def timed_out(requests: CognitoRequests) -> None:
            requests.sent += 1
            raise CognitoError(CognitoErrorKind.TIMEOUT, "ReadTimeoutError", "no answer")

        async def throttled(requests: CognitoRequests) -> None:
            requests.sent += 1
            raise CognitoError(CognitoErrorKind.THROTTLED, "TooManyRequestsException", "slow down")

        steps.cognito.start.append(timed_out)
        assert failure_code(await steps.generate("r1")) is FailureCode.COGNITO_TIMEOUT
        steps.cognito.start.append(throttled)
        assert failure_code(await steps.generate("r2")) is FailureCode.THROTTLED
        assert await steps.sends() == 1  # the timeout may have sent a code; the throttle certainly did not

    run(scenario)


def test_a_validate_cancelled_after_its_code_left_spends_the_attempt() -> None:
    async def scenario() -> None:
        steps = Steps()
        await steps.generate()
        gate = asyncio.Event()

        async def judged_slowly(requests: CognitoRequests) -> None:
            requests.sent += 1
            await gate.wait()

        steps.cognito.answer.append(judged_slowly)
        task = asyncio.create_task(steps.validate(CODE))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        wrong = await steps.validate("87654321")
        assert isinstance(wrong, FailureBranch) and wrong.failure.attempts_remaining == 1

    run(scenario)


def test_a_challenge_expires_with_the_clock_not_the_wall() -> None:
    async def scenario() -> None:
        steps = Steps()
        await steps.generate()
        steps.clock.advance(181)
        assert failure_code(await steps.validate(CODE)) is FailureCode.CHALLENGE_EXPIRED

    run(scenario)


def test_wrong_codes_across_journeys_lock_the_identifier_until_the_window_passes() -> None:
    async def scenario() -> None:
        steps = Steps(lockout_threshold=2, lockout_window_seconds=60, resend_cooldown_seconds=0)
        for run_id in ("a", "b"):
            await steps.generate(run_id)
            assert failure_code(await steps.validate("87654321", run_id)) is FailureCode.INVALID_CODE
        assert failure_code(await steps.generate("c")) is FailureCode.IDENTIFIER_LOCKED
        steps.clock.advance(61)
        assert isinstance(await steps.generate("c"), Success)

    run(scenario)


def test_a_session_cognito_ends_after_a_wrong_code_is_exhausted_not_expired() -> None:
    async def scenario() -> None:
        steps = Steps()
        await steps.generate()
        assert failure_code(await steps.validate("87654321")) is FailureCode.INVALID_CODE

        async def dead(requests: CognitoRequests) -> None:
            requests.sent += 1
            raise CognitoError(
                CognitoErrorKind.SESSION_INVALID, "NotAuthorizedException", "Invalid session for the user."
            )

        steps.cognito.answer.append(dead)
        outcome = await steps.validate(CODE)
        assert isinstance(outcome, FailureBranch)
        assert (outcome.failure.code, outcome.failure.attempts_remaining) == (
            FailureCode.ATTEMPTS_EXHAUSTED,
            0,
        )

    run(scenario)


def test_a_validate_cancelled_before_its_code_left_gives_the_attempt_back() -> None:
    async def scenario() -> None:
        steps = Steps()
        await steps.generate()
        gate = asyncio.Event()

        async def connecting(requests: CognitoRequests) -> None:
            await gate.wait()  # nothing sent yet

        steps.cognito.answer.append(connecting)
        task = asyncio.create_task(steps.validate(CODE))
        await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert await steps.wrong_codes() == 0
        wrong = await steps.validate("87654321")
        assert isinstance(wrong, FailureBranch) and wrong.failure.attempts_remaining == 2

    run(scenario)


def test_a_retry_waits_for_its_executions_first_attempt_and_replays_it() -> None:
    async def scenario() -> None:
        steps = Steps()

        async def slowly(requests: CognitoRequests) -> None:
            requests.sent += 1
            for _ in range(5):  # the retry asks the store meanwhile
                await asyncio.sleep(0)

        steps.cognito.start.append(slowly)
        first = asyncio.create_task(steps.generate(execution="x", deadline=5))
        await asyncio.sleep(0)
        retried = await steps.generate(execution="x", deadline=5)
        answered = await first
        assert isinstance(retried, Success) and isinstance(answered, Success)
        assert retried.result == answered.result
        assert await steps.sends() == 1  # one code: the retry answered with the first attempt's

    run(scenario)


def test_a_reservation_whose_instance_died_is_taken_over_once_its_lease_ends() -> None:
    async def scenario() -> None:
        steps, store = failing_steps()  # nothing fails: the store's calls are counted
        gate = asyncio.Event()

        async def never(requests: CognitoRequests) -> None:
            requests.sent += 1
            await gate.wait()

        # The instance "dies" mid-call: the task never settles (no cancellation runs). Its lease ends with its
        # 3 s deadline (and the margin for clock skew).
        steps.cognito.start.append(never)
        lost = asyncio.create_task(steps.generate(execution="x", deadline=3))
        await asyncio.sleep(0)
        started = steps.clock.mono
        # A retry within the lease waits for it, then gives up before its own deadline: nothing sent.
        with pytest.raises(ExecutionInFlightError) as waited:
            await steps.generate(execution="x", deadline=2)
        assert 1.7 <= steps.clock.mono - started <= 1.75
        # The lease cost the first attempt nothing; the wait, one store round trip per ask (backing off).
        assert store.calls["begin_send"] == 1 + 7
        assert 2.2 <= waited.value.retry_after_seconds <= 2.3  # what is left of the lease
        assert await steps.sends() == 1
        steps.clock.advance(waited.value.retry_after_seconds)
        # Past the lease, the same execution takes it over: one more code, the lost one still counted.
        taken = await steps.generate(execution="x", deadline=5)
        assert isinstance(taken, Success)
        # Once: a later retry of the execution replays, another execution waits for the cooldown.
        assert isinstance(await steps.generate(execution="x", deadline=5), Success)
        assert failure_code(await steps.generate(execution="y", deadline=5)) is FailureCode.RESEND_TOO_SOON
        assert await steps.sends() == 2
        assert isinstance(await steps.validate(CODE), Success)
        lost.cancel()
        await asyncio.gather(lost, return_exceptions=True)

    run(scenario)


def test_another_execution_does_not_take_over_a_lost_reservation() -> None:
    async def scenario() -> None:
        steps = Steps(resend_cooldown_seconds=30)
        gate = asyncio.Event()

        async def never(requests: CognitoRequests) -> None:
            requests.sent += 1
            await gate.wait()

        steps.cognito.start.append(never)
        lost = asyncio.create_task(steps.generate(execution="x", deadline=3))
        await asyncio.sleep(0)
        steps.clock.advance(10)  # past the lease, within the cooldown the lost send started
        assert failure_code(await steps.generate(execution="y", deadline=5)) is FailureCode.RESEND_TOO_SOON
        steps.clock.advance(21)
        assert isinstance(await steps.generate(execution="y", deadline=5), Success)
        assert await steps.sends() == 2
        lost.cancel()
        await asyncio.gather(lost, return_exceptions=True)

    run(scenario)


def failing_steps(**failures: int) -> tuple[Steps, FailingStore]:
    steps = Steps()
    store = FailingStore(steps.store, **failures)
    steps.generate_step = GenerateOtpStep(store, steps.clock)  # type: ignore[arg-type]
    steps.validate_step = ValidateOtpStep(store, steps.clock)  # type: ignore[arg-type]
    return steps, store


def test_a_store_failing_before_cognito_is_asked_means_the_step_did_not_run() -> None:
    async def scenario() -> None:
        steps, _ = failing_steps(begin_send=1, begin_attempt=1)

        async def asked(requests: CognitoRequests) -> None:
            raise AssertionError("Cognito was asked")

        steps.cognito.start.append(asked)
        with pytest.raises(StoreUnavailableError) as refused:
            await steps.generate(deadline=5)
        assert refused.value.reason == "CHALLENGE_STORE_UNAVAILABLE" and refused.value.retry_after_seconds > 0
        assert steps.cognito.start == [asked] and await steps.sends() == 0  # Cognito was not asked
        steps.cognito.start.clear()
        assert isinstance(await steps.generate(deadline=5), Success)  # the same call, made again
        with pytest.raises(StoreUnavailableError):
            await steps.validate(CODE)
        assert isinstance(await steps.validate(CODE), Success)

    run(scenario)


def test_a_give_back_the_store_fails_leaves_cognitos_answer_to_the_journey() -> None:
    """Cognito refused before sending (a misconfigured connection): nothing was sent, and the give-back of the
    reservation fails too. The journey gets Cognito's failure, not a retryable CHALLENGE_STORE_UNAVAILABLE that
    would send it round a retry loop (and whose retry would wait out the reservation's lease)."""

    async def scenario() -> None:
        steps, store = failing_steps(finish_send=1)

        async def misconfigured(requests: CognitoRequests) -> None:
            requests.sent += 1
            raise CognitoError(
                CognitoErrorKind.MISCONFIGURED, "InvalidParameterException", "USER_AUTH not enabled"
            )

        steps.cognito.start.append(misconfigured)
        assert failure_code(await steps.generate(deadline=5)) is FailureCode.CONNECTION_MISCONFIGURED
        assert store.calls["finish_send"] == 1  # a give-back is made once

    run(scenario)


def test_a_store_failing_after_the_code_went_out_is_tried_again_within_the_deadline() -> None:
    async def scenario() -> None:
        steps, store = failing_steps(finish_send=3)
        assert isinstance(await steps.generate(deadline=5), Success)
        assert store.calls["finish_send"] == 4
        assert isinstance(await steps.validate(CODE), Success)  # the challenge was recorded
        # A store that stays down: the step ran, so it answers (the runner's CHALLENGE_STORE_UNAVAILABLE),
        # having tried within its deadline and no longer.
        steps, store = failing_steps(finish_send=1000)
        started = steps.clock.mono
        with pytest.raises(ChallengeStoreError):
            await steps.generate(deadline=1)
        assert store.calls["finish_send"] > 1 and steps.clock.mono - started <= 1

    run(scenario)
