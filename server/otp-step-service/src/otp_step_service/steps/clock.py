"""Time as the steps see it: wall-clock seconds for what instances share, a monotonic clock for budgets.

A seam: domain tests pass a fake clock instead of waiting for the wall clock.
"""

from __future__ import annotations

import asyncio
import time
from typing import Protocol


class Clock(Protocol):
    """Where the steps read the time."""

    def now(self) -> float:
        """Wall-clock epoch seconds (challenge expiry: instances sharing a store share no monotonic clock)."""

    def monotonic(self) -> float:
        """Monotonic seconds (deadlines and durations)."""

    async def sleep(self, seconds: float) -> None:
        """Pause the calling step for `seconds` (a fake clock moves on by as much instead)."""


class SystemClock:
    """The real clocks."""

    def now(self) -> float:
        """time.time()."""
        return time.time()

    def monotonic(self) -> float:
        """time.monotonic()."""
        return time.monotonic()

    async def sleep(self, seconds: float) -> None:
        """asyncio.sleep()."""
        await asyncio.sleep(seconds)


SYSTEM_CLOCK: Clock = SystemClock()
