"""The shared challenge store on Redis: several service instances behind one load balancer.

Validate may land on another instance than Generate did, so challenges and failure counters live in Redis.
Each read-modify-write is one Lua script (atomic on the server), so two instances can never spend the same
attempt twice; keys carry a TTL, so expired challenges leave Redis by themselves.
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

import redis

from otp_step_service.steps.challenges import (
    AttemptGrant,
    AttemptVerdict,
    Challenge,
    ChallengeKey,
    ChallengeStoreError,
    Reservation,
    ReservationVerdict,
)
from otp_step_service.steps.outcomes import Channel

P = ParamSpec("P")
R = TypeVar("R")

# KEYS[1] = challenge key; ARGV[1] = now (epoch seconds). Returns {verdict, json-or-nil}.
_BEGIN_ATTEMPT = """
local raw = redis.call('GET', KEYS[1])
if not raw then return {'not_found', false} end
local c = cjson.decode(raw)
if c.pending then return {'not_found', false} end
if c.expires_at <= tonumber(ARGV[1]) then redis.call('DEL', KEYS[1]); return {'expired', false} end
if c.attempts_used >= c.max_attempts then redis.call('DEL', KEYS[1]); return {'exhausted', false} end
c.attempts_used = c.attempts_used + 1
local encoded = cjson.encode(c)
redis.call('SET', KEYS[1], encoded, 'KEEPTTL')
return {'granted', encoded}
"""

# KEYS[1] = challenge key; ARGV[1] = the challenge's nonce (refund and discard touch only that challenge).
_REFUND = """
local raw = redis.call('GET', KEYS[1])
if not raw then return 0 end
local c = cjson.decode(raw)
if c.nonce == ARGV[1] and c.attempts_used > 0 then
  c.attempts_used = c.attempts_used - 1
  redis.call('SET', KEYS[1], cjson.encode(c), 'KEEPTTL')
end
return 1
"""

# KEYS[1] = failure counter; ARGV[1] = window seconds. The window starts with the first failure.
_COUNT_FAILURE = """
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('EXPIRE', KEYS[1], tonumber(ARGV[1])) end
return n
"""


_DISCARD = """
local raw = redis.call('GET', KEYS[1])
if raw and cjson.decode(raw).nonce == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""

# KEYS[1] = challenge key; ARGV = placeholder json, now, execution id, cooldown seconds, TTL in ms.
_RESERVE = """
local raw = redis.call('GET', KEYS[1])
local now = tonumber(ARGV[2])
if raw then
  local c = cjson.decode(raw)
  if c.expires_at > now then
    local same = ARGV[3] ~= '' and c.step_execution_id == ARGV[3]
    if same and not c.pending then return {'replay', raw} end
    local wait = c.sent_at + tonumber(ARGV[4]) - now
    if same or wait > 0 then return {'too_soon', tostring(math.max(wait, 1))} end
  end
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[5])
return {'reserved', false}
"""

_FORGIVE_FAILURE = """
local n = tonumber(redis.call('GET', KEYS[1]) or '0')
if n > 0 then redis.call('DECR', KEYS[1]) end
return n
"""


def _encode(challenge: Challenge) -> str:
    return json.dumps(
        {
            "username": challenge.username,
            "session": challenge.session,
            "channel": challenge.channel.value,
            "masked_destination": challenge.masked_destination,
            "expires_at": challenge.expires_at,
            "max_attempts": challenge.max_attempts,
            "attempts_used": challenge.attempts_used,
            "step_execution_id": challenge.step_execution_id,
            "sent_at": challenge.sent_at,
            "nonce": challenge.nonce,
            "pending": challenge.pending,
            "decoy": challenge.decoy,
        }
    )


def _decode(raw: str | bytes) -> Challenge:
    data: dict[str, Any] = json.loads(raw)
    return Challenge(
        username=data["username"],
        session=data["session"],
        channel=Channel(data["channel"]),
        masked_destination=data["masked_destination"],
        expires_at=float(data["expires_at"]),
        max_attempts=int(data["max_attempts"]),
        attempts_used=int(data["attempts_used"]),
        step_execution_id=data.get("step_execution_id", ""),
        sent_at=float(data.get("sent_at", 0.0)),
        nonce=str(data.get("nonce", "")),
        pending=bool(data.get("pending", False)),
        decoy=bool(data.get("decoy", False)),
    )


