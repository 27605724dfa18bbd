"""How long Cognito takes, per connection and operation, so an answer made without it takes as long.

A decoy is answered without a Cognito call (a wrong code for an unknown user at Validate, a "sent" code
refused through another alias at Generate), or after one Cognito answers sooner than a real one (a "sent"
code for a user Cognito says does not exist, is disabled or lacks the channel: it waits out the rest). Answered at once it would tell them from real ones by timing alone
(~1 ms against ~4 ms on the emulator, 100+ ms on AWS). So the decoy waits a duration drawn from the recent real
calls of the same connection and operation: the same distribution, whatever it is *now*. Only the latest
`RECENT` calls within the last `window_seconds` are drawn from, so when Cognito's latency moves the decoys
follow within that many real calls (or that window, whichever comes first); when none is that recent, the
latest few stand in.
"""

from __future__ import annotations

import asyncio
import enum
import random
from collections import deque

from .clock import SYSTEM_CLOCK, Clock
from .deadline import Deadline


class Operation(enum.Enum):
    """What the decoy stands in for."""

    SEND = "send"  # Generate: Cognito starting the sign-in and sending the code
    JUDGE = "judge"  # Validate: Cognito judging a wrong code


class CognitoLatency:
    """Recent real durations per (connection, operation); draws for decoys; sleeps them."""

    # Before any real call was seen: a typical Cognito round trip [obs: 200-300 ms warm on AWS].
    PRIOR_SECONDS = 0.2
    # The decoy draws from at most this many of the latest calls within the window (or, when none is within
    # it, from this many of the latest whenever they were).
    RECENT = 16

    def __init__(self, keep: int = 64, window_seconds: float = 10.0, clock: Clock = SYSTEM_CLOCK) -> None:
        self._keep = keep
        self._window = window_seconds
        self._clock = clock
        self._seen: dict[tuple[str, Operation], deque[tuple[float, float]]] = {}
        self.oversleep = 0.0
        """How much longer than asked a decoy's sleep recently took (an exponential average, seconds)."""

    def observe(self, connection: str, operation: Operation, seconds: float) -> None:
        """A real call took `seconds`."""
        key = (connection, operation)
        self._seen.setdefault(key, deque(maxlen=self._keep)).append((self._clock.monotonic(), seconds))

    def draw(self, connection: str, operation: Operation) -> float:
        """A duration for a decoy: one of the recent real ones, uniformly."""
        seen = self._seen.get((connection, operation))
        if not seen:
            return self.PRIOR_SECONDS
        since = self._clock.monotonic() - self._window
        latest = list(seen)[-self.RECENT :]
        recent = [seconds for at, seconds in latest if at >= since] or [seconds for _, seconds in latest]
        # Not for security: which real duration is replayed only has to follow their distribution.
        return recent[random.randrange(len(recent))]

    async def as_long_as_cognito(
        self, connection: str, operation: Operation, deadline: Deadline, spent: float = 0.0
    ) -> None:
        """Wait as long as a real call would (never past the caller's deadline), less the `spent` seconds the
        step already took for it (a call Cognito answered sooner than a real one: "no such user")."""
        wait = self.draw(connection, operation) - spent
        left = deadline.remaining()
        if left is not None:
            wait = min(wait, max(left - 0.05, 0.0))
        # A real call's duration already includes the time this process took to get back to it once Cognito
        # answered; a sleep adds its own wake-up delay on top (milliseconds on a busy machine), so the decoy
        # asks for that much less (the recent average overshoot of its sleeps).
        wait -= self.oversleep
        if wait > 0:
            asked = self._clock.monotonic()
            await asyncio.sleep(wait)
            took = self._clock.monotonic() - asked
            self.oversleep += 0.5 * (max(took - wait, 0.0) - self.oversleep)
