"""A step's time budget, so every Cognito call is bounded by what is left of the caller's gRPC deadline."""

from __future__ import annotations

from dataclasses import dataclass, field

from .clock import SYSTEM_CLOCK, Clock


@dataclass(frozen=True, slots=True)
class Deadline:
    """An absolute point on the monotonic clock; `None` means the caller gave no deadline."""

    at: float | None
    clock: Clock = field(default=SYSTEM_CLOCK, compare=False, repr=False)

    @classmethod
    def after(cls, seconds: float | None, clock: Clock = SYSTEM_CLOCK) -> Deadline:
        """The deadline `seconds` from now (None: unbounded)."""
        return cls(None if seconds is None else clock.monotonic() + seconds, clock)

    def remaining(self) -> float | None:
        """Seconds left (never negative), or None when unbounded."""
        return None if self.at is None else max(0.0, self.at - self.clock.monotonic())
