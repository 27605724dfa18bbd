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

from harness import FakeClock
from otp_step_service.adapters.memory_store import InMemoryChallengeStore
from otp_step_service.config.connections import ConnectionConfig, policy_from_config
from otp_step_service.steps.challenges import lockout_subject, sends_subject
from otp_step_service.steps.deadline import Deadline
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

    async def generate(self, run: str = "run-1", execution: str = "") -> StepOutcome[CodeSent]:
        step = StepConfiguration("demo", "ada@example.com", Channel.EMAIL)
        return await self.generate_step.run(
            GenerateRequest(self.journey(run, execution), step), self.connection, Deadline(None, self.clock)
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


def test_an_abandoned_reservation_stops_blocking_its_execution() -> None:
    async def scenario() -> None:
        steps = Steps()
        gate = asyncio.Event()

        async def never(requests: CognitoRequests) -> None:
            requests.sent += 1
            await gate.wait()

        # The process "dies" mid-call: the task is dropped without settling (no cancellation runs).
        steps.cognito.start.append(never)
        task = asyncio.create_task(steps.generate(execution="x"))
        await asyncio.sleep(0)
        assert failure_code(await steps.generate(execution="x")) is FailureCode.RESEND_TOO_SOON
        steps.clock.advance(121)  # past RESERVATION_SECONDS
        assert isinstance(await steps.generate(execution="x"), Success)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)

    run(scenario)
