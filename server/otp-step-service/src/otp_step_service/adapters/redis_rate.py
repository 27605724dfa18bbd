"""Steps per second per caller shared by every instance: GCRA (step_rate.Gcra) in one Lua script on Redis.

With several instances (or OTP_STEP_PROCESSES > 1) a caller's steps land on all of them, so a bucket per
process would let it run the rate once per process. Here the caller's theoretical arrival time lives in Redis
under `<prefix>rate:{<32 hex of sha256(caller)>}` (its own hash slot in a Redis Cluster): the key's length does not depend on the caller's name or peer
address, and it expires when the TAT passes (an idle caller's key is gone, and a missing key means a full
burst). The script decides and writes in one atomic step, so two instances can never both spend the last
step of a burst.

Time is each instance's wall clock (the same clock the challenge store's expiries use), passed in by the
caller; a TAT already ahead of a lagging instance's clock simply counts as ahead, so clock skew between
instances shifts the rate by at most the skew, never lets a caller past its burst.

On a Redis failure the step is refused (ChallengeStoreError, answered UNAVAILABLE by Authentication): the
same fail-closed policy as the challenge store, whose steps cannot run without that Redis anyway.
"""

from __future__ import annotations

import hashlib

from otp_step_service.adapters.redis_connection import RedisClient, primary_script, run_script
from otp_step_service.adapters.redis_encoding import text
from otp_step_service.adapters.redis_store import store_errors
from otp_step_service.steps.clock import SYSTEM_CLOCK, Clock
from otp_step_service.steps.step_rate import Gcra, RateDecision

# KEYS: the caller's TAT. ARGV: now (s), emission interval (s), tolerance (s), epsilon.
# Mirrors Gcra.take; '%.17g' keeps the TAT exact (tostring would round epoch seconds to 0.1 ms).
_TAKE = """
local now = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local ahead = tat - now
if ahead > tonumber(ARGV[3]) + tonumber(ARGV[4]) then
  return {0, string.format('%.17g', ahead - tonumber(ARGV[3]))}
end
local next_tat = tat + tonumber(ARGV[2])
redis.call('SET', KEYS[1], string.format('%.17g', next_tat), 'PX', math.ceil((next_tat - now) * 1000))
return {1, '0'}
"""

_EPSILON = 1e-9


class RedisStepRate:
    """StepRate on Redis, shared by every instance using the same Redis and prefix."""

    def __init__(self, client: RedisClient, prefix: str = "otp-steps:", clock: Clock = SYSTEM_CLOCK) -> None:
        self._redis = client
        self._prefix = prefix
        self._clock = clock
        self._take = primary_script(client, _TAKE)

    def key(self, caller: str) -> str:
        """The Redis key of `caller`'s TAT (bounded length whatever the caller's name)."""
        return f"{self._prefix}rate:{{{hashlib.sha256(caller.encode()).hexdigest()[:32]}}}"

    @store_errors
    async def take(self, caller: str, rate: float) -> RateDecision:
        """One atomic GCRA step on the shared TAT; ChallengeStoreError when Redis fails."""
        limit = Gcra.per_second(rate)
        # Once (run_script): a retried take would spend two of the caller's steps.
        (allowed, wait), _ = await run_script(
            self._redis,
            self._take,
            [self.key(caller)],
            [repr(self._clock.now()), repr(limit.interval), repr(limit.tolerance), repr(_EPSILON)],
        )
        if int(allowed) == 1:
            return RateDecision(True)
        return RateDecision(False, float(text(wait)))

    async def aclose(self) -> None:
        """Close the client's connections."""
        await self._redis.aclose()
