"""The circuit breaker: consecutive outages open it, a half-open probe closes or reopens it, answers reset it."""

from __future__ import annotations

from otp_step_service.steps.circuit_breaker import CircuitBreaker, CircuitState
from otp_step_service.steps.model import CognitoErrorKind

DOWN = CognitoErrorKind.UNAVAILABLE


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_consecutive_outages_open_it_and_one_probe_after_the_open_time_closes_it() -> None:
    clock = Clock()
    changes: list[CircuitState] = []
    breaker = CircuitBreaker(3, 10, clock)
    breaker.on_change = changes.append
    for _ in range(2):
        assert breaker.allow()
        breaker.record(CognitoErrorKind.TIMEOUT)
    assert breaker.state is CircuitState.CLOSED
    assert breaker.allow()
    breaker.record(DOWN)
    assert breaker.state is CircuitState.OPEN and not breaker.available
    assert not breaker.allow()
    clock.now += 10
    assert breaker.available
    assert breaker.allow()  # the probe
    assert not breaker.allow()  # only one at a time
    breaker.record(None)
    assert breaker.state is CircuitState.CLOSED
    assert changes == [CircuitState.OPEN, CircuitState.HALF_OPEN, CircuitState.CLOSED]


def test_a_failed_probe_opens_it_again_and_a_cancelled_one_may_be_retried() -> None:
    clock = Clock()
    breaker = CircuitBreaker(1, 5, clock)
    breaker.record(DOWN)
    clock.now += 5
    assert breaker.allow()
    breaker.release()  # cancelled: neither answer nor outage
    assert breaker.allow()
    breaker.record(DOWN)
    assert breaker.state is CircuitState.OPEN and not breaker.allow()


def test_any_answer_from_cognito_resets_the_count_and_throttling_is_no_outage() -> None:
    breaker = CircuitBreaker(2, 5, Clock())
    for kind in (DOWN, CognitoErrorKind.CODE_MISMATCH, DOWN, CognitoErrorKind.THROTTLED, DOWN, None, DOWN):
        breaker.record(kind)
    assert breaker.state is CircuitState.CLOSED


def test_a_threshold_of_zero_turns_it_off() -> None:
    breaker = CircuitBreaker(0, 5, Clock())
    for _ in range(10):
        breaker.record(DOWN)
    assert breaker.allow() and breaker.state is CircuitState.CLOSED
