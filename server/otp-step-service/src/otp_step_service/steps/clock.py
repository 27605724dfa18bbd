"""Time as the steps see it: wall-clock seconds for what instances share, a monotonic clock for budgets.

A seam: domain tests pass a fake clock instead of waiting for the wall clock.
"""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    """Where the steps read the time."""

    def now(self) -> float:
        """Wall-clock epoch seconds (challenge expiry: instances sharing a store share no monotonic clock)."""

    def monotonic(self) -> float:
        """Monotonic seconds (deadlines and durations)."""


class SystemClock:
    """The real clocks."""

    def now(self) -> float:
        """time.time()."""
        return time.time()

    def monotonic(self) -> float:
        """time.monotonic()."""
        return time.monotonic()


SYSTEM_CLOCK: Clock = SystemClock()
