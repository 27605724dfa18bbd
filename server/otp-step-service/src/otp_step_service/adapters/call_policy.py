"""How each Cognito call is bounded and retried, as policy objects (python-api-core's Retry / Timeout, small).

Kept apart from the adapter so the rules read in one place and tests can vary them.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

from otp_step_service.steps.deadline import Deadline
from otp_step_service.steps.model import CognitoErrorKind


@dataclass(frozen=True, slots=True)
class CallTimeout:
    """A Cognito call's time budget: the connection's call timeout, shrunk to what the caller's deadline leaves.

    The margin is kept back so a call that times out still leaves time to answer the caller with a typed
    outcome instead of a bare DEADLINE_EXCEEDED.
    """

    call_seconds: float
    answer_margin_seconds: float = 0.05
    # Below this no Cognito call can complete: the call is not started at all.
    minimum_seconds: float = 0.02

    def budget(self, deadline: Deadline) -> float | None:
        """Seconds this call may take, or None when there is no time left for it."""
        budget = self.call_seconds
        left = deadline.remaining()
        if left is not None:
            budget = min(budget, left - self.answer_margin_seconds)
        return budget if budget >= self.minimum_seconds else None


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Which Cognito failures are retried, how often, and the full-jitter exponential backoff between tries.

    Calls that send or judge codes retry only what Cognito rejects before acting (throttling): a timeout or a
    5xx may already have sent a code, so it is never re-sent. A retry is not started when the pause would
    leave no time for the call itself.
    """

    retry_on: frozenset[CognitoErrorKind]
    max_retries: int
    initial_seconds: float = 0.1
    multiplier: float = 2.0
    maximum_seconds: float = 1.0

    def pause(self, retry: int) -> float:
        """The pause before retry number `retry` (0-based): uniform in [0, min(maximum, initial * multiplier**retry)]."""
        return random.uniform(0, min(self.maximum_seconds, self.initial_seconds * self.multiplier**retry))

    def should_retry(
        self, kind: CognitoErrorKind, retry: int, pause: float, timeout: CallTimeout, deadline: Deadline
    ) -> bool:
        """Whether to retry after a failure of `kind`, given what the deadline leaves after the pause."""
        if kind not in self.retry_on or retry >= self.max_retries:
            return False
        left = deadline.remaining()
        return left is None or left - pause - timeout.answer_margin_seconds >= timeout.minimum_seconds * 5


def throttle_retries(max_retries: int) -> RetryPolicy:
    """The policy for InitiateAuth and challenge answers: throttling only."""
    return RetryPolicy(frozenset({CognitoErrorKind.THROTTLED}), max_retries)


def read_retries(max_retries: int = 2) -> RetryPolicy:
    """The policy for reads (GetUser, Describe*): safe to repeat, so transient faults are retried too."""
    return RetryPolicy(
        frozenset({CognitoErrorKind.THROTTLED, CognitoErrorKind.UNAVAILABLE, CognitoErrorKind.TIMEOUT}),
        max_retries,
    )
