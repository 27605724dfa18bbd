"""Recording what Cognito did when the store falters: the write is tried again within the step's deadline.

Once Cognito has sent or judged a code the step has run, and its record in the store (the challenge Validate
will need, an exhausted challenge's removal) must not be lost to a store failing for a moment: a Redis
failover takes seconds (about 3 s measured under load, docs/fleet.md), a step's deadline usually more. So the write is
made again with full-jitter backoff while the deadline leaves time for it and the answer, and only then does
the step give up (the journey's CHALLENGE_STORE_UNAVAILABLE failure).

Only writes that may be made twice come here (ports.ChallengeStore says which): a write whose reply was lost
may have been applied, and one that gives counts back would give them back twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable

from .clock import Clock
from .deadline import Deadline
from .errors import ChallengeStoreError

log = logging.getLogger(__name__)

# A step without a deadline tries this long: past a failover, with room to spare.
SETTLE_SECONDS = 5.0
# Kept back from the deadline for the answer to reach the caller.
ANSWER_MARGIN_SECONDS = 0.1
FIRST_PAUSE_SECONDS = 0.05
MAX_PAUSE_SECONDS = 0.5
# A bound beside the time (a fake clock in tests does not move by itself).
MAX_TRIES = 16

# Settles running on after their step was cancelled: referenced until they end (asyncio keeps tasks weakly).
_RUNNING: set[asyncio.Task[None]] = set()


async def settle(write: Callable[[], Awaitable[None]], deadline: Deadline, clock: Clock) -> None:
    """Run `write` until it succeeds, shielded from the step's cancellation (the record must not be left half
    made), trying again after a ChallengeStoreError while the deadline allows; the last error is raised."""
    task = asyncio.ensure_future(_tries(write, deadline, clock))
    _RUNNING.add(task)
    task.add_done_callback(_RUNNING.discard)
    await asyncio.shield(task)


async def _tries(write: Callable[[], Awaitable[None]], deadline: Deadline, clock: Clock) -> None:
    started = clock.monotonic()
    ceiling = FIRST_PAUSE_SECONDS
    for tries in range(1, MAX_TRIES + 1):
        try:
            await write()
            if tries > 1:
                log.info("the store took a step's record on try %d", tries)
            return
        except ChallengeStoreError as exc:
            pause = random.uniform(0, ceiling)
            budget = SETTLE_SECONDS - (clock.monotonic() - started)
            left = deadline.remaining()
            if left is not None:
                budget = min(budget, left - ANSWER_MARGIN_SECONDS)
            if tries == MAX_TRIES or budget < pause:
                raise
            log.info(
                "the store failed to take a step's record (%s); trying again",
                type(exc.__cause__ or exc).__name__,
            )
            await clock.sleep(pause)
            ceiling = min(ceiling * 2, MAX_PAUSE_SECONDS)