def _store_errors(method: Callable[P, R]) -> Callable[P, R]:
    """Redis failures leave as ChallengeStoreError: a retryable step failure, not a crashed RPC."""

    @functools.wraps(method)
    def translated(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return method(*args, **kwargs)
        except redis.RedisError as exc:
            raise ChallengeStoreError(type(exc).__name__) from exc

    return translated


class RedisChallengeStore:
    """ChallengeStore on Redis. Keys: `<prefix>challenge:<sha256>` and `<prefix>failures:<sha256>`."""

    def __init__(
        self, client: redis.Redis, prefix: str = "otp-steps:", clock: Callable[[], float] = time.time
    ) -> None:
        self._redis = client
        self._prefix = prefix
        self._clock = clock
        self._begin = client.register_script(_BEGIN_ATTEMPT)
        self._refund = client.register_script(_REFUND)
        self._discard = client.register_script(_DISCARD)
        self._reserve = client.register_script(_RESERVE)
        self._count = client.register_script(_COUNT_FAILURE)
        self._forgive = client.register_script(_FORGIVE_FAILURE)

    @classmethod
    def from_url(cls, url: str) -> RedisChallengeStore:
        """A store for `redis://host:port/db` (or rediss://, unix://), with short socket timeouts."""
        client = redis.Redis.from_url(
            url, socket_timeout=2.0, socket_connect_timeout=2.0, health_check_interval=30
        )
        return cls(client)

    def _key(self, key: ChallengeKey) -> str:
        return self._prefix + key.storage_key()

    @_store_errors
    def save(self, key: ChallengeKey, challenge: Challenge) -> None:
        """SET with a TTL ending at the challenge's expiry."""
        ttl_ms = max(1, int((challenge.forget_at - self._clock()) * 1000))
        self._redis.set(self._key(key), _encode(challenge), px=ttl_ms)

    @_store_errors
    def load(self, key: ChallengeKey) -> Challenge | None:
        """The live challenge, if any."""
        raw = self._redis.get(self._key(key))
        if raw is None:
            return None
        challenge = _decode(raw)
        return challenge if challenge.expires_at > self._clock() and not challenge.pending else None

    @_store_errors
    def reserve(
        self, key: ChallengeKey, placeholder: Challenge, now: float, cooldown_seconds: float
    ) -> Reservation:
        """Decide and hold the key in one atomic script."""
        ttl_ms = max(1, int((placeholder.forget_at - now) * 1000))
        verdict, value = self._reserve(
            keys=[self._key(key)],
            args=[_encode(placeholder), now, placeholder.step_execution_id, cooldown_seconds, ttl_ms],
        )
        name = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        if name == "replay":
            return Reservation(ReservationVerdict.REPLAY, _decode(value))
        if name == "too_soon":
            return Reservation(ReservationVerdict.TOO_SOON, wait_seconds=float(value))
        return Reservation(ReservationVerdict.RESERVED)

    @_store_errors
    def begin_attempt(self, key: ChallengeKey, now: float) -> AttemptGrant:
        """Spend one attempt in one atomic script."""
        verdict, raw = self._begin(keys=[self._key(key)], args=[now])
        name = verdict.decode() if isinstance(verdict, bytes) else str(verdict)
        if name == "granted":
            return AttemptGrant(AttemptVerdict.GRANTED, _decode(raw))
        return AttemptGrant(AttemptVerdict(name))

    @_store_errors
    def refund_attempt(self, key: ChallengeKey, nonce: str) -> None:
        """Give one attempt back to the challenge `nonce`."""
        self._refund(keys=[self._key(key)], args=[nonce])

    @_store_errors
    def discard(self, key: ChallengeKey, nonce: str) -> None:
        """DEL the challenge `nonce`."""
        self._discard(keys=[self._key(key)], args=[nonce])

    @_store_errors
    def count_event(self, subject: str, window_seconds: int) -> int:
        """INCR the identifier's failure counter within its window."""
        return int(self._count(keys=[self._prefix + subject], args=[window_seconds]))

    @_store_errors
    def uncount_event(self, subject: str) -> None:
        """DECR the counter if it is above zero."""
        self._forgive(keys=[self._prefix + subject])

    @_store_errors
    def events(self, subject: str) -> int:
        """The counter's value (0 when absent or expired)."""
        raw = self._redis.get(self._prefix + subject)
        return int(raw) if raw is not None else 0
