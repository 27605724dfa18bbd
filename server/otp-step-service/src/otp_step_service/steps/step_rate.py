"""Steps per second per caller: the port Authentication asks, the arithmetic, and the in-process limiter.

The limit is GCRA (the generic cell rate algorithm), which is a token bucket written as one number: the
*theoretical arrival time* (TAT) of the caller's next step if it kept exactly to its rate. A step is allowed
while the TAT runs no further ahead of now than the burst allows, and each allowed step pushes the TAT one
emission interval (1 / rate) on. The burst is one second's worth of steps, at least one, as the token bucket
it replaces had: `rate` steps at once from idle, then `rate` a second. One number per caller is what makes the
shared version cheap: one GET and one SET with a TTL in a Lua script (adapters/redis_rate.py).

Two implementations of `StepRate`: `InProcessStepRate` for the in-memory store (one process, nothing shared),
and `RedisStepRate` when the challenge store is Redis, so every instance and every process draws on one
bucket per caller.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from otp_step_service.steps.clock import SYSTEM_CLOCK, Clock

# Floating-point slack: 49 intervals of 0.02 s must fit a 0.98 s tolerance even when the sum is 0.98000000001.
_EPSILON = 1e-9

# Callers kept in the in-process table before idle ones are forgotten.
MAX_CALLERS = 10_000


@dataclass(frozen=True, slots=True)
class RateDecision:
    """Whether one more step may run now, and if not, how long until one would."""

    allowed: bool
    retry_after_seconds: float = 0.0


class StepRate(Protocol):
    """Takes one step from a caller's allowance. Failures of a shared store raise ChallengeStoreError."""

    async def take(self, caller: str, rate: float) -> RateDecision:
        """Allow one step of `caller` at `rate` steps per second (> 0), or say how long to wait."""

    async def aclose(self) -> None:
        """Release the limiter's connections."""


@dataclass(frozen=True, slots=True)
class Gcra:
    """The limit for one rate: the emission interval and how far ahead of now the TAT may run."""

    interval: float
    tolerance: float

    @classmethod
    def per_second(cls, rate: float) -> Gcra:
        """`rate` steps a second with one second's worth (at least one step) of burst."""
        interval = 1.0 / rate
        return cls(interval, (max(1.0, rate) - 1.0) * interval)

    def take(self, tat: float | None, now: float) -> tuple[RateDecision, float]:
        """The decision for one step at `now`, and the TAT to keep (`tat` unchanged when refused). A TAT in
        the past, or none, means an idle caller: its full burst is available."""
        current = now if tat is None or tat < now else tat
        if current - now > self.tolerance + _EPSILON:
            return RateDecision(False, current - self.tolerance - now), current
        return RateDecision(True), current + self.interval


class InProcessStepRate:
    """StepRate for one process (the in-memory store): a TAT per caller in a dict, bounded by forgetting idle
    callers (an idle caller's TAT is in the past, so forgetting it changes nothing)."""

    def __init__(self, clock: Clock = SYSTEM_CLOCK, max_callers: int = MAX_CALLERS) -> None:
        self._clock = clock
        self._max = max_callers
        self._tats: dict[str, float] = {}

    def __len__(self) -> int:
        return len(self._tats)

    async def take(self, caller: str, rate: float) -> RateDecision:
        """GCRA on this process's table (monotonic time: nothing is shared)."""
        now = self._clock.monotonic()
        tat = self._tats.get(caller)
        if tat is None and len(self._tats) >= self._max:
            # Without authentication the caller is the peer address, new with every client connection.
            for idle in [key for key, value in self._tats.items() if value <= now]:
                del self._tats[idle]
        decision, self._tats[caller] = Gcra.per_second(rate).take(tat, now)
        return decision

    async def aclose(self) -> None:
        """Nothing to release."""
