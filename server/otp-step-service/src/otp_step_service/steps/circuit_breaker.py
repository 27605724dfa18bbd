"""A circuit breaker per Cognito connection: when Cognito is down, steps fail fast instead of each waiting out
its call timeout, and readiness can say which connection is failing.

Only outages count: a call that could not reach Cognito or got no answer in time (CognitoErrorKind
UNAVAILABLE / TIMEOUT). Any answer from Cognito — a wrong code, an unknown user, even throttling (Cognito is
up and refusing, and says when to retry) — shows it is reachable and closes the count again.
`failure_threshold` consecutive outages open the circuit; after `open_seconds` one call is let through as a
probe (half-open): its success closes the circuit, its failure opens it for another `open_seconds`.
"""

from __future__ import annotations

import enum
import time
from collections.abc import Callable

from otp_step_service.steps.model import CognitoErrorKind

OUTAGES = frozenset({CognitoErrorKind.UNAVAILABLE, CognitoErrorKind.TIMEOUT})


class CircuitState(enum.StrEnum):
    """Where the breaker is."""

    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


class CircuitBreaker:
    """Consecutive outages open it; a half-open probe closes it. Runs on one event loop: no locking needed."""

    def __init__(
        self,
        failure_threshold: int = 5,
        open_seconds: float = 30.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.failure_threshold = failure_threshold
        self.open_seconds = open_seconds
        self._clock = clock
        self.state = CircuitState.CLOSED
        self._outages = 0
        self._opened_at = 0.0
        self._probing = False
        # Called with the new state on every change (readiness); set by whoever watches it.
        self.on_change: Callable[[CircuitState], None] | None = None

    @property
    def enabled(self) -> bool:
        """A threshold of 0 turns the breaker off."""
        return self.failure_threshold > 0

    @property
    def available(self) -> bool:
        """Whether a call would be let through now (closed, half-open, or open long enough for a probe)."""
        if self.state is not CircuitState.OPEN:
            return True
        return self._clock() - self._opened_at >= self.open_seconds

    def allow(self) -> bool:
        """Whether a call may go to Cognito now (in half-open state: the one probe)."""
        if not self.enabled or self.state is CircuitState.CLOSED:
            return True
        if self.state is CircuitState.OPEN:
            if self._clock() - self._opened_at < self.open_seconds:
                return False
            self._change(CircuitState.HALF_OPEN)
        if self._probing:
            return False
        self._probing = True
        return True

    def record(self, kind: CognitoErrorKind | None) -> None:
        """A call ended: `kind` None when Cognito answered with success, the error's kind otherwise."""
        if not self.enabled:
            return
        self._probing = False
        if kind in OUTAGES:
            self._outages += 1
            if self.state is CircuitState.HALF_OPEN or self._outages >= self.failure_threshold:
                self._opened_at = self._clock()
                self._change(CircuitState.OPEN)
            return
        self._outages = 0
        self._change(CircuitState.CLOSED)

    def release(self) -> None:
        """A call ended without an answer either way (cancelled): a half-open probe may be tried again."""
        self._probing = False

    def _change(self, state: CircuitState) -> None:
        if state is self.state:
            return
        self.state = state
        if self.on_change is not None:
            self.on_change(state)
